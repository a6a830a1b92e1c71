"""Bytes in, grayscale X-ray out: format sniffing and the single entry point for every upload."""

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rrg.data.imaging.dicom import decode_dicom, has_dicom_prefix, may_be_raw_dicom
from rrg.data.imaging.errors import EmptyImageError, NotAnImageError, TruncatedImageError
from rrg.data.imaging.limits import ImageLimits, check_byte_size
from rrg.data.imaging.raster import decode_raster
from rrg.data.imaging.reduce import check_longest_side

ImageFormat = Literal["png", "jpeg", "dicom"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"

DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True, eq=False, slots=True)
class DecodedImage:
    """A decoded X-ray as a radiologist would see it; deliberately no patient metadata.

    ``pixels`` is float32 (H, W) in [0, 1], 0 black and 1 white (bone bright), at full size or
    shrunk (decode_image's ``longest_side``). ``original_size`` is the source's (H, W) after EXIF
    orientation, whatever size ``pixels`` are. ``bits_stored`` is the source's bits per sample.
    """

    pixels: np.ndarray
    source_format: ImageFormat
    original_size: tuple[int, int]
    bits_stored: int


def sniff_format(data: bytes) -> ImageFormat | None:
    """The image format from magic bytes alone (file names lie), or None if unrecognised."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if has_dicom_prefix(data) or may_be_raw_dicom(data):
        # A preamble-less candidate is only a guess: decode_dicom confirms or refuses it.
        return "dicom"
    return None


def decode_image(
    data: bytes | bytearray | memoryview, limits: ImageLimits = DEFAULT_LIMITS, *, longest_side: int | None = None
) -> DecodedImage:
    """Decode PNG, JPEG or DICOM bytes into a DecodedImage, or raise an ImageError subclass.

    Args:
        longest_side: the long side the caller will resize to (e.g. the model's input size). When
            the source's long side is larger, ``pixels`` come back shrunk by an integer factor to a
            long side in [longest_side, 2 * longest_side), decoded small (JPEG DCT scaling, grey
            before any float array, DICOM block means of the stored values) so no full-size float
            or RGB array is ever made; finish with fit_to_square. ``original_size`` stays the
            source's. None (the default) decodes every pixel.
    """
    check_longest_side(longest_side)
    data = bytes(data)
    if not data:
        raise EmptyImageError()
    check_byte_size(len(data), limits)
    image_format = sniff_format(data)
    if image_format is None:
        if len(data) < len(PNG_SIGNATURE) and PNG_SIGNATURE.startswith(data):
            raise TruncatedImageError("The PNG file is truncated (it ends inside its signature).")
        raise NotAnImageError()
    if image_format == "dicom":
        pixels, bits_stored, original_size = decode_dicom(data, limits, longest_side)
    else:
        pixels, bits_stored, original_size = decode_raster(data, image_format, limits, longest_side)
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        source_format=image_format,
        original_size=original_size,
        bits_stored=bits_stored,
    )


def load_image(
    path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS, *, longest_side: int | None = None
) -> DecodedImage:
    """Read and decode an image file; the byte limit is checked before the file is read.

    Args:
        longest_side: as for decode_image.
    """
    with open(path, "rb") as handle:
        check_byte_size(os.fstat(handle.fileno()).st_size, limits)
        # Read one byte past the limit: a pipe or a growing file reports no trustworthy size.
        data = handle.read(limits.max_bytes + 1)
    return decode_image(data, limits, longest_side=longest_side)
