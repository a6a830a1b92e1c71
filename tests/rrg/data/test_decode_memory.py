"""Peak memory of one decode of the largest images the limits accept, each in a fresh process.

Security review, issue 17: a 146 KB PNG cost about 940 MiB a request. With ``longest_side`` a
decode may hold only the source's own raster (where the format forces one) and the small result.
Bounds, for P = 25 Mpx (5000 x 5000, the pixel limit):

    RGB PNG          Pillow's RGB raster, 4 B/px (shrunk before any grey copy) + 48 MiB
    16-bit grey PNG  Pillow's I;16 raster, 2 B/px + 48 MiB
    RGB JPEG         libjpeg decodes 1/8 a side and grey: no per-pixel term, 48 MiB
    16-bit DICOM     pydicom's copy of PixelData + the first frame's stored values, 2 + 2 B/px + 48 MiB

48 MiB covers the codecs' working buffers, the small float arrays and the allocator's slack.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MIB = 1024 * 1024
SIDE = 5000  # 25,000,000 pixels: ImageLimits().max_pixels exactly
PIXELS = SIDE * SIDE
SLACK = 48 * MIB

# Run in a fresh interpreter, so no other test's allocations (or freed-but-kept heap) count. The
# warm-up decode of a tiny file of the same format imports every plugin before the baseline.
CHILD = r"""
import json, re, sys, time
from rrg.data.imaging import ImageLimits, decode_image

def status_bytes(field):
    return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

path, warm_up, longest_side, max_bytes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
longest_side = None if longest_side == "full" else int(longest_side)
limits = ImageLimits(max_bytes=max_bytes)
decode_image(open(warm_up, "rb").read(), limits, longest_side=longest_side)
data = open(path, "rb").read()
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
baseline = status_bytes("VmRSS") if reset else status_bytes("VmHWM")
started = time.perf_counter()
decoded = decode_image(data, limits, longest_side=longest_side)
seconds = time.perf_counter() - started
print(json.dumps({"peak_bytes": max(0, status_bytes("VmHWM") - baseline), "seconds": seconds,
                  "shape": list(decoded.pixels.shape), "original_size": list(decoded.original_size)}))
"""


def measure_decode(path: Path, warm_up: Path, longest_side: int | None, max_bytes: int = 32 * MIB) -> dict:
    """Peak RSS increase (bytes) and seconds of one decode_image in a fresh process."""
    side = "full" if longest_side is None else str(longest_side)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(warm_up), side, str(max_bytes)],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def gradient(side: int, maximum: int, dtype: type) -> np.ndarray:
    """A smooth (side, side) picture with low-amplitude noise: realistic to decode, quick to compress."""
    ramp = np.linspace(0.1, 0.9, side, dtype=np.float32)
    picture = ramp[:, None] * 0.6 + ramp[None, :] * 0.4
    noise = np.random.default_rng(0).integers(0, 3, (side, side), dtype=np.uint8)
    return (picture * (maximum - 4)).astype(dtype) + noise.astype(dtype)


def rgb_png(side: int) -> bytes:
    gray = gradient(side, 255, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gray, gray, gray])).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def gray16_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient(side, 65535, np.uint16)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def rgb_jpeg(side: int) -> bytes:
    gray = gradient(side, 255, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gray, gray // 2 + 64, gray])).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def dicom16(side: int) -> bytes:
    """A native (uncompressed) 16-bit DX file: the layout whose decode holds the most bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows = dataset.Columns = side
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, -1024
    dataset.WindowCenter, dataset.WindowWidth = 30000, 50000
    dataset.PixelData = gradient(side, 65535, np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# name -> (writer, bound on the reduced decode's peak in bytes, max_bytes the file needs)
CASES: dict[str, tuple[Callable[[int], bytes], int, int]] = {
    "rgb-png": (rgb_png, 4 * PIXELS + SLACK, 32 * MIB),
    "gray16-png": (gray16_png, 2 * PIXELS + SLACK, 32 * MIB),
    "rgb-jpeg": (rgb_jpeg, SLACK, 32 * MIB),
    # 50 MB uncompressed is over the 32 MiB byte limit (a 25 Mpx DICOM within it is compressed);
    # the byte limit is raised here so the pixel pipeline's worst case is what is measured.
    "gray16-dicom": (dicom16, 4 * PIXELS + SLACK, 64 * MIB),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_decoding_the_largest_accepted_image_to_512_holds_little_more_than_its_raster(name, tmp_path: Path):
    writer, bound, max_bytes = CASES[name]
    source, warm_up = tmp_path / "source", tmp_path / "warm-up"
    source.write_bytes(writer(SIDE))
    warm_up.write_bytes(writer(64))
    reduced = measure_decode(source, warm_up, 512, max_bytes)
    full = measure_decode(source, warm_up, None, max_bytes)
    reduced_mib, full_mib = reduced["peak_bytes"] / MIB, full["peak_bytes"] / MIB
    figures = f"{name}: longest_side=512 peaked at {reduced_mib:.0f} MiB, full decode at {full_mib:.0f} MiB"
    assert reduced["original_size"] == [SIDE, SIDE] and 512 <= max(reduced["shape"]) < 1024, figures
    assert reduced["peak_bytes"] <= bound, f"{figures}; bound {bound / MIB:.0f} MiB"
    # The full decode makes float32 arrays of every pixel (4 B/px each) on top of the raster.
    assert reduced["peak_bytes"] * 3 <= full["peak_bytes"], figures
