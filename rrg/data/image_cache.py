"""A data set's images, decoded once: uint8 squares at the model's input size, in shards on disk.

Decoding is the slow part of reading a radiograph (a 2,500 x 3,000 MIMIC JPEG or a 16-bit DICOM), and
a data set is read many times: every training run, every resumed run, every index build and eval.
`build_image_cache` decodes each image of a manifest once into the model's input (`rrg.data.imaging`'s
`to_model_input`: shrunk while decoding, windowed, fitted to a square of the config's size, 8 bits) into shards of `SHARD` images, in parallel
processes; `CachedImages` reads them back through memory maps, one row or a batch at a time, and
through a torch `DataLoader` whose workers gather batches while the model trains.

    <data>/image_cache/<size>px/
        cache.json               what the cache holds: size, the manifest's fingerprint, shards (written last)
        shard-00000.npy          (SHARD, size, size) uint8 of the manifest's records 0 .. SHARD - 1
        shard-00000.json         which of those rows are images, and why the others are not

A shard is written whole or not at all (`rrg.paths.write_atomically`), so a killed build resumes at
the first missing shard and never decodes an image twice. An image that cannot be read (missing,
corrupt, a size no chest radiograph has) is listed with its reason and skipped: a multi-hour build
never stops for one bad file. A changed manifest gets a new cache (the old one is replaced).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from rrg.data.imaging import ImageError, decode_side, load_image, to_8_bits, to_model_input
from rrg.data.manifest import MANIFEST
from rrg.paths import write_atomically

CACHE_FOLDER = "image_cache"
SHARD = 1024  # images per shard: 16 MiB at 128 px, 49 MiB at 224 px
FORMAT = 1
_INDEX = "cache.json"
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
# What a chest radiograph's image can be: at least this many pixels a side (the smallest detector images
# are thousands; rrg's phantoms for tests are 64) and no longer than this many times its width or height.
MIN_SIDE = 32
MAX_ASPECT = 3.0


class NotARadiographError(ValueError):
    """An image whose size no chest radiograph has (a thumbnail, a strip): training on it would be noise."""


def check_radiograph_size(height: int, width: int) -> None:
    """Refuse sizes no chest radiograph has, naming the size."""
    if min(height, width) < MIN_SIDE:
        raise NotARadiographError(f"{width} x {height} px is smaller than a radiograph ({MIN_SIDE} px a side at least)")
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise NotARadiographError(f"{width} x {height} px is not a radiograph's shape (sides more than {MAX_ASPECT:g}:1)")


def cache_dir(data: str | Path, size: int) -> Path:
    """Where a data set's images at `size` pixels are cached."""
    return Path(data) / CACHE_FOLDER / f"{size}px"


