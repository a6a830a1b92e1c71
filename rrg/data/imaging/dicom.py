"""DICOM decoding through pydicom, to a display-ready grayscale float32 in [0, 1].

The display pipeline follows DICOM PS3.3 C.11 in order: stored values -> Modality LUT (rescale
slope/intercept or a Modality LUT Sequence) -> VOI (a VOI LUT Sequence, else Window
Center/Width) -> MONOCHROME1 inversion, so bone is bright whatever the modality wrote.

Patient data: only Image Pixel, Modality LUT and VOI LUT attributes (and the transfer syntax)
are ever read from the dataset. pydicom's own exception texts are not passed on (they are
dropped with ``from None``), because a parser message may quote an element's value.
"""

import io
import struct
import zlib

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from scipy.special import expit

from rrg.data.imaging.errors import (
    DicomNoPixelDataError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
    UnsupportedPhotometricError,
)
from rrg.data.imaging.limits import ImageLimits, check_dimensions
from rrg.data.imaging.reduce import block_mean, reduction_factor

DICOM_PREFIX_OFFSET = 128
DICOM_PREFIX = b"DICM"

# A DICOM stream without the 128-byte preamble starts with its first element's tag: group 0002
# (file meta) or 0008 (identifying attributes), little endian. Anything else is not tried.
_RAW_DATASET_STARTS = (b"\x02\x00", b"\x08\x00")

_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")

# The Value Length of an element whose end is marked by a delimiter (encapsulated PixelData).
_UNDEFINED_LENGTH = 0xFFFFFFFF

# Values the standard defines (PS3.3 C.7.6.3.1.2); only these are ever echoed in a message, since
# the element could hold any text.
_KNOWN_PHOTOMETRICS = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "HSV",
        "ARGB",
        "CMYK",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "XYB",
    }
)

# What pydicom raises on malformed input: its parser, value converters and pixel decoders report
# damage through all of these, depending on which element or codec meets it. MemoryError is not
# among them on purpose.
_DAMAGED_DICOM_ERRORS = (
    InvalidDicomError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    EOFError,
    OSError,
    struct.error,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
)

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

# Fraction of pixels clipped at each end when an image has no VOI: burned-in labels, collimator
# edges and dead pixels would otherwise stretch the range and leave the lungs a flat grey.
_AUTO_WINDOW_PERCENTILES = (0.5, 99.5)


def has_dicom_prefix(data: bytes) -> bool:
    """True when the bytes carry the DICOM Part 10 "DICM" marker after the preamble."""
    return data[DICOM_PREFIX_OFFSET : DICOM_PREFIX_OFFSET + 4] == DICOM_PREFIX


def may_be_raw_dicom(data: bytes) -> bool:
    """True when the bytes could be a DICOM dataset written without the preamble."""
    return data[:2] in _RAW_DATASET_STARTS


