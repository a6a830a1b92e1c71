"""rrg.data.imaging: every upload becomes a grayscale float32 array in [0, 1] or a typed, PHI-free error."""

import dataclasses
import io
import struct
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import MPEG2MPML, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from rrg.data.imaging import (
    DecodedImage,
    DicomNoPixelDataError,
    EmptyImageError,
    ImageError,
    ImageLimits,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
    UnsupportedPhotometricError,
    decode_image,
    fit_to_square,
    load_image,
    sniff_format,
    to_model_input,
)

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN123"
DIGITAL_XRAY_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


# ---------------------------------------------------------------------------------------------
# Builders: tiny images written in memory.


def png_bytes(image: Image.Image, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_options)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **save_options)
    return buffer.getvalue()


def horizontal_ramp(height: int, width: int, dtype: type, maximum: int) -> np.ndarray:
    """Each row runs from 0 on the left to ``maximum`` on the right."""
    return np.tile(np.linspace(0, maximum, width).round().astype(dtype), (height, 1))


def dicom_bytes(
    stored: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    pixel_data: bytes | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    with_pixel_data: bool = True,
    preamble: bool = True,
    **attributes,
) -> bytes:
    """A minimal DX DICOM file whose PixelData is ``stored`` ((H, W), (F, H, W) or (H, W, 3)).

    Every file carries PatientName/PatientID, so any test can check that they never leak.
    """
    is_rgb = photometric == "RGB"
    frames = stored.shape[0] if stored.ndim == 3 and not is_rgb else 1
    rows, columns = stored.shape[-3:-1] if is_rgb else stored.shape[-2:]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_XRAY_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = DIGITAL_XRAY_SOP_CLASS
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    dataset.Rows, dataset.Columns = int(rows), int(columns)
    dataset.BitsAllocated = stored.dtype.itemsize * 8
    dataset.BitsStored = bits_stored or dataset.BitsAllocated
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    dataset.SamplesPerPixel = 3 if is_rgb else 1
    dataset.PhotometricInterpretation = photometric
    if is_rgb:
        dataset.PlanarConfiguration = 0
    if frames > 1:
        dataset.NumberOfFrames = frames
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    if with_pixel_data:
        dataset.PixelData = stored.tobytes() if pixel_data is None else pixel_data

    buffer = io.BytesIO()
    if preamble:
        dataset.save_as(buffer, enforce_file_format=True)
    else:
        # A bare dataset stream, as some PACS exports write it: no preamble, no "DICM", no meta.
        del dataset.file_meta
        dataset.save_as(buffer, implicit_vr=transfer_syntax == ImplicitVRLittleEndian, little_endian=True)
    return buffer.getvalue()


def assert_unit_grayscale(decoded: DecodedImage, shape: tuple[int, int]) -> None:
    assert decoded.pixels.shape == shape
    assert decoded.pixels.dtype == np.float32
    assert decoded.original_size == shape
    assert 0.0 <= decoded.pixels.min() and decoded.pixels.max() <= 1.0


# ---------------------------------------------------------------------------------------------
# PNG and JPEG.


def test_8bit_png_decodes_to_unit_range_with_black_zero_and_white_one():
    stored = horizontal_ramp(10, 20, np.uint8, 255)
    decoded = decode_image(png_bytes(Image.fromarray(stored)))
    assert_unit_grayscale(decoded, (10, 20))
    assert decoded.source_format == "png" and decoded.bits_stored == 8
    np.testing.assert_allclose(decoded.pixels, stored / 255.0, atol=1e-6)


def test_16bit_png_gradient_keeps_its_order_and_spans_unit_range():
    stored = horizontal_ramp(8, 300, np.uint16, 65535)
    decoded = decode_image(png_bytes(Image.fromarray(stored)))
    assert_unit_grayscale(decoded, (8, 300))
    assert decoded.bits_stored == 16
    row = decoded.pixels[0]
    assert np.all(np.diff(row) > 0), "16-bit detail must survive (no collapse to 8 bits)"
    assert row[0] == pytest.approx(0.0) and row[-1] == pytest.approx(1.0)


