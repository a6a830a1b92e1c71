"""PNG and JPEG decoding through Pillow, to grayscale float32 in [0, 1]."""

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

from rrg.imaging.errors import ImageTooLargeError, TruncatedImageError
from rrg.imaging.limits import ImageLimits, check_dimensions

# What Pillow raises on damaged input, besides its own bomb error: plugins report a broken
# stream as any of these depending on where the damage is.
_DAMAGED_INPUT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})

# ITU-R BT.601 luma, the weights Pillow's own "L" conversion uses.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def decode_raster(data: bytes, image_format: str, limits: ImageLimits) -> tuple[np.ndarray, int]:
    """Decode PNG or JPEG bytes to (float32 (H, W) in [0, 1], bits per sample).

    Args:
        image_format: "png" or "jpeg", as sniffed from the magic bytes; Pillow is told to use only
            that plugin, so the bytes are never reinterpreted as some other format.
    """
    label = image_format.upper()
    try:
        with Image.open(io.BytesIO(data), formats=[label]) as image:
            # The header is parsed but no pixel decoded yet: refuse bombs here.
            width, height = image.size
            check_dimensions(height, width, limits)
            # Pillow raises on a short stream as long as ImageFile.LOAD_TRUNCATED_IMAGES is False
            # (its default, left alone here); with it True, a cut file would come back grey-padded.
            image.load()
            image = _apply_exif_orientation(image)
            return _to_grayscale(image)
    except Image.DecompressionBombError as exc:
        # Only reachable when ImageLimits allow more than Pillow's own bomb threshold.
        raise ImageTooLargeError(
            f"The {label} header declares more pixels than Pillow will decode safely."
        ) from exc
    except ImageTooLargeError:
        raise
    except _DAMAGED_INPUT_ERRORS as exc:
        raise TruncatedImageError(f"The {label} file is truncated or corrupt.") from exc


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says, so anatomy is upright as the modality sent it."""
    try:
        return ImageOps.exif_transpose(image)
    except _DAMAGED_INPUT_ERRORS:
        # A malformed EXIF block says nothing reliable about orientation; the pixels are still good.
        return image


def _to_grayscale(image: Image.Image) -> tuple[np.ndarray, int]:
    """Pillow image of any PNG/JPEG mode -> (float32 (H, W) in [0, 1], bits per sample)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale PNG: the PNG spec scales samples to the full 16-bit range (sBIT only
        # records how many bits were significant), so 65535 is white.
        samples = np.asarray(image).astype(np.float32)
        return np.clip(samples / 65535.0, 0.0, 1.0), 16
    if image.mode == "L":
        return np.asarray(image).astype(np.float32) / 255.0, 8
    if image.mode == "1":
        return np.asarray(image.convert("L")).astype(np.float32) / 255.0, 1
    # RGB, RGBA, LA, P, PA, CMYK, YCbCr: Pillow resolves palettes and CMYK (including Adobe's
    # inverted CMYK JPEGs) into RGB and drops alpha; the luminance is what a grey display shows.
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)  # (H, W, 3)
    return (rgb @ _LUMA_WEIGHTS) / 255.0, 8
