"""PNG and JPEG decoding through Pillow, to grayscale float32 in [0, 1]."""

import io
import struct
import zlib

import numpy as np
from PIL import ExifTags, Image

from rrg.data.imaging.errors import ImageTooLargeError, TruncatedImageError
from rrg.data.imaging.limits import ImageLimits, check_dimensions
from rrg.data.imaging.reduce import reduced_size, reduction_factor

# What Pillow raises on damaged input, besides its own bomb error: plugins report a broken
# stream as any of these depending on where the damage is.
_DAMAGED_INPUT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})

# ITU-R BT.601 luma, the weights Pillow's own "L" conversion uses.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# EXIF Orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


def decode_raster(
    data: bytes, image_format: str, limits: ImageLimits, longest_side: int | None = None
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Decode PNG or JPEG bytes to (float32 (H, W) in [0, 1], bits per sample, source (H, W)).

    Args:
        image_format: "png" or "jpeg", as sniffed from the magic bytes; Pillow is told to use only
            that plugin, so the bytes are never reinterpreted as some other format.
        longest_side: shrink by an integer factor to a long side in [longest_side,
            2 * longest_side) while decoding (see decode_image); None decodes at full size.
    """
    label = image_format.upper()
    try:
        with Image.open(io.BytesIO(data), formats=[label]) as image:
            # The header is parsed but no pixel decoded yet: refuse bombs here.
            width, height = image.size
            check_dimensions(height, width, limits)
            bits = _bits_per_sample(image.mode)
            factor = reduction_factor(height, width, longest_side)
            # Pillow raises on a short stream as long as ImageFile.LOAD_TRUNCATED_IMAGES is False
            # (its default, left alone here); with it True, a cut file would come back grey-padded.
            if factor == 1:
                image.load()
                decoded = image
            else:
                decoded = _reduced_gray(image, factor, longest_side)
            # Read after loading: a PNG may keep its eXIf chunk after the pixels.
            orientation = _exif_orientation(image)
            pixels = _to_grayscale(_orient(decoded, orientation))
            source_size = (width, height) if orientation in _SWAPS_SIDES else (height, width)
            return pixels, bits, source_size
    except Image.DecompressionBombError as exc:
        # Only reachable when ImageLimits allow more than Pillow's own bomb threshold.
        raise ImageTooLargeError(
            f"The {label} header declares more pixels than Pillow will decode safely."
        ) from exc
    except ImageTooLargeError:
        raise
    except _DAMAGED_INPUT_ERRORS as exc:
        raise TruncatedImageError(f"The {label} file is truncated or corrupt.") from exc


def _reduced_gray(image: Image.Image, factor: int, longest_side: int) -> Image.Image:
    """Load ``image`` shrunk by about ``factor``, as a small "L" or 16-bit grey Pillow image.

    No full-size array beyond Pillow's own raster is made: a JPEG is decoded already scaled and
    grey by libjpeg; anything else is made grey in Pillow (1 byte a pixel) before it is shrunk,
    except RGB, which is shrunk first (no grey copy at all; the luma of a mean is the mean luma).
    """
    # A JPEG's DCT scaling: libjpeg decodes at 1/2, 1/4 or 1/8 and emits only the luma channel
    # (other formats ignore draft). draft() takes its scale from the smaller of width/asked and
    # height/asked, so the size asked for names exactly one scale.
    scale = next(s for s in (8, 4, 2, 1) if s <= factor)
    width, height = image.size
    image.draft("L", (max(1, width // scale), max(1, height // scale)))
    factor = reduction_factor(image.height, image.width, longest_side)
    image.load()
    if image.mode == "RGB":
        return _shrink(image, factor).convert("L")
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "L":
        return _shrink(image, factor)
    # P, PA, RGBA, LA, CMYK, 1: grey first (resizing RGBA would premultiply alpha, which the full
    # decode ignores; palette indices cannot be averaged).
    return _shrink(image.convert("L"), factor)


def _shrink(image: Image.Image, factor: int) -> Image.Image:
    """Box-average by ``factor`` (partial edge blocks kept), in the image's own mode; 16-bit stays 16-bit."""
    if factor == 1:
        return image
    height, width = reduced_size(image.height, image.width, factor)
    # BOX is the area mean; reducing_gap=None keeps it a single pass over the source.
    return image.resize((width, height), Image.Resampling.BOX, reducing_gap=None)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) Orientation, 1 when absent or unreadable."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _DAMAGED_INPUT_ERRORS:
        # A malformed EXIF block says nothing reliable about orientation; the pixels are still good.
        return 1
    return orientation if isinstance(orientation, int) and orientation in _TRANSPOSE_FOR_ORIENTATION else 1


def _orient(image: Image.Image, orientation: int) -> Image.Image:
    """Rotate/flip as the EXIF Orientation says, so anatomy is upright as the modality sent it."""
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    return image if method is None else image.transpose(method)


def _bits_per_sample(mode: str) -> int:
    """The source's bits per sample, from its Pillow mode before any conversion."""
    if mode in _SIXTEEN_BIT_MODES:
        return 16
    return 1 if mode == "1" else 8


def _to_grayscale(image: Image.Image) -> np.ndarray:
    """Pillow image of any PNG/JPEG mode -> float32 (H, W) in [0, 1]."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale PNG: the PNG spec scales samples to the full 16-bit range (sBIT only
        # records how many bits were significant), so 65535 is white.
        samples = np.asarray(image).astype(np.float32)
        return np.clip(samples / 65535.0, 0.0, 1.0)
    if image.mode == "L":
        return np.asarray(image).astype(np.float32) / 255.0
    if image.mode == "1":
        return np.asarray(image.convert("L")).astype(np.float32) / 255.0
    # RGB, RGBA, LA, P, PA, CMYK, YCbCr: Pillow resolves palettes and CMYK (including Adobe's
    # inverted CMYK JPEGs) into RGB and drops alpha; the luminance is what a grey display shows.
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)  # (H, W, 3)
    return (rgb @ _LUMA_WEIGHTS) / 255.0