def test_16bit_png_is_scaled_by_the_16bit_range_not_its_own_maximum():
    stored = np.full((4, 4), 4095, dtype=np.uint16)  # 12-bit data in a 16-bit PNG is dark
    decoded = decode_image(png_bytes(Image.fromarray(stored)))
    np.testing.assert_allclose(decoded.pixels, 4095 / 65535, rtol=1e-5)


def test_rgb_png_becomes_its_luminance():
    colours = np.zeros((2, 3, 3), dtype=np.uint8)
    colours[0, 0] = (255, 0, 0)
    colours[0, 1] = (0, 255, 0)
    colours[0, 2] = (0, 0, 255)
    colours[1, :] = (128, 128, 128)
    decoded = decode_image(png_bytes(Image.fromarray(colours)))
    assert_unit_grayscale(decoded, (2, 3))
    np.testing.assert_allclose(decoded.pixels[0], [0.299, 0.587, 0.114], atol=1e-5)
    np.testing.assert_allclose(decoded.pixels[1], 128 / 255, atol=1e-5)


def test_rgba_and_la_png_ignore_alpha():
    grey = np.full((3, 3), 200, dtype=np.uint8)
    transparent = np.zeros((3, 3), dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([grey, grey, grey, transparent]))
    la = Image.fromarray(np.dstack([grey, transparent]))
    for image in (rgba, la):
        np.testing.assert_allclose(decode_image(png_bytes(image)).pixels, 200 / 255, atol=1e-5)


def test_palette_png_is_resolved_through_its_palette():
    stored = horizontal_ramp(4, 16, np.uint8, 255)
    decoded = decode_image(png_bytes(Image.fromarray(stored).convert("P")))
    np.testing.assert_allclose(decoded.pixels, stored / 255.0, atol=2 / 255)


def test_jpeg_decodes_to_grayscale_of_the_right_shape_and_range():
    stored = horizontal_ramp(16, 32, np.uint8, 255)
    decoded = decode_image(jpeg_bytes(Image.fromarray(stored)))
    assert_unit_grayscale(decoded, (16, 32))
    assert decoded.source_format == "jpeg" and decoded.bits_stored == 8
    np.testing.assert_allclose(decoded.pixels, stored / 255.0, atol=0.05)


def test_colour_and_cmyk_jpeg_decode_to_luminance():
    grey = np.full((16, 16, 3), 180, dtype=np.uint8)
    for image in (Image.fromarray(grey), Image.fromarray(grey).convert("CMYK")):
        decoded = decode_image(jpeg_bytes(image))
        assert_unit_grayscale(decoded, (16, 16))
        np.testing.assert_allclose(decoded.pixels, 180 / 255, atol=0.03)


def test_jpeg_exif_orientation_is_applied():
    stored = np.zeros((16, 32), dtype=np.uint8)
    stored[:, :16] = 255  # bright left half
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    decoded = decode_image(jpeg_bytes(image, exif=exif))
    assert decoded.original_size == (32, 16)
    assert decoded.pixels[:16].mean() > 0.9 and decoded.pixels[16:].mean() < 0.1  # left went to top


def test_format_is_sniffed_from_bytes_not_from_the_file_name(tmp_path: Path):
    png = png_bytes(Image.fromarray(np.zeros((4, 4), dtype=np.uint8)))
    misnamed = tmp_path / "study.dcm"
    misnamed.write_bytes(png)
    assert load_image(misnamed).source_format == "png"
    text_named_png = tmp_path / "xray.png"
    text_named_png.write_text("not an image at all\n")
    with pytest.raises(NotAnImageError):
        load_image(text_named_png)
    assert sniff_format(png) == "png"
    assert sniff_format(b"hello") is None


def test_load_image_missing_file_raises_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "absent.png")


