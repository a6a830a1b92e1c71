"""Real radiographs (NIH ChestX-ray14) pass through the imaging code, as JPEG and as DICOM."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rrg.imaging import decode_image, load_image, to_model_input

NIH = Path(__file__).resolve().parents[1] / "data" / "nih_cxr14"


@pytest.mark.parametrize("name", ["00029548_010.jpg", "00029548_012.jpg"])
def test_real_radiograph_becomes_a_model_input(name):
    decoded = load_image(NIH / name)
    assert decoded.source_format == "jpeg" and decoded.original_size == (256, 256)
    x = to_model_input(decoded, 224)
    assert x.shape == (224, 224) and x.dtype == np.float32
    # A radiograph, not a blank: wide dynamic range, bright mediastinum over dark lungs.
    assert x.max() - x.min() > 0.5
    assert x[60:180, 100:124].mean() > x[60:180, 40:70].mean()


def _as_dicom(pixels: np.ndarray, photometric: str) -> bytes:
    """The radiograph's pixels as a 12-bit DX DICOM a modality could have written."""
    stored = (pixels * 4095).round().astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "DX", "Test^Patient", "TEST0001"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_real_radiograph_as_dicom_decodes_to_the_same_picture(photometric):
    jpeg = load_image(NIH / "00029548_012.jpg").pixels
    dicom = decode_image(_as_dicom(jpeg, photometric))
    assert dicom.source_format == "dicom" and dicom.bits_stored == 12
    np.testing.assert_allclose(dicom.pixels, jpeg, atol=2 / 4095 + 1e-6)