def manifest_fingerprint(data: str | Path) -> str:
    """A hash of the manifest: a cache built from another manifest is not this one's."""
    digest = hashlib.sha256()
    with open(Path(data) / MANIFEST, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class _ShardJob:
    number: int
    paths: tuple[str, ...]
    size: int
    folder: str


def _shard_file(folder: Path, number: int, suffix: str) -> Path:
    return folder / f"shard-{number:05d}{suffix}"


def _build_shard(job: _ShardJob) -> tuple[int, dict[str, str]]:
    """Decode one shard's images and write it; (its number, {row: why it is not an image})."""
    folder = Path(job.folder)
    pixels = np.zeros((len(job.paths), job.size, job.size), dtype=np.uint8)
    bad: dict[str, str] = {}
    for row, path in enumerate(job.paths):
        try:
            decoded = load_image(path, longest_side=decode_side(job.size))
            check_radiograph_size(*decoded.original_size)
            pixels[row] = to_8_bits(to_model_input(decoded, job.size))
        except (ImageError, NotARadiographError, OSError) as error:
            # The reason only: our errors carry sizes and formats, never pixels or tags.
            bad[str(row)] = type(error).__name__ if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
    write_atomically(_shard_file(folder, job.number, ".npy"), lambda partial: _save_npy(partial, pixels))
    write_atomically(_shard_file(folder, job.number, ".json"), lambda partial: partial.write_text(json.dumps(bad)))
    return job.number, bad


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file handle: np.save would add ".npy" to the partial's name
        np.save(handle, array)


def build_image_cache(
    data: str | Path, size: int, workers: int = DEFAULT_WORKERS, progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """The folder of the data set's image cache at `size` pixels, building (or finishing) it if need be."""
    data = Path(data)
    records = _manifest_images(data)
    folder = cache_dir(data, size)
    fingerprint = manifest_fingerprint(data)
    index = folder / _INDEX
    if index.is_file():
        meta = json.loads(index.read_text())
        if meta.get("fingerprint") == fingerprint and meta.get("format") == FORMAT:
            return folder
        log(f"{folder} was built from another manifest: building it again")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = folder / "building.json"  # the fingerprint a partial build belongs to
    if started.is_file() and json.loads(started.read_text()).get("fingerprint") != fingerprint:
        shutil.rmtree(folder)
        folder.mkdir(parents=True)
    write_atomically(started, lambda partial: partial.write_text(json.dumps({"fingerprint": fingerprint})))

    shards = -(-len(records) // SHARD)
    jobs = [
        _ShardJob(n, tuple(str(data / r) for r in records[n * SHARD : (n + 1) * SHARD]), size, str(folder))
        for n in range(shards)
        if not (_shard_file(folder, n, ".npy").is_file() and _shard_file(folder, n, ".json").is_file())
    ]
    if jobs and len(jobs) < shards:
        log(f"{folder}: resuming, {shards - len(jobs)} of {shards} shards already built")
    bar = tqdm(total=len(records), desc=f"caching images at {size} px", unit="image", disable=not progress,
               initial=(shards - len(jobs)) * SHARD if jobs else len(records))
    if jobs:
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
            for number, _ in pool.map(_build_shard, jobs):
                bar.update(min(SHARD, len(records) - number * SHARD))
    bar.close()

    bad = {}
    for n in range(shards):
        bad |= {n * SHARD + int(row): why for row, why in json.loads(_shard_file(folder, n, ".json").read_text()).items()}
    report = {"format": FORMAT, "size": size, "fingerprint": fingerprint, "images": len(records), "shards": shards,
              "skipped": {str(row): why for row, why in sorted(bad.items())}}
    write_atomically(index, lambda partial: partial.write_text(json.dumps(report, indent=1) + "\n"))
    started.unlink(missing_ok=True)
    if bad:
        log(f"{folder}: {len(bad)} of {len(records)} images could not be read and are skipped "
            f"(listed in {index.name}); e.g. row {next(iter(bad))}: {next(iter(bad.values()))}")
    return folder


def studies_images(
    data: str | Path, size: int, studies: Sequence[tuple[int, str, str]], progress: bool = True
) -> CachedImages:
    """The images of some studies of a data set, given as (manifest row, study id, image), at `size` pixels
    from its image cache (built if missing); a ValueError names the first study whose image cannot be read."""
    cache = build_image_cache(data, size, progress=progress, log=lambda message: None)
    skipped = CachedImages.skipped(cache)
    for row, study_id, image in studies:
        if row in skipped:
            raise ValueError(f"study {study_id}: cannot read image {image}: {skipped[row]}")
    return CachedImages(cache, [row for row, _, _ in studies])


def _manifest_images(data: Path) -> list[str]:
    """The image path of every record, in the manifest's order (the cache's row order)."""
    with open(data / MANIFEST, encoding="utf-8") as handle:
        return [json.loads(line)["image"] for line in handle if line.strip()]


class CachedImages(Dataset):
    """Some rows of a data set's image cache, as float32 (1, S, S) in [0, 1]; indexed by position among
    those rows. `images[i]` is one image; `images[indices]` (an array or a slice) a batch (B, 1, S, S)."""

    def __init__(self, folder: str | Path, rows: Sequence[int]):
        self.folder = Path(folder)
        meta = json.loads((self.folder / _INDEX).read_text())
        self.size = meta["size"]
        self.rows = np.asarray(rows, dtype=np.int64)
        self._shards: dict[int, np.ndarray] = {}  # opened on first use, in each process (DataLoader workers)

    @staticmethod
    def skipped(folder: str | Path) -> dict[int, str]:
        """The manifest rows that are not images, and why."""
        meta = json.loads((Path(folder) / _INDEX).read_text())
        return {int(row): why for row, why in meta["skipped"].items()}

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, number: int) -> np.ndarray:
        if number not in self._shards:
            self._shards[number] = np.load(_shard_file(self.folder, number, ".npy"), mmap_mode="r")
        return self._shards[number]

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.size, self.size), dtype=np.uint8)
        for i, row in enumerate(rows):
            out[i] = self._shard(int(row) // SHARD)[int(row) % SHARD]
        return out

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return torch.from_numpy(self._gather(self.rows[[index]])[0]).float().div_(255.0)[None]  # (1, S, S)
        rows = self.rows[index]
        return torch.from_numpy(self._gather(np.atleast_1d(rows))).float().div_(255.0)[:, None]  # (B, 1, S, S)

    def __getstate__(self):  # DataLoader workers open their own memory maps
        return {**self.__dict__, "_shards": {}}

    def batches(
        self, batches: Iterable[np.ndarray], workers: int = 0, pin_memory: bool = False
    ) -> Iterable[tuple[np.ndarray, torch.Tensor]]:
        """(indices, images (B, 1, S, S)) for each batch of indices, in order; with `workers`, read ahead by a
        torch DataLoader's worker processes while the caller computes (into pinned memory for a CUDA copy)."""
        batches = [np.asarray(b, dtype=np.int64) for b in batches]
        if workers == 0:
            for batch in batches:
                yield batch, self[batch]
            return
        # Its own generator: a DataLoader seeds its workers from the global RNG otherwise, and reading images
        # would then change the random draws (dropout, shuffles) of the training that reads them.
        loader = DataLoader(_Batches(self, batches), batch_size=None, num_workers=workers, prefetch_factor=4,
                            persistent_workers=False, pin_memory=pin_memory,
                            generator=torch.Generator(device="cpu").manual_seed(0))
        yield from zip(batches, loader)

    def in_order(self, batch: int = 128, workers: int = 0) -> Iterable[torch.Tensor]:
        """Every image in order, `batch` at a time."""
        starts = range(0, len(self), batch)
        for _, images in self.batches([np.arange(s, min(s + batch, len(self))) for s in starts], workers):
            yield images


class _Batches(Dataset):
    """One item per batch of indices: the DataLoader's workers gather whole batches."""

    def __init__(self, images: CachedImages, batches: list[np.ndarray]):
        self.images, self.batch_list = images, batches

    def __len__(self) -> int:
        return len(self.batch_list)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[self.batch_list[index]]