def test_decoding_leaves_pillow_truncated_loading_disabled():
    png = png_bytes(Image.fromarray(np.zeros((4, 4), dtype=np.uint8)))
    decode_image(png)
    with pytest.raises(TruncatedImageError):
        decode_image(png[: len(png) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---------------------------------------------------------------------------------------------
# DICOM.


def decode_dicom_pixels(stored: np.ndarray, **options) -> np.ndarray:
    decoded = decode_image(dicom_bytes(stored, **options))
    assert decoded.source_format == "dicom"
    assert decoded.pixels.dtype == np.float32
    return decoded.pixels


def test_dicom_rescale_slope_and_intercept_are_applied_before_the_window():
    stored = horizontal_ramp(2, 11, np.uint16, 1000)  # 0, 100, ..., 1000
    window = {"WindowCenter": 500, "WindowWidth": 1001, "VOILUTFunction": "LINEAR_EXACT"}
    plain = decode_dicom_pixels(stored, RescaleSlope=1, RescaleIntercept=0, **window)
    doubled = decode_dicom_pixels(stored, RescaleSlope=2, RescaleIntercept=-500, **window)
    # In output units: plain spans 0..1000 (the whole window), doubled spans -500..1500 (clipped).
    values = stored[0].astype(np.float64)
    np.testing.assert_allclose(plain[0], (values - 500) / 1001 + 0.5, atol=1e-5)
    np.testing.assert_allclose(doubled[0], np.clip((2 * values - 500 - 500) / 1001 + 0.5, 0, 1), atol=1e-5)
    assert not np.allclose(plain, doubled)


def test_dicom_window_narrower_than_the_data_clips_both_ends():
    stored = horizontal_ramp(2, 101, np.uint16, 4000)
    pixels = decode_dicom_pixels(stored, bits_stored=12, WindowCenter=2000, WindowWidth=1000)
    values = stored[0]
    assert np.all(pixels[0][values <= 1500] == 0.0)
    assert np.all(pixels[0][values >= 2500] == 1.0)
    inside = pixels[0][(values > 1550) & (values < 2450)]
    assert np.all((inside > 0) & (inside < 1)) and np.all(np.diff(inside) > 0)


def test_dicom_multi_valued_window_uses_the_first_pair():
    stored = horizontal_ramp(2, 101, np.uint16, 4000)
    first_only = decode_dicom_pixels(stored, WindowCenter=1000, WindowWidth=500)
    two_windows = decode_dicom_pixels(stored, WindowCenter=[1000, 3000], WindowWidth=[500, 2000])
    np.testing.assert_array_equal(first_only, two_windows)


def test_dicom_monochrome1_is_the_inverse_of_the_same_data_as_monochrome2():
    stored = horizontal_ramp(3, 50, np.uint16, 4095)
    for window in ({}, {"WindowCenter": 2048, "WindowWidth": 2048}):
        mono2 = decode_dicom_pixels(stored, bits_stored=12, **window)
        mono1 = decode_dicom_pixels(stored, photometric="MONOCHROME1", bits_stored=12, **window)
        np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono1[0, 0] == pytest.approx(1.0)  # the lowest MONOCHROME1 value is white


def test_dicom_signed_16bit_data_keeps_its_order():
    stored = horizontal_ramp(2, 64, np.int32, 2000).astype(np.int16) - 1000  # -1000 .. 1000
    pixels = decode_dicom_pixels(stored, RescaleSlope=1, RescaleIntercept=0)
    assert np.all(np.diff(pixels[0]) >= 0) and pixels[0, 0] == 0.0 and pixels[0, -1] == 1.0
    windowed = decode_dicom_pixels(stored, WindowCenter=0, WindowWidth=1000, VOILUTFunction="LINEAR_EXACT")
    assert windowed[0, 0] == 0.0 and windowed[0, -1] == 1.0
    assert windowed[0, 31:33].mean() == pytest.approx(0.5, abs=0.05)  # stored 0 sits mid-window


def test_dicom_without_voi_is_normalised_over_its_actual_range():
    stored = horizontal_ramp(4, 200, np.uint16, 1000) + 3000  # 3000..4000 in a 16-bit container
    pixels = decode_dicom_pixels(stored)
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    assert np.all(np.diff(pixels[0]) >= 0)
    assert pixels[0, 100] == pytest.approx(0.5, abs=0.02)


def test_dicom_voi_lut_sequence_maps_through_the_table():
    stored = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    # A table using 12 of its 16 declared bits (common in the wild), written as OW like most files.
    lut.LUTData = np.array([0, 0, 4095, 4095], dtype="<u2").tobytes()
    pixels = decode_dicom_pixels(stored, VOILUTSequence=Sequence([lut]))
    np.testing.assert_allclose(pixels, [[0.0, 0.0, 1.0, 1.0]])


def test_dicom_multi_frame_takes_the_first_frame():
    frames = np.stack([np.full((4, 5), 100, np.uint16), np.full((4, 5), 900, np.uint16)])
    pixels = decode_dicom_pixels(frames, WindowCenter=500, WindowWidth=1000, VOILUTFunction="LINEAR_EXACT")
    assert pixels.shape == (4, 5)
    np.testing.assert_allclose(pixels, 0.1, atol=1e-5)


def test_dicom_rgb_becomes_its_luminance():
    colours = np.zeros((2, 2, 3), dtype=np.uint8)
    colours[0, 0] = (255, 0, 0)
    colours[1, 1] = (255, 255, 255)
    pixels = decode_dicom_pixels(colours, photometric="RGB")
    np.testing.assert_allclose(pixels, [[0.299, 0.0], [0.0, 1.0]], atol=1e-5)


def test_dicom_without_preamble_is_recognised_from_its_elements():
    stored = horizontal_ramp(3, 10, np.uint16, 1000)
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        data = dicom_bytes(stored, preamble=False, transfer_syntax=syntax)
        assert data[128:132] != b"DICM"
        decoded = decode_image(data)
        assert decoded.source_format == "dicom" and decoded.pixels.shape == (3, 10)
        assert decoded.pixels[0, 0] == 0.0 and decoded.pixels[0, -1] == 1.0


def test_bytes_that_only_start_like_a_dicom_tag_are_not_an_image():
    with pytest.raises(NotAnImageError):
        decode_image(b"\x08\x00" + b"plain text that force-reading would turn into elements " * 4)


# ---------------------------------------------------------------------------------------------
# Errors.


def test_every_image_error_is_a_value_error_with_its_own_code():
    error_types = [
        EmptyImageError,
        NotAnImageError,
        TruncatedImageError,
        ImageTooLargeError,
        DicomNoPixelDataError,
        UnsupportedDicomError,
        UnsupportedPhotometricError,
    ]
    codes = {error_type.code for error_type in error_types}
    assert len(codes) == len(error_types)
    for error_type in error_types:
        assert issubclass(error_type, ImageError) and issubclass(error_type, ValueError)
        assert str(error_type()) == error_type().message != ""


def test_zero_bytes_is_an_empty_image_error():
    with pytest.raises(EmptyImageError):
        decode_image(b"")


def test_text_bytes_are_not_an_image():
    with pytest.raises(NotAnImageError):
        decode_image(b"Findings: no acute cardiopulmonary process.\n")


@pytest.mark.parametrize("writer", [png_bytes, jpeg_bytes], ids=["png", "jpeg"])
def test_first_half_of_an_image_is_truncated(writer):
    rng = np.random.default_rng(0)
    data = writer(Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)))
    for longest_side in (None, 16):  # decoded whole, or scaled while decoding
        with pytest.raises(TruncatedImageError):
            decode_image(data[: len(data) // 2], longest_side=longest_side)


def test_png_header_declaring_a_huge_image_is_refused_before_decoding(patch_png_size):
    small = png_bytes(Image.fromarray(np.zeros((8, 8), dtype=np.uint8)))
    # 100000 x 100000 as 8-bit grey would be 10 GB; the refusal must come from the header alone.
    with pytest.raises(ImageTooLargeError):
        decode_image(patch_png_size(small, 100_000, 100_000))
    with pytest.raises(ImageTooLargeError, match="20,000 x 10"):
        decode_image(patch_png_size(small, 20_000, 10))  # under Pillow's own bomb limit, over max_side


def test_default_limits_fit_the_largest_chest_detector_and_no_more():
    from rrg.data.imaging.limits import check_dimensions

    limits = ImageLimits()
    side = 4300  # a 43 cm detector at 100 um
    assert side * side * 2 <= limits.max_bytes  # its uncompressed 16-bit DICOM fits the byte limit
    check_dimensions(side, side, limits)
    check_dimensions(3000, 8192, limits)
    for height, width in ((3050, 16384), (6000, 6000), (8193, 100)):
        with pytest.raises(ImageTooLargeError):
            check_dimensions(height, width, limits)


def test_wide_rgb_png_from_the_security_review_is_refused_from_its_header(patch_png_size):
    small = png_bytes(Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)))
    # 16384 x 3050 RGB: 146 KB on the wire, about 940 MiB to decode in full under the old limits.
    with pytest.raises(ImageTooLargeError, match="16,384 x 3,050"):
        decode_image(patch_png_size(small, 16_384, 3_050))
    with pytest.raises(ImageTooLargeError):
        decode_image(patch_png_size(small, 5_000, 5_001))  # 25,005,000 pixels: one row over
    # Within the limits, the same 8 x 8 pixel stream gets past the header and is found short.
    with pytest.raises(TruncatedImageError):
        decode_image(patch_png_size(small, 8_192, 3_050))


