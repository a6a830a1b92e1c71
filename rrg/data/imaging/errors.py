"""Typed errors for X-ray decoding, one per way an upload can be wrong.

Each error has a short machine ``code`` (the API puts it in its error object) and a message a
radiologist or engineer can act on. Messages carry sizes and format names only: never pixel
values, file contents, file names or DICOM tag values (a file name or a tag may hold a patient's
name).
"""

from typing import ClassVar


class ImageError(ValueError):
    """An uploaded image could not be turned into pixels."""

    code: ClassVar[str] = "invalid_image"
    default_message: ClassVar[str] = "The image could not be decoded."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        """The human-readable message (the same text as ``str(error)``)."""
        return str(self)


class EmptyImageError(ImageError):
    """The upload has zero bytes."""

    code = "empty_image"
    default_message = "The image is empty (0 bytes)."


class NotAnImageError(ImageError):
    """The bytes are not PNG, JPEG or DICOM, whatever the file is called."""

    code = "not_an_image"
    default_message = "The data is not a PNG, JPEG or DICOM image."


class TruncatedImageError(ImageError):
    """A PNG, JPEG or DICOM file that is cut short or corrupt."""

    code = "truncated_image"
    default_message = "The image file is truncated or corrupt."


class ImageTooLargeError(ImageError):
    """Too many bytes, or a header declaring more pixels than the limits allow."""

    code = "image_too_large"
    default_message = "The image is larger than the configured limits."


class DicomNoPixelDataError(ImageError):
    """A DICOM dataset without an image in it (e.g. a structured report)."""

    code = "dicom_no_pixel_data"
    default_message = "The DICOM file contains no pixel data."


class UnsupportedDicomError(ImageError):
    """A DICOM image encoded in a way this installation cannot decode."""

    code = "unsupported_dicom"
    default_message = "The DICOM image uses an encoding that cannot be decoded here."


class UnsupportedPhotometricError(UnsupportedDicomError):
    """A DICOM photometric interpretation other than MONOCHROME1, MONOCHROME2 or RGB."""

    code = "unsupported_photometric"
    default_message = (
        "The DICOM photometric interpretation is not supported (supported: MONOCHROME1, MONOCHROME2, RGB)."
    )
