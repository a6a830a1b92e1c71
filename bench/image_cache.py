"""Reading training images: the image cache through a torch DataLoader against decoding each JPEG when it
is needed (how `rrg train` read images before the cache), on the same MIMIC-sized JPEGs, side by side.

The images are written first (smooth grey radiograph-like fields with fine noise, 2,500 wide x 3,000 high
as MIMIC-CXR-JPG's are, quality 95), once per --folder. Then, in one run:

  decode one at a time   rrg.data.imaging.load_image at full size, then fit to the model's square: the
                         old training path, one image after another in the training process
  cache build            build_image_cache with --workers processes (decode shrunk, window, fit, uint8
                         shards): seconds per 1,000 images, and bytes per cached image on disk
  cached DataLoader      CachedImages.batches with --workers DataLoader workers, batches of --batch in a
                         shuffled training order, each batch handed over as float32 (B, 1, S, S)

    uv run python bench/image_cache.py [--images 2000] [--size 224] [--workers 2] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rrg.data.image_cache import CACHE_FOLDER, CachedImages, build_image_cache
from rrg.data.imaging import fit_to_square, load_image
from rrg.data.manifest import MANIFEST

WIDTH, HEIGHT = 2500, 3000


_ANATOMY: np.ndarray | None = None  # the smooth field every image shares, made once per process


def _anatomy() -> np.ndarray:
    """A chest-radiograph-like grey field: bright mediastinum, darker lung fields, ribs over the lungs."""
    global _ANATOMY
    if _ANATOMY is None:
        y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        y, x = y / HEIGHT, x / WIDTH
        body = 0.55 + 0.25 * np.exp(-(((x - 0.5) / 0.12) ** 2))
        lungs = sum(np.exp(-2 * (((x - side) / 0.13) ** 2 + ((y - 0.45) / 0.28) ** 2)) for side in (0.3, 0.7))
        ribs = 0.04 * np.sin(y * 60) * (lungs > 0.2)
        _ANATOMY = (body - 0.35 * lungs + ribs).astype(np.float32)
    return _ANATOMY


def _write_radiograph(job: tuple[int, str]) -> None:
    """One JPEG: the shared anatomy shifted and scaled per image, with fine noise (as a detector's)."""
    seed, path = job
    rng = np.random.default_rng(seed)
    field = np.roll(_anatomy(), (int(rng.integers(-80, 80)), int(rng.integers(-80, 80))), axis=(0, 1))
    field = field * rng.uniform(0.85, 1.1) + rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32) * 0.02
    Image.fromarray(np.clip(field * 255, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=95)


def write_images(folder: Path, count: int, workers: int) -> Path:
    """The data set folder: `count` JPEGs and a manifest naming them (reused when already written)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(images / f"{i:05d}.jpg")) for i in range(count) if not (images / f"{i:05d}.jpg").is_file()]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(pool.map(_write_radiograph, jobs, chunksize=4), total=len(jobs), desc="writing JPEGs"):
            pass
    with open(folder / MANIFEST, "w") as handle:
        handle.writelines(json.dumps({"id": str(i), "split": "train", "image": f"images/{i:05d}.jpg"}) + "\n" for i in range(count))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224, help="the model's input side (mimic-mistral-7b: 224)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/rrg-bench-image-cache"))
    args = parser.parse_args()

    data = write_images(args.folder, args.images, args.workers)
    paths = [data / f"images/{i:05d}.jpg" for i in range(args.images)]
    jpeg_bytes = sum(p.stat().st_size for p in paths) / args.images

    started = time.perf_counter()
    for path in tqdm(paths, desc="decoding one at a time"):
        fit_to_square(load_image(path).pixels, args.size)
    decode_seconds = time.perf_counter() - started

    cache = data / CACHE_FOLDER
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    started = time.perf_counter()
    folder = build_image_cache(data, args.size, args.workers, progress=True, log=lambda _: None)
    build_seconds = time.perf_counter() - started
    cached_bytes = sum(p.stat().st_size for p in folder.glob("shard-*.npy")) / args.images

    images = CachedImages(folder, range(args.images))
    order = np.random.default_rng(0).permutation(args.images)
    batches = [order[i : i + args.batch] for i in range(0, args.images, args.batch)]
    started = time.perf_counter()
    read = sum(len(pixels) for _, pixels in images.batches(batches, args.workers))
    loader_seconds = time.perf_counter() - started
    assert read == args.images

    decode_rate, loader_rate = args.images / decode_seconds, args.images / loader_seconds
    print(f"{args.images} JPEGs of {WIDTH} x {HEIGHT} px ({jpeg_bytes / 1e6:.2f} MB each), model input "
          f"{args.size} px, {args.workers} workers, batches of {args.batch}")
    print("| what | images/s | seconds |")
    print("|---|---:|---:|")
    print(f"| decode one at a time (full size, then fit) | {decode_rate:,.1f} | {decode_seconds:.1f} |")
    print(f"| cached DataLoader, {args.workers} workers | {loader_rate:,.0f} | {loader_seconds:.2f} |")
    print(f"cached DataLoader / one-at-a-time decode: {loader_rate / decode_rate:,.0f}x images/s")
    print(f"cache build ({args.workers} processes): {1000 * build_seconds / args.images:.1f} s per 1,000 images "
          f"({args.images / build_seconds:.1f} images/s; {build_seconds / decode_seconds:.2f}x the one-at-a-time "
          "decode's time, paid once per data set and size)")
    print(f"bytes per cached image: {cached_bytes:,.0f} ({args.size} x {args.size} uint8 + the .npy header; "
          f"float32 in RAM as before: {4 * args.size * args.size:,})")


if __name__ == "__main__":
    main()