def test_pixel_limits_apply_to_jpeg_and_dicom_headers_too():
    tight = ImageLimits(max_pixels=100)
    with pytest.raises(ImageTooLargeError):
        decode_image(jpeg_bytes(Image.fromarray(np.zeros((11, 10), dtype=np.uint8))), tight)
    with pytest.raises(ImageTooLargeError):
        decode_image(dicom_bytes(np.zeros((11, 10), dtype=np.uint16)), tight)
    narrow = ImageLimits(max_side=9)
    with pytest.raises(ImageTooLargeError):
        decode_image(dicom_bytes(np.zeros((4, 10), dtype=np.uint16)), narrow)


def test_bytes_over_max_bytes_are_too_large(tmp_path: Path):
    data = png_bytes(Image.fromarray(np.zeros((8, 8), dtype=np.uint8)))
    limits = ImageLimits(max_bytes=len(data) - 1)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, limits)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(ImageTooLargeError):
        load_image(path, limits)


def test_dicom_without_pixel_data_is_refused():
    with pytest.raises(DicomNoPixelDataError):
        decode_image(dicom_bytes(np.zeros((4, 4), dtype=np.uint16), with_pixel_data=False))


def test_palette_colour_dicom_is_unsupported():
    with pytest.raises(UnsupportedPhotometricError, match="PALETTE COLOR"):
        decode_image(dicom_bytes(np.zeros((4, 4), dtype=np.uint8), photometric="PALETTE COLOR"))
    with pytest.raises(UnsupportedPhotometricError):
        decode_image(dicom_bytes(np.zeros((4, 4, 3), dtype=np.uint8), photometric="YBR_FULL"))


