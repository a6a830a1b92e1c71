"""The image cache: a data set's images decoded once into uint8 shards, the same pixels as decoding the
file for the model, resumable shard by shard, bad images listed and skipped, read back by workers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from rrg.data import image_cache
from rrg.data.image_cache import CachedImages, build_image_cache, cache_dir
from rrg.data.imaging import decode_side, load_image, to_model_input
from rrg.data.manifest import write_manifest
from rrg.data.training_data import load_split

SIZE = 32


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def data_set(tmp_path, make_dicom):
    """Ten studies: PNGs and JPEGs of varied sizes, a DICOM, a corrupt file and a missing one."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    records = []
    for i in range(10):
        name = f"images/s{i}"
        if i == 3:
            name += ".dcm"
            (tmp_path / name).write_bytes(make_dicom(rng.random((48, 40)).astype(np.float32)))
        elif i == 5:
            name += ".png"
            (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n not really")
        elif i == 7:
            name += ".png"  # never written: missing
        elif i % 2:
            name += ".jpg"
            Image.fromarray((rng.random((700, 600)) * 255).astype(np.uint8)).save(tmp_path / name, quality=90)
        else:
            name += ".png"
            (tmp_path / name).write_bytes(_png((rng.random((48 + i, 64)) * 255).astype(np.uint8)))
        records.append({"id": f"s{i}", "split": "train" if i < 8 else "val", "report": f"Report {i}. Lungs clear.",
                        "image": name, "labels": {}, "triplets": []})
    write_manifest(tmp_path, records)
    return tmp_path, records


def test_cached_images_are_the_model_inputs_of_their_files(data_set):
    folder, records = data_set
    cache = build_image_cache(folder, SIZE, workers=2, progress=False, log=lambda _: None)
    assert cache == cache_dir(folder, SIZE)
    readable = [row for row in range(10) if row not in (5, 7)]
    images = CachedImages(cache, readable)
    for position, row in enumerate(readable):
        expected = to_model_input(load_image(folder / records[row]["image"], longest_side=decode_side(SIZE)), SIZE)
        assert torch.equal(images[position][0], torch.from_numpy(expected))
    skipped = CachedImages.skipped(cache)
    assert set(skipped) == {5, 7}
    assert "TruncatedImageError" in skipped[5] and "FileNotFoundError" in skipped[7]


def test_a_killed_build_resumes_at_the_missing_shard_and_a_new_manifest_rebuilds(data_set, monkeypatch):
    folder, records = data_set
    monkeypatch.setattr(image_cache, "SHARD", 4)  # three shards: 4 + 4 + 2 images
    cache = build_image_cache(folder, SIZE, workers=1, progress=False, log=lambda _: None)
    first = (cache / "shard-00000.npy").stat().st_mtime_ns
    # As a kill after the first shard: the last two shards and the index were never written.
    for name in ("shard-00001.npy", "shard-00001.json", "shard-00002.npy", "cache.json"):
        (cache / name).unlink()
    messages = []
    build_image_cache(folder, SIZE, workers=1, progress=False, log=messages.append)
    assert (cache / "shard-00000.npy").stat().st_mtime_ns == first  # not decoded again
    assert any("resuming, 1 of 3 shards already built" in m for m in messages)
    assert json.loads((cache / "cache.json").read_text())["shards"] == 3
    write_manifest(folder, records[:6])
    messages.clear()
    build_image_cache(folder, SIZE, workers=1, progress=False, log=messages.append)
    assert any("another manifest" in m for m in messages)
    assert json.loads((cache / "cache.json").read_text())["images"] == 6


def test_dataloader_workers_give_the_batches_that_direct_reads_give(data_set):
    folder, _ = data_set
    cache = build_image_cache(folder, SIZE, workers=2, progress=False, log=lambda _: None)
    images = CachedImages(cache, [0, 1, 2, 3, 4, 6, 8, 9])
    order = [np.array([3, 0, 5]), np.array([7, 1]), np.array([2, 4, 6])]
    read_ahead = list(images.batches(order, workers=2))
    assert [list(batch) for batch, _ in read_ahead] == [list(b) for b in order]
    for batch, pixels in read_ahead:
        assert pixels.shape == (len(batch), 1, SIZE, SIZE) and torch.equal(pixels, images[batch])
    assert torch.equal(torch.cat(list(images.in_order(3, workers=2))), images[np.arange(len(images))])


def test_a_split_leaves_out_studies_whose_image_cannot_be_read_and_says_so(data_set):
    folder, _ = data_set
    messages = []
    train = load_split(folder, "train", SIZE, progress=False, log=messages.append)
    assert train.ids == ["s0", "s1", "s2", "s3", "s4", "s6"] and len(train.images) == 6
    assert any("train: 2 studies left out" in m for m in messages)
    assert train.images[np.arange(6)].shape == (6, 1, SIZE, SIZE)


def test_images_of_sizes_no_radiograph_has_are_listed_with_the_size(tmp_path):
    (tmp_path / "images").mkdir()
    sizes = {"thumbnail": (20, 24), "strip": (40, 400), "film": (300, 250)}  # (height, width)
    for name, shape in sizes.items():
        (tmp_path / f"images/{name}.png").write_bytes(_png(np.full(shape, 128, np.uint8)))
    write_manifest(tmp_path, [{"id": name, "split": "train", "report": "Lungs clear.", "image": f"images/{name}.png",
                               "labels": {}, "triplets": []} for name in sizes])
    skipped = CachedImages.skipped(build_image_cache(tmp_path, SIZE, workers=1, progress=False, log=lambda _: None))
    assert skipped == {
        0: "NotARadiographError: 24 x 20 px is smaller than a radiograph (32 px a side at least)",
        1: "NotARadiographError: 400 x 40 px is not a radiograph's shape (sides more than 3:1)",
    }
