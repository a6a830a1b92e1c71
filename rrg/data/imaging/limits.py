"""Size limits for uploaded images, checked before any pixel is decoded."""

from dataclasses import dataclass

from rrg.data.imaging.errors import ImageTooLargeError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """How big an upload may be: in bytes, in pixels, and along either side.

    The defaults fit chest radiographs: the largest chest detectors are 43 cm at about 100 um, some
    4,300 pixels a side (about 18.5 Mpx), so 25 Mpx and 8,192 pixels a side leave headroom, and
    40 MiB holds the largest of them as an uncompressed 16-bit DICOM (4,300^2 x 2 bytes = 35 MiB).
    Anything larger is not a chest radiograph and is refused from its header, before a pixel is
    decoded, because decoding it would cost hundreds of MiB a request for nothing.
    """

    max_bytes: int = 40 * MIB
    max_pixels: int = 25_000_000
    max_side: int = 8192

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageLimits.{name} must be a positive integer")


def check_byte_size(n_bytes: int, limits: ImageLimits) -> None:
    """Raise ImageTooLargeError if an upload of ``n_bytes`` is over the byte limit."""
    if n_bytes > limits.max_bytes:
        raise ImageTooLargeError(f"The image is {n_bytes:,} bytes; the limit is {limits.max_bytes:,} bytes.")


def check_dimensions(height: int, width: int, limits: ImageLimits) -> None:
    """Raise ImageTooLargeError if a header declares more pixels than the limits allow.

    Called with the header's numbers before decoding, so a small file that declares a huge
    image (a decompression bomb) is refused without allocating its pixels.
    """
    if height > limits.max_side or width > limits.max_side or height * width > limits.max_pixels:
        raise ImageTooLargeError(
            f"The image is {width:,} x {height:,} pixels; the limits are {limits.max_side:,} pixels "
            f"per side and {limits.max_pixels:,} pixels in all."
        )