def test_truncated_dicom_pixel_data_is_truncated():
    stored = horizontal_ramp(32, 32, np.uint16, 4095)
    with pytest.raises(TruncatedImageError):
        decode_image(dicom_bytes(stored, pixel_data=stored.tobytes()[:1000]))
    whole = dicom_bytes(stored)
    with pytest.raises(TruncatedImageError):
        decode_image(whole[: len(whole) - 500])


def with_pixel_data_length(data: bytes, declared: int) -> bytes:
    """Rewrite the Value Length of an explicit-VR PixelData element (the file's last element)."""
    start = data.rfind(b"\xe0\x7f\x10\x00")
    assert data[start + 4 : start + 6] in (b"OW", b"OB")
    return data[: start + 8] + struct.pack("<I", declared) + data[start + 12 :]


def test_dicom_pixel_data_declaring_more_bytes_than_the_file_holds_is_truncated():
    stored = horizontal_ramp(64, 64, np.uint16, 4095)
    whole = dicom_bytes(stored)
    # A few bytes more than Rows x Columns need, behind a 2 GB declared length.
    forged = with_pixel_data_length(whole, 2_000_000_000) + b"\x00" * 10
    with pytest.raises(TruncatedImageError, match="declares 2,000,000,000 bytes") as caught:
        decode_image(forged)
    assert PATIENT_NAME not in str(caught.value) and PATIENT_ID not in str(caught.value)
    with pytest.raises(TruncatedImageError):
        decode_image(with_pixel_data_length(whole, len(stored.tobytes()) + 2))
    assert decode_image(with_pixel_data_length(whole, len(stored.tobytes()))).pixels.shape == (64, 64)


