"""Peak memory and time of one decode_image at full size against decode_image(longest_side=512), for
the largest images the limits accept, each decode in a fresh process, side by side in one run.

Images, written to a temporary folder (smooth gradients with low-amplitude noise, as a radiograph
compresses, unless said otherwise):

  review PNG     16384 x 3050 RGB PNG of one colour, about 146 KB: the security review's file
                 (issue 17), decoded under the old limits (50 Mpx, 16384 a side); today's limits
                 refuse it from its header, timed below the table
  RGB PNG        5000 x 5000 (25 Mpx, the pixel limit)
  16-bit PNG     5000 x 5000 grey
  RGB JPEG       5000 x 5000, quality 90
  16-bit DICOM   5000 x 5000 native (uncompressed) DX, MONOCHROME2, rescale and window: 50 MB, so
                 decoded with max_bytes raised to 64 MiB (within 32 MiB a 25 Mpx DICOM is compressed)

Peak memory is the rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs
after a warm-up decode of a tiny file of the same format, so imports and plugins are not counted)
during the first decode; seconds are the fastest of --repeats decodes.

    uv run python bench/decode_memory.py [--longest-side 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rrg.data.imaging import ImageLimits, ImageTooLargeError, decode_image

MIB = 1024 * 1024
SIDE = 5000
OLD_LIMITS = {"max_pixels": 50_000_000, "max_side": 16384}

CHILD = r"""
import json, re, sys, time
from rrg.data.imaging import ImageLimits, decode_image

def status_bytes(field):
    return int(re.search(field + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

path, warm_up, longest_side, repeats, limits = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
longest_side = None if longest_side == "full" else int(longest_side)
limits = ImageLimits(**json.loads(limits))
decode_image(open(warm_up, "rb").read(), limits, longest_side=longest_side)
data = open(path, "rb").read()
try:
    open("/proc/self/clear_refs", "w").write("5")
    baseline = status_bytes("VmRSS")
except OSError:
    baseline = status_bytes("VmHWM")
times = []
for _ in range(repeats):
    started = time.perf_counter()
    decoded = decode_image(data, limits, longest_side=longest_side)
    times.append(time.perf_counter() - started)
    if len(times) == 1:
        peak = status_bytes("VmHWM") - baseline
    del decoded
print(json.dumps({"peak_bytes": peak, "seconds": min(times)}))
"""


def gradient(height: int, width: int, maximum: int, dtype: type) -> np.ndarray:
    ramp_down = np.linspace(0.1, 0.9, height, dtype=np.float32)
    ramp_across = np.linspace(0.1, 0.9, width, dtype=np.float32)
    picture = ramp_down[:, None] * 0.6 + ramp_across[None, :] * 0.4
    noise = np.random.default_rng(0).integers(0, 3, (height, width), dtype=np.uint8)
    return (picture * (maximum - 4)).astype(dtype) + noise.astype(dtype)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def review_png(side: int) -> bytes:
    """The issue's file: one colour, so 16384 x 3050 RGB compresses to about 146 KB."""
    height, width = (3050, 16384) if side == SIDE else (side, side)
    return encoded(Image.new("RGB", (width, height), (200, 190, 180)), "PNG", compress_level=9)


def rgb_png(side: int) -> bytes:
    gray = gradient(side, side, 255, np.uint8)
    return encoded(Image.fromarray(np.dstack([gray, gray, gray])), "PNG", compress_level=1)


def gray16_png(side: int) -> bytes:
    return encoded(Image.fromarray(gradient(side, side, 65535, np.uint16)), "PNG", compress_level=1)


def rgb_jpeg(side: int) -> bytes:
    gray = gradient(side, side, 255, np.uint8)
    return encoded(Image.fromarray(np.dstack([gray, gray // 2 + 64, gray])), "JPEG", quality=90)


def dicom16(side: int) -> bytes:
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
    dataset.PixelData = gradient(side, side, 65535, np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# name -> (writer, source (H, W), ImageLimits arguments)
IMAGES = {
    "review PNG 16384x3050 RGB (old limits)": (review_png, (3050, 16384), OLD_LIMITS),
    "PNG 5000x5000 RGB": (rgb_png, (SIDE, SIDE), {}),
    "PNG 5000x5000 16-bit grey": (gray16_png, (SIDE, SIDE), {}),
    "JPEG 5000x5000 RGB": (rgb_jpeg, (SIDE, SIDE), {}),
    "DICOM 5000x5000 16-bit native": (dicom16, (SIDE, SIDE), {"max_bytes": 64 * MIB}),
}


def measure(path: Path, warm_up: Path, longest_side: int | None, repeats: int, limits: dict) -> dict:
    """Peak RSS rise (bytes) and fastest seconds of decode_image in a fresh process."""
    side = "full" if longest_side is None else str(longest_side)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(warm_up), side, str(repeats), json.dumps(limits)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"decode in a child process failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def header_refusal_seconds(data: bytes) -> float:
    """Seconds for today's default limits to refuse the review's PNG (it must be refused)."""
    started = time.perf_counter()
    try:
        decode_image(data, longest_side=512)
    except ImageTooLargeError:
        return time.perf_counter() - started
    raise AssertionError("the 16384 x 3050 PNG was not refused by the default limits")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--longest-side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows, refusal_s = [], None
    with tempfile.TemporaryDirectory() as folder:
        for name, (writer, size, limits) in IMAGES.items():
            print(f"decode_memory: {name}: writing", file=sys.stderr, flush=True)
            source, warm_up = Path(folder) / "source", Path(folder) / "warm-up"
            data = writer(SIDE)
            source.write_bytes(data)
            warm_up.write_bytes(writer(64))
            if writer is review_png:
                refusal_s = header_refusal_seconds(data)
            print(f"decode_memory: {name}: decoding", file=sys.stderr, flush=True)
            full = measure(source, warm_up, None, args.repeats, limits)
            reduced = measure(source, warm_up, args.longest_side, args.repeats, limits)
            rows.append({"image": name, "size": size, "file_bytes": len(data), "full": full, "reduced": reduced})

    n = args.longest_side
    print(f"decode_image peak RSS rise and time, full size vs longest_side={n}, each in a fresh process "
          f"(fastest of {args.repeats} for time)\n")
    print(f"| image | file | full: peak MiB | full: s | {n}: peak MiB | {n}: s | memory ratio | time ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        full, reduced = row["full"], row["reduced"]
        print(
            f"| {row['image']} | {row['file_bytes'] / MIB:.2f} MiB "
            f"| {full['peak_bytes'] / MIB:.0f} | {full['seconds']:.3f} "
            f"| {reduced['peak_bytes'] / MIB:.0f} | {reduced['seconds']:.3f} "
            f"| {full['peak_bytes'] / max(reduced['peak_bytes'], 1):.1f}x "
            f"| {full['seconds'] / reduced['seconds']:.1f}x |"
        )
    limits = ImageLimits()
    print(f"\nWith today's limits ({limits.max_pixels:,} px, {limits.max_side:,} a side) the review PNG is refused "
          f"from its header (ImageTooLargeError) in {refusal_s * 1000:.2f} ms.")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