def decode_dicom(
    data: bytes, limits: ImageLimits, longest_side: int | None = None
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Decode DICOM bytes to (float32 (H, W) in [0, 1], Bits Stored, source (H, W)), first frame only.

    Args:
        longest_side: block-average the stored values by an integer factor to a long side in
            [longest_side, 2 * longest_side) before the display pipeline (see decode_image); None
            keeps every pixel.
    """
    dataset = _read_dataset(data)
    if "PixelData" not in dataset:
        if "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset:
            raise UnsupportedDicomError(
                "DICOM float pixel data is not supported; expected integer PixelData."
            )
        raise DicomNoPixelDataError(
            "The DICOM file contains no pixel data (it may be a report or other non-image object, "
            "or the file was cut short before the image)."
        )
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        samples_per_pixel = int(dataset.get("SamplesPerPixel", 1))
        bits_allocated = int(dataset.BitsAllocated)
        bits_stored = int(dataset.get("BitsStored") or bits_allocated)
        photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    except _DAMAGED_DICOM_ERRORS:
        raise TruncatedImageError(
            "The DICOM image pixel description (Rows, Columns, Bits Allocated) is missing or malformed."
        ) from None
    if rows < 1 or columns < 1:
        raise TruncatedImageError("The DICOM image declares zero rows or columns.")
    check_dimensions(rows, columns, limits)
    _check_photometric(photometric, samples_per_pixel)
    transfer_syntax = _check_decoder_available(dataset)
    frame_bytes = (rows * columns * samples_per_pixel * bits_allocated + 7) // 8
    _check_pixel_data_length(dataset, transfer_syntax.is_encapsulated, frame_bytes)

    stored = _first_frame(dataset)
    factor = reduction_factor(rows, columns, longest_side)
    if factor > 1:
        # Averaged in the stored values' own dtype, before any float array of the frame: rescale
        # slope/intercept and the luma are linear, so they commute with the mean; the VOI then
        # maps the means, as it would the values of a coarser detector.
        stored = block_mean(stored, factor)
    if photometric == "RGB":
        luminance = stored[..., :3].astype(np.float64) @ _LUMA_WEIGHTS
        display = luminance / float(2**bits_stored - 1)
    else:
        display = _grayscale_display(stored, dataset)
        if photometric == "MONOCHROME1":
            # MONOCHROME1: the minimum value is white; invert after the VOI, as PS3.3 C.7.6.3.1.2 says.
            display = 1.0 - display
    display = np.clip(np.nan_to_num(display, nan=0.0), 0.0, 1.0)
    return np.ascontiguousarray(display, dtype=np.float32), bits_stored, (rows, columns)


def _read_dataset(data: bytes) -> Dataset:
    """Parse the bytes as a DICOM dataset; without the DICM marker, only a convincing parse counts."""
    with_prefix = has_dicom_prefix(data)
    try:
        # force=True parses almost any bytes into a few nonsense elements, hence the check below.
        dataset = pydicom.dcmread(io.BytesIO(data), force=not with_prefix)
    except _DAMAGED_DICOM_ERRORS:
        if with_prefix:
            raise TruncatedImageError("The DICOM file is truncated or corrupt.") from None
        raise NotAnImageError() from None
    if not with_prefix and not any(keyword in dataset for keyword in ("PixelData", "Rows", "SOPClassUID")):
        raise NotAnImageError()
    return dataset


def _check_photometric(photometric: str, samples_per_pixel: int) -> None:
    """Refuse colour models this pipeline does not turn into a radiograph's grey levels."""
    if photometric not in (*_GRAYSCALE, "RGB"):
        shown = f"'{photometric}'" if photometric in _KNOWN_PHOTOMETRICS else "an unrecognised value"
        raise UnsupportedPhotometricError(
            f"DICOM photometric interpretation {shown} is not supported "
            "(supported: MONOCHROME1, MONOCHROME2, RGB)."
        )
    expected_samples = 3 if photometric == "RGB" else 1
    if samples_per_pixel != expected_samples:
        raise TruncatedImageError(
            f"The DICOM image declares {samples_per_pixel} samples per pixel, "
            f"which does not match its photometric interpretation."
        )


def _check_decoder_available(dataset: Dataset) -> UID:
    """The transfer syntax; refuse a compressed one that pydicom cannot decode with what is installed."""
    transfer_syntax = _transfer_syntax(dataset)
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise UnsupportedDicomError(
            f"The DICOM transfer syntax {_syntax_name(transfer_syntax)} cannot be decoded by pydicom."
        ) from None
    if not decoder.is_available:
        # pydicom's dependency notes ("pylibjpeg - requires ...") are fixed text, safe to show.
        needs = "; ".join(decoder.missing_dependencies)
        raise UnsupportedDicomError(
            f"The DICOM transfer syntax {_syntax_name(transfer_syntax)} needs a decoder that is not "
            f"installed ({needs})."
        )
    return transfer_syntax


def _check_pixel_data_length(dataset: Dataset, encapsulated: bool, frame_bytes: int) -> None:
    """Refuse PixelData that is cut short: shorter than its element declares, or (uncompressed)
    shorter than one frame of Rows x Columns x Samples per Pixel x Bits Allocated.

    pydicom reads what is there and carries on, so a file cut short, or forged (a 2 GB length in
    front of one frame's bytes), would otherwise decode from whatever bytes happen to be present.
    Called before anything converts the element: only the raw element keeps its declared length.
    """
    element = dataset.get_item("PixelData")
    try:
        present = len(element.value) if element.value is not None else 0
    except TypeError:
        raise TruncatedImageError("The DICOM pixel data is malformed.") from None
    declared = getattr(element, "length", None)
    if declared is not None and declared != _UNDEFINED_LENGTH and declared > present:
        raise TruncatedImageError(
            f"The DICOM pixel data is truncated: its element declares {declared:,} bytes, the file "
            f"holds {present:,}."
        )
    if not encapsulated and present < frame_bytes:
        raise TruncatedImageError(
            f"The DICOM pixel data is truncated: one frame needs {frame_bytes:,} bytes, the file "
            f"holds {present:,}."
        )


def _transfer_syntax(dataset: Dataset) -> UID:
    """The dataset's transfer syntax, inferred from how it parsed when the file meta has none."""
    file_meta = getattr(dataset, "file_meta", None)
    declared = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if declared:
        return UID(declared)
    implicit_vr, little_endian = dataset.original_encoding
    if implicit_vr:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little_endian is not False else ExplicitVRBigEndian
    # pydicom's pixel decoding reads the transfer syntax from the file meta.
    if file_meta is None:
        dataset.file_meta = file_meta = FileMetaDataset()
    file_meta.TransferSyntaxUID = syntax
    return syntax


def _syntax_name(transfer_syntax: UID) -> str:
    """A transfer syntax's registered name, or its UID (UIDs are digits and dots, never patient data)."""
    if transfer_syntax.is_valid and transfer_syntax.name != str(transfer_syntax):
        return f"'{transfer_syntax.name}'"
    return f"'{transfer_syntax}'" if transfer_syntax.is_valid else "(malformed UID)"


def _first_frame(dataset: Dataset) -> np.ndarray:
    """Decode only the first frame's stored values: (H, W) or (H, W, 3)."""
    try:
        # index=0 decodes one frame, so a long multi-frame file costs one frame of memory.
        dataset.pixel_array_options(index=0)
        return dataset.pixel_array
    except _DAMAGED_DICOM_ERRORS:
        raise TruncatedImageError(
            "The DICOM pixel data is truncated or corrupt (it is shorter than Rows x Columns x "
            "Bits Allocated declare, or its compressed stream cannot be decoded)."
        ) from None


def _grayscale_display(stored: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Stored values -> Modality LUT -> VOI -> float64 in [0, 1] (MONOCHROME2 sense).

    ``stored`` may be block means (float) of the stored values; a Modality LUT Sequence is a table
    indexed by integers, so they are rounded first.
    """
    try:
        if stored.dtype.kind == "f" and dataset.get("ModalityLUTSequence"):
            stored = np.rint(stored).astype(np.int64)
        modality = apply_modality_lut(stored, dataset)  # e.g. slope * stored + intercept
        if _has_voi_lut_sequence(dataset):
            return _apply_voi_lut_sequence(modality, dataset)
        window = _first_window(dataset)
    except _DAMAGED_DICOM_ERRORS:
        raise TruncatedImageError("The DICOM Modality LUT or VOI LUT attributes are malformed.") from None
    if window is not None:
        center, width = window
        function = str(dataset.get("VOILUTFunction", "LINEAR")).strip().upper()
        return apply_window(modality.astype(np.float64), center, width, function)
    return auto_window(modality.astype(np.float64))


def _has_voi_lut_sequence(dataset: Dataset) -> bool:
    """True when the first VOI LUT Sequence item has both its descriptor and its table."""
    sequence = dataset.get("VOILUTSequence")
    return bool(sequence) and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]


def _apply_voi_lut_sequence(modality: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Map through the first VOI LUT, scaled by the range of the table itself."""
    # The LUT is indexed by integer modality values.
    indices = np.rint(modality).astype(np.int64)
    mapped = apply_voi(indices, dataset, index=0).astype(np.float64)
    # The descriptor's bit depth is unreliable in the wild (16 declared, 12 used), so the whole
    # table is pushed through the same LUT to find its real output range.
    entries, first_mapped = (
        int(dataset.VOILUTSequence[0].LUTDescriptor[0]) or 2**16,
        int(dataset.VOILUTSequence[0].LUTDescriptor[1]),
    )
    table = apply_voi(np.arange(first_mapped, first_mapped + entries, dtype=np.int64), dataset, index=0)
    low, high = float(table.min()), float(table.max())
    if high <= low:
        return auto_window(modality.astype(np.float64))
    return (mapped - low) / (high - low)


def _first_window(dataset: Dataset) -> tuple[float, float] | None:
    """The first Window Center/Width pair, or None when absent or unusable.

    An unusable window (empty, non-numeric, width <= 0) is treated as no window: the image is still
    readable with an automatic window, which serves a radiologist better than a refusal.
    """
    try:
        center = _first_value(dataset.get("WindowCenter"))
        width = _first_value(dataset.get("WindowWidth"))
    except (TypeError, ValueError):
        return None
    if center is None or width is None or not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        return None
    return center, width


def _first_value(element_value: object) -> float | None:
    """First value of a VM 1-n numeric element (several windows may be offered; the first is the default)."""
    if isinstance(element_value, MultiValue):
        element_value = element_value[0] if len(element_value) else None
    if element_value is None or element_value == "":
        return None
    return float(element_value)


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map modality values through a VOI window to [0, 1] (DICOM PS3.3 C.11.2.1.2 and C.11.2.1.3).

    Args:
        function: the VOI LUT Function: "LINEAR" (default, and used for unknown values),
            "LINEAR_EXACT" or "SIGMOID".
    """
    if function == "SIGMOID":
        return expit(4.0 * (values - center) / width)
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    # LINEAR carries the standard's half-unit offsets; width 1 is a hard threshold.
    if width <= 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def auto_window(values: np.ndarray) -> np.ndarray:
    """Stretch an image without VOI attributes to [0, 1] over its robust (0.5-99.5 %) range."""
    low, high = np.percentile(values, _AUTO_WINDOW_PERCENTILES)
    if high <= low:
        # Almost all pixels share one value: fall back to the true range, so rare detail survives.
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)
