"""Drawing primitives in the patient frame: strokes, soft disks, smoothing, low-frequency texture.

Every length is relative to the image (a fraction of its side) so a phantom looks the same at
64 or 1024 pixels; `Anatomy.to_pixels` places patient-frame points on the rotated image.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from rrg.demo.phantom.anatomy import Anatomy


def stroke(
    anatomy: Anatomy, paths: Iterable[np.ndarray] | np.ndarray, width: float, value: float = 1.0
) -> np.ndarray:
    """Polylines (each (N, 2) patient-frame points) drawn `width` wide (relative) into a float image."""
    canvas = Image.new("F", (anatomy.size, anatomy.size), 0.0)
    pen = ImageDraw.Draw(canvas)
    width_px = max(1, round(anatomy.pixels(width)))
    if isinstance(paths, np.ndarray):  # (n, points, 2): transform all paths at once
        pixel_paths = anatomy.to_pixels(paths).tolist()
    else:
        pixel_paths = [anatomy.to_pixels(path).tolist() for path in paths]
    for path in pixel_paths:
        pen.line(
            [tuple(p) for p in path],
            fill=float(value),
            width=width_px,
            joint="curve" if len(path) > 2 else None,
        )
    return np.asarray(canvas, dtype=np.float32)


def smooth(anatomy: Anatomy, layer: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by a relative sigma (soft edges that look the same at every size)."""
    sigma_px = anatomy.pixels(sigma)
    layer = layer.astype(np.float32, copy=False)
    return ndimage.gaussian_filter(layer, sigma_px, mode="nearest") if sigma_px >= 0.3 else layer


def soft_disk(
    anatomy: Anatomy, centre: tuple[float, float], radius: float, edge: float = 0.003
) -> np.ndarray:
    """A filled disk in the patient frame with an edge `edge` wide (relative), values 0..1."""
    distance = np.hypot(anatomy.u - centre[0], anatomy.v - centre[1])
    return np.clip((radius - distance) / max(edge, 0.5 / anatomy.size) + 0.5, 0.0, 1.0)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth S between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def texture(anatomy: Anatomy, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Smooth random field (zero mean, unit std) with blobs about `scale` wide, size-independent.

    Made on a fixed 64x64 grid and zoomed, so the pattern is the same at every image size.
    """
    grid = 64
    field = ndimage.gaussian_filter(
        rng.standard_normal((grid, grid)).astype(np.float32), scale * grid, mode="wrap"
    )
    field = (field - field.mean()) / (field.std() + 1e-6)
    coords = (np.stack([anatomy.v, anatomy.u]) * grid - 0.5).reshape(2, -1)
    return ndimage.map_coordinates(field, coords, order=1, mode="wrap").reshape(anatomy.size, anatomy.size)
