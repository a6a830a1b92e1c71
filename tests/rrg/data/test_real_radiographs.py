"""Real radiographs (NIH ChestX-ray14) pass through the imaging code, as JPEG and as DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrg.data.imaging import decode_image, load_image, to_model_input

NIH = Path(__file__).resolve().parents[2] / "data" / "nih_cxr14"


@pytest.mark.parametrize("name", ["00029548_010.jpg", "00029548_012.jpg"])
def test_real_radiograph_becomes_a_model_input(name):
    decoded = load_image(NIH / name)
    assert decoded.source_format == "jpeg" and decoded.original_size == (256, 256)
    x = to_model_input(decoded, 224)
    assert x.shape == (224, 224) and x.dtype == np.float32
    # A radiograph, not a blank: wide dynamic range, bright mediastinum over dark lungs.
    assert x.max() - x.min() > 0.5
    assert x[60:180, 100:124].mean() > x[60:180, 40:70].mean()


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_real_radiograph_as_dicom_decodes_to_the_same_picture(photometric, make_dicom):
    jpeg = load_image(NIH / "00029548_012.jpg").pixels
    dicom = decode_image(make_dicom(jpeg, photometric=photometric, window=(2048, 4096)))
    assert dicom.source_format == "dicom" and dicom.bits_stored == 12
    np.testing.assert_allclose(dicom.pixels, jpeg, atol=2 / 4095 + 1e-6)