def test_native_dicom_pixel_data_shorter_than_one_frame_is_truncated():
    stored = horizontal_ramp(32, 32, np.uint16, 4095)
    with pytest.raises(TruncatedImageError, match="one frame needs 2,048 bytes"):
        decode_image(dicom_bytes(stored, pixel_data=stored.tobytes()[:-2]))


def test_dicom_transfer_syntax_without_a_decoder_is_unsupported():
    stored = np.zeros((4, 4), dtype=np.uint16)
    video = dicom_bytes(stored, transfer_syntax=MPEG2MPML, pixel_data=encapsulate([b"\x00" * 16]))
    with pytest.raises(UnsupportedDicomError, match="MPEG2"):
        decode_image(video)


def _transcode_with_gdcm(data: bytes, transfer_syntax, folder: Path) -> bytes:
    """Compress a DICOM file's pixels with GDCM, as a modality's JPEG Lossless export does."""
    import gdcm

    (folder / "plain.dcm").write_bytes(data)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(folder / "plain.dcm"))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(transfer_syntax))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    writer.SetFileName(str(folder / "lossless.dcm"))
    assert writer.Write()
    return (folder / "lossless.dcm").read_bytes()


def test_dicom_jpeg_lossless_decodes_to_the_same_pixels(tmp_path):
    gdcm = pytest.importorskip("gdcm")
    stored = horizontal_ramp(32, 48, np.uint16, 4095)
    plain = dicom_bytes(stored, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    compressed = _transcode_with_gdcm(plain, gdcm.TransferSyntax.JPEGLosslessProcess14_1, tmp_path)
    assert b"1.2.840.10008.1.2.4.70" in compressed  # really JPEG Lossless SV1 now
    np.testing.assert_allclose(decode_image(compressed).pixels, decode_image(plain).pixels, atol=1e-6)


def test_dicom_failure_messages_never_carry_patient_tags():
    stored = horizontal_ramp(16, 16, np.uint16, 4095)
    whole = dicom_bytes(stored)
    failures = [
        dicom_bytes(stored, with_pixel_data=False),
        dicom_bytes(stored.astype(np.uint8), photometric="PALETTE COLOR"),
        dicom_bytes(stored, pixel_data=stored.tobytes()[:100]),
        whole[: len(whole) - 300],
        dicom_bytes(stored, transfer_syntax=MPEG2MPML, pixel_data=encapsulate([b"\x00" * 16])),
    ]
    for data in failures:
        with pytest.raises(ImageError) as caught:
            decode_image(data)
        # The whole printed traceback, chained causes included, is what a server log would show.
        logged = "".join(traceback.format_exception(caught.value))
        for tag_value in (PATIENT_NAME, PATIENT_ID, "Doe", "Jane"):
            assert tag_value not in logged


def test_decoded_dicom_holds_no_patient_metadata():
    decoded = decode_image(dicom_bytes(horizontal_ramp(4, 4, np.uint16, 100)))
    assert {field.name for field in dataclasses.fields(decoded)} == {
        "pixels",
        "source_format",
        "original_size",
        "bits_stored",
    }
    assert not hasattr(decoded, "__dict__")  # frozen dataclass fields only, nothing tacked on
    visible = repr((decoded.source_format, decoded.original_size, decoded.bits_stored))
    assert PATIENT_NAME not in visible and PATIENT_ID not in visible


# ---------------------------------------------------------------------------------------------
# Decoding to the size the caller needs (longest_side).

SOURCE_SIZE = (600, 1040)  # (H, W): shrunk by 16 for a long side of 64, so JPEG's 1/8 is used and then 2
LONGEST_SIDE = 64


def smooth_image(height: int, width: int) -> np.ndarray:
    """A smooth picture in [0.05, 0.95]: a few cycles of a 2-D wave over a gentle ramp."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    return 0.5 + 0.35 * np.sin(3 * np.pi * x) * np.cos(2 * np.pi * y) + 0.1 * (x - 0.5)


def reducible_sources() -> dict[str, bytes]:
    """One file per format and pixel layout, all of the same smooth picture at SOURCE_SIZE."""
    picture = smooth_image(*SOURCE_SIZE)
    gray8 = (picture * 255).round().astype(np.uint8)
    rgb = np.dstack([gray8, (gray8 * 0.9).astype(np.uint8), (gray8 * 0.7).astype(np.uint8)])
    stored = (picture * 4095).round().astype(np.uint16)
    modality_lut = Dataset()
    modality_lut.LUTDescriptor = [4096, 0, 16]
    modality_lut.LUTData = (np.arange(4096, dtype="<u2") // 2).tobytes()  # any monotone table
    modality_lut.ModalityLUTType = "US"
    return {
        "png-gray8": png_bytes(Image.fromarray(gray8)),
        "png-gray16": png_bytes(Image.fromarray((picture * 65535).round().astype(np.uint16))),
        "png-rgb": png_bytes(Image.fromarray(rgb)),
        "png-palette": png_bytes(Image.fromarray(gray8).convert("P")),
        "jpeg-gray": jpeg_bytes(Image.fromarray(gray8)),
        "jpeg-rgb": jpeg_bytes(Image.fromarray(rgb)),
        "dicom-mono2-window": dicom_bytes(stored, bits_stored=12, WindowCenter=2048, WindowWidth=3000),
        "dicom-mono1-rescale": dicom_bytes(
            4095 - stored, photometric="MONOCHROME1", bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000
        ),
        "dicom-mono2-auto-window": dicom_bytes(stored, bits_stored=12),
        "dicom-modality-lut": dicom_bytes(stored, bits_stored=12, ModalityLUTSequence=Sequence([modality_lut])),
        "dicom-rgb": dicom_bytes(rgb, photometric="RGB"),
    }


@pytest.mark.parametrize("name", list(reducible_sources()))
def test_longest_side_decodes_small_and_close_to_the_full_decode_downscaled(name):
    data = reducible_sources()[name]
    full = decode_image(data)
    reduced = decode_image(data, longest_side=LONGEST_SIDE)
    assert reduced.original_size == full.original_size == SOURCE_SIZE
    assert LONGEST_SIDE <= max(reduced.pixels.shape) < 2 * LONGEST_SIDE
    assert reduced.pixels.shape[0] < reduced.pixels.shape[1]  # the aspect survives
    assert reduced.pixels.dtype == np.float32 and reduced.pixels.flags.c_contiguous
    assert (reduced.source_format, reduced.bits_stored) == (full.source_format, full.bits_stored)
    assert 0.0 <= reduced.pixels.min() and reduced.pixels.max() <= 1.0
    difference = np.abs(fit_to_square(reduced.pixels, 64) - fit_to_square(full.pixels, 64)).mean()
    assert difference < 0.02, f"{name}: mean absolute difference {difference:.4f}"


@pytest.mark.parametrize("writer", [png_bytes, jpeg_bytes], ids=["png", "jpeg"])
def test_longest_side_honours_exif_orientation(writer):
    stored = np.zeros((200, 400), dtype=np.uint8)
    stored[:, :200] = 255  # bright left half
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    decoded = decode_image(writer(image, exif=exif), longest_side=50)
    assert decoded.original_size == (400, 200)
    assert decoded.pixels.shape == (50, 25)
    assert decoded.pixels[:24].mean() > 0.9 and decoded.pixels[26:].mean() < 0.1  # left went to top


def test_longest_side_at_or_above_the_source_size_changes_nothing():
    data = reducible_sources()["png-rgb"]
    full = decode_image(data).pixels
    for longest_side in (1040, 600, 521):  # 1040 // 521 == 1: already under twice the side asked
        np.testing.assert_array_equal(decode_image(data, longest_side=longest_side).pixels, full)


def test_load_image_passes_longest_side_on(tmp_path: Path):
    path = tmp_path / "wide.png"
    path.write_bytes(reducible_sources()["png-gray16"])
    decoded = load_image(path, longest_side=LONGEST_SIDE)
    assert decoded.original_size == SOURCE_SIZE and decoded.pixels.shape == (38, 65)


@pytest.mark.parametrize("longest_side", [0, -5, 2.5, True])
def test_longest_side_must_be_a_positive_integer(longest_side):
    with pytest.raises(ValueError, match="longest_side"):
        decode_image(png_bytes(Image.fromarray(np.zeros((4, 4), dtype=np.uint8))), longest_side=longest_side)


# ---------------------------------------------------------------------------------------------
# Model input.


def test_fit_to_square_keeps_aspect_centres_content_and_pads_with_zero():
    tall = np.ones((100, 50), dtype=np.float32)
    square = fit_to_square(tall, 64)
    assert square.shape == (64, 64) and square.dtype == np.float32
    columns_with_content = np.flatnonzero(square.max(axis=0) > 0)
    assert len(columns_with_content) == 32  # 50/100 of the long side
    assert columns_with_content[0] == 16 and columns_with_content[-1] == 47  # centred: 16 | 32 | 16
    assert np.all(square[:, :16] == 0) and np.all(square[:, 48:] == 0)
    np.testing.assert_allclose(square[:, 16:48], 1.0, atol=1e-6)
    wide = fit_to_square(np.ones((50, 100), dtype=np.float32), 64)
    np.testing.assert_array_equal(wide, square.T)


def test_fit_to_square_anti_aliases_when_shrinking():
    checkerboard = (np.indices((200, 200)).sum(axis=0) % 2).astype(np.float32)
    shrunk = fit_to_square(checkerboard, 50)
    np.testing.assert_allclose(shrunk[2:-2, 2:-2], 0.5, atol=0.05)  # averaged, not sampled


def test_fit_to_square_enlarges_small_images():
    square = fit_to_square(np.full((10, 5), 0.25, dtype=np.float32), 40)
    assert square.shape == (40, 40)
    np.testing.assert_allclose(square[:, 10:30], 0.25, atol=1e-6)


def test_to_model_input_accepts_bytes_or_a_decoded_image():
    data = png_bytes(Image.fromarray(horizontal_ramp(30, 60, np.uint8, 255)))
    from_bytes = to_model_input(data, size=32)
    from_decoded = to_model_input(decode_image(data), size=32)
    assert from_bytes.shape == (32, 32) and from_bytes.dtype == np.float32
    np.testing.assert_array_equal(from_bytes, from_decoded)
    assert to_model_input(data).shape == (224, 224)
    with pytest.raises(NotAnImageError):
        to_model_input(b"not an image")
