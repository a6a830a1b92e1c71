"""Where a disease clue looked: its attention over the patch grid, laid over the X-ray."""

from __future__ import annotations

import numpy as np
from PIL import Image

from rrg.data.imaging import fit_to_square


def clue_overlay(pixels: np.ndarray, attention: list[list[float]] | np.ndarray, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8: the image as the model saw it (fitted to a square), warm where the
    clue's attention is high.

    pixels: the decoded grayscale image in [0, 1]; attention: (grid, grid) over the model's patches.
    """
    grid = np.asarray(attention, dtype=np.float32)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or not np.isfinite(grid).all():
        raise ValueError(f"attention must be a finite square grid, got shape {grid.shape}")
    image = fit_to_square(np.clip(pixels, 0.0, 1.0), size)  # the same framing as the model input
    # scaled to its own peak: the map shows where, not how much (the clue's weight says that)
    heat = grid / grid.max() if grid.max() > 0 else grid
    heat = np.asarray(Image.fromarray(heat).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1)  # red to yellow
    alpha = 0.6 * heat[..., None]
    blended = (1.0 - alpha) * image[..., None] + alpha * colour
    return (np.clip(blended, 0.0, 1.0) * 255).round().astype(np.uint8)
