"""X-ray decoding: PNG, JPEG or DICOM bytes in, a grayscale float32 array out, or a typed error.

Every image that enters rrg (CLI files, API uploads, Gradio uploads) goes through here, so the
checks on untrusted input (size limits before decoding, truncation, unsupported encodings) live
in one place.
"""

from rrg.data.imaging.decode import DecodedImage, ImageFormat, decode_image, load_image, sniff_format
from rrg.data.imaging.errors import (
    DicomNoPixelDataError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
    UnsupportedPhotometricError,
)
from rrg.data.imaging.limits import ImageLimits
from rrg.data.imaging.model_input import VIEW_SIDE, decode_side, fit_to_square, to_8_bits, to_model_input

__all__ = [
    "VIEW_SIDE",
    "DecodedImage",
    "DicomNoPixelDataError",
    "EmptyImageError",
    "ImageError",
    "ImageFormat",
    "ImageLimits",
    "ImageTooLargeError",
    "NotAnImageError",
    "TruncatedImageError",
    "UnsupportedDicomError",
    "UnsupportedPhotometricError",
    "decode_image",
    "decode_side",
    "fit_to_square",
    "load_image",
    "sniff_format",
    "to_8_bits",
    "to_model_input",
]
