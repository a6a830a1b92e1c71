"""`rrg data demo`: a small annotation file becomes a labelled, rendered, captioned demo set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prompts.vocabulary import CHEXBERT_LABELS
from rrg.cli import main
from rrg.data.imaging import load_image
from rrg.data.manifest import MANIFEST, read_manifest
from rrg.demo.data import demo_exists

ANNOTATION = {
    "train": [
        {"id": "CXR1_IM-1", "report": "Large right pleural effusion. Heart size normal.", "image_path": []},
        {"id": "CXR2_IM-2", "report": "The heart is normal in size. The lungs are clear.", "image_path": []},
        {"id": "CXR3_IM-3", "report": "Mild cardiomegaly. Left lower lobe atelectasis.", "image_path": []},
    ],
    "val": [{"id": "CXR4_IM-4", "report": "Small left apical pneumothorax.", "image_path": []}],
    "test": [{"id": "CXR5_IM-5", "report": "Right PICC with tip in the SVC. No effusion.", "image_path": []}],
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    annotation = folder / "annotation.json"
    annotation.write_text(json.dumps(ANNOTATION))
    out = folder / "set"
    argv = [
        "-q",
        "data",
        "demo",
        "--out",
        str(out),
        "--annotation",
        str(annotation),
        "--size",
        "96",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    return out


def test_manifest_has_every_study_with_labels_triplets_and_its_split(demo):
    records = {r["id"]: r for r in read_manifest(demo)}
    assert {r["split"] for r in records.values()} == {"train", "val", "test"}
    assert records["CXR4_IM-4"]["split"] == "val" and records["CXR5_IM-5"]["split"] == "test"
    effusion = records["CXR1_IM-1"]
    assert list(effusion["labels"]) == list(CHEXBERT_LABELS)
    assert effusion["labels"]["Pleural Effusion"] == "positive"
    assert {"entity": "effusion", "position": "right_pleural", "exist": 1} in effusion["triplets"]
    assert records["CXR2_IM-2"]["labels"]["No Finding"] == "positive"


def test_every_image_is_a_phantom_png_of_the_requested_size(demo):
    for record in read_manifest(demo):
        decoded = load_image(demo / record["image"])
        assert decoded.source_format == "png" and decoded.original_size == (96, 96)
        assert 0.05 < float(np.mean(decoded.pixels)) < 0.95


def test_demo_says_it_is_synthetic_everywhere_a_user_looks(demo):
    summary = json.loads((demo / "demo.json").read_text())
    assert summary["demo"] is True and "SYNTHETIC" in summary["notice"]
    assert summary["studies"] == {"train": 3, "val": 1, "test": 1}
    assert "phantom" in (demo / "README.md").read_text()
    assert (demo / "gallery.png").stat().st_size > 1000


def test_a_finished_set_is_not_rebuilt_and_a_partial_one_is_not_finished(demo, capsys):
    before = (demo / MANIFEST).stat().st_mtime_ns
    assert main(["data", "demo", "--out", str(demo)]) == 0
    assert "already built" in capsys.readouterr().err
    assert (demo / MANIFEST).stat().st_mtime_ns == before
    partial = demo.parent / "partial"
    (partial / "images").mkdir(parents=True)
    assert not demo_exists(partial)


def test_a_set_of_older_phantoms_is_built_again_without_its_image_cache(demo, tmp_path):
    import shutil

    from rrg.data.image_cache import build_image_cache, cache_dir

    older = tmp_path / "older"
    shutil.copytree(demo, older)
    build_image_cache(older, 32, workers=1, progress=False, log=lambda _: None)
    summary = json.loads((older / "demo.json").read_text())
    assert summary["phantom_version"] >= 2 and demo_exists(older)
    (older / "demo.json").write_text(json.dumps({**summary, "phantom_version": 1}))
    assert not demo_exists(older)
    argv = ["-q", "data", "demo", "--out", str(older), "--annotation", str(demo.parent / "annotation.json"),
            "--size", "96", "--workers", "1"]
    assert main(argv) == 0
    assert demo_exists(older)
    assert not cache_dir(older, 32).exists()  # the cache of the old images is gone with them
