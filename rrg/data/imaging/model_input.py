"""The square the vision encoder takes, from an X-ray: the one way every image becomes a model input.

Training (through the image cache), `rrg generate`, `rrg-eval` and the server all decode shrunk to
`decode_side(size)` (`decode_image`'s `longest_side`), fit the image to a square of the model's size
and keep it at 8 bits (`to_model_input`), so a study gives the model the same pixels whichever way it
arrives: a cached training image, a file, or an upload.
"""

import numpy as np
from PIL import Image

from rrg.data.imaging.decode import DEFAULT_LIMITS, DecodedImage, decode_image
from rrg.data.imaging.limits import ImageLimits

# Uploads are decoded shrunk to a long side of at least this (or the model's input size, if larger) and
# under twice it: enough for the model and for a person checking the decoding, at a fraction of a full
# decode's memory.
VIEW_SIDE = 512


def decode_side(size: int) -> int:
    """The `longest_side` to decode at for a model whose input is `size` pixels a side."""
    return max(size, VIEW_SIDE)


def fit_to_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize so the long side is ``size`` (aspect kept, anti-aliased), then zero-pad to (size, size).

    Padding is split evenly (the odd pixel goes bottom/right), so the anatomy stays centred.
    """
    if pixels.ndim != 2:
        raise ValueError(f"fit_to_square expects a 2-D grayscale array, got shape {pixels.shape}")
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    height, width = pixels.shape
    if height < 1 or width < 1:
        raise ValueError(f"fit_to_square expects a non-empty image, got shape {pixels.shape}")
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))

    resized = np.ascontiguousarray(pixels, dtype=np.float32)
    if (new_height, new_width) != (height, width):
        # Pillow's float "F" mode resampling widens the filter when shrinking, so a 3000-pixel
        # radiograph brought to 224 is area-averaged rather than aliased (rib edges, lines, tubes).
        resampled = Image.fromarray(resized).resize((new_width, new_height), Image.Resampling.BILINEAR)
        resized = np.asarray(resampled, dtype=np.float32)

    square = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    square[top : top + new_height, left : left + new_width] = resized
    return square


def to_model_input(
    data_or_decoded: bytes | bytearray | memoryview | DecodedImage | np.ndarray,
    size: int = 224,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Decode (when given bytes), fit to a (size, size) float32 square, and keep 8 bits: what the model sees.

    Bytes are decoded with ``longest_side=decode_side(size)``, never as a full-size float array. The
    values are multiples of 1/255, as the image cache stores them (uint8), so a cached image and the same
    file decoded here are the same input.

    Args:
        data_or_decoded: image bytes, a DecodedImage, or an already decoded (H, W) array.
    """
    if isinstance(data_or_decoded, DecodedImage):
        pixels = data_or_decoded.pixels
    elif isinstance(data_or_decoded, bytes | bytearray | memoryview):
        pixels = decode_image(data_or_decoded, limits, longest_side=decode_side(size)).pixels
    elif isinstance(data_or_decoded, np.ndarray):
        pixels = data_or_decoded
    else:
        raise TypeError(
            f"to_model_input takes image bytes, a DecodedImage or an array, not {type(data_or_decoded).__name__}"
        )
    return to_8_bits(fit_to_square(pixels, size)).astype(np.float32) / 255.0


def to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] as uint8 (rounded to the nearest level)."""
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
