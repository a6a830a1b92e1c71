"""Size limits for uploaded images, checked before any pixel is decoded."""

from dataclasses import dataclass

from rrg.imaging.errors import ImageTooLargeError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """How big an upload may be: in bytes, in pixels, and along either side."""

    max_bytes: int = 32 * MIB
    max_pixels: int = 50_000_000
    max_side: int = 16384

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
