"""Integer-factor shrinking, for callers that need fewer pixels than the source holds.

A radiograph is decoded for a vision encoder that takes a few hundred pixels a side; shrinking
while decoding keeps a request's memory near the size of the source's own bytes, not ten times it.
"""

import numpy as np

# Values summed per step of block_mean: its float64 temporaries stay at 8 MiB.
_BAND_ELEMENTS = 1 << 20


def reduction_factor(height: int, width: int, longest_side: int | None) -> int:
    """The integer factor that brings the long side into [longest_side, 2 * longest_side); 1 for none.

    With L the long side, N = longest_side and f = L // N, ceil(L / f) is at least N and below 2N,
    so the final anti-aliased resize (fit_to_square) still has at least N pixels to filter from.
    """
    if longest_side is None:
        return 1
    return max(1, max(height, width) // longest_side)


def check_longest_side(longest_side: int | None) -> None:
    """Raise ValueError unless ``longest_side`` is None or a positive integer (a caller's mistake)."""
    if longest_side is None:
        return
    if isinstance(longest_side, bool) or not isinstance(longest_side, int) or longest_side < 1:
        raise ValueError(f"longest_side must be None or a positive integer, got {longest_side!r}")


def reduced_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """(H, W) after shrinking by ``factor``: partial blocks at the bottom and right edges count."""
    return -(-height // factor), -(-width // factor)


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks: (H, W[, C]) of any number type -> float64 (ceil(H/f), ceil(W/f)[, C]).

    Blocks at the bottom and right edges may be partial; each is the mean of the pixels it holds.
    The source is never copied or cast whole: numpy's reduceat casts its whole input to the sum's
    dtype first, so it is given bands of block rows of about _BAND_ELEMENTS values at a time.
    """
    height, width = values.shape[:2]
    values_per_row = values[0].size
    band_rows = factor * max(1, _BAND_ELEMENTS // (factor * values_per_row))
    column_starts = np.arange(0, width, factor)
    sums = np.empty(reduced_size(height, width, factor) + values.shape[2:], dtype=np.float64)
    for top in range(0, height, band_rows):
        band = values[top : top + band_rows]
        band_sums = np.add.reduceat(band, np.arange(0, len(band), factor), axis=0, dtype=np.float64)
        sums[top // factor : top // factor + len(band_sums)] = np.add.reduceat(band_sums, column_starts, axis=1)
    rows_per_block = np.diff(np.append(np.arange(0, height, factor), height))
    columns_per_block = np.diff(np.append(column_starts, width))
    counts = np.outer(rows_per_block, columns_per_block).reshape(sums.shape[:2] + (1,) * (values.ndim - 2))
    return sums / counts
