"""From MIMIC-CXR-JPG to scored drafts, through the commands a user types (README, "I hold MIMIC-CXR-JPG"):
`rrg data mimic` -> `rrg train --config test-micro` -> `rrg-eval`, on a small fake tree in the real
formats. The images are read once, into the data set's image cache, which training and eval share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rrg.bundle import Bundle
from rrg.data.deidentified import has_marker
from rrg.data.manifest import read_manifest
from tests.rrg.data.fake_mimic import write_fake_mimic

BIN = Path(sys.executable).parent


def _run(*argv: str) -> str:
    result = subprocess.run([str(BIN / argv[0]), *argv[1:]], check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(argv[:3])}: {result.stderr[-3000:]}"
    return result.stderr


@pytest.mark.slow
def test_fake_mimic_tree_to_trained_bundle_to_scored_drafts(tmp_path):
    jpg_root, reports_root = write_fake_mimic(tmp_path / "mimic", {"train": 40, "validate": 8, "test": 8})
    data, bundle, scores = tmp_path / "mimic-set", tmp_path / "bundle", tmp_path / "eval"

    said = _run("rrg", "data", "mimic", "--root", str(jpg_root), "--reports", str(reports_root), "--out", str(data),
                "--workers", "1")
    assert "kept 56 studies" in said
    records = read_manifest(data)
    assert any(has_marker(r["report"]) for r in records), "the fake reports carry MIMIC's ___ markers"

    said = _run("rrg", "-q", "train", "--data", str(data), "--out", str(bundle), "--config", "test-micro")
    cache = json.loads((data / "image_cache" / "32px" / "cache.json").read_text())
    assert cache["images"] == 56 and not cache["skipped"]
    trained = Bundle.open(bundle)
    # Real radiographs, so no phantom notice, whatever the (demo-sized) config was called.
    assert not trained.config.demo and "phantom" not in trained.config.notice.lower()
    assert trained.facts["labeler"] == "mimic-chexpert" and trained.facts["trained_on"]["train_studies"] == 40

    _run("rrg-eval", "--bundle", str(bundle), "--data", str(data), "--out", str(scores), "--max-tokens", "16",
         "--quiet")
    predictions = [json.loads(line) for line in (scores / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [r["id"] for r in records if r["split"] == "test"]
    assert not any(has_marker(p["prediction"]) for p in predictions)
    metrics = json.loads((scores / "metrics.json").read_text())
    assert metrics["reports"] == 8 and 0.0 <= metrics["nlg/bleu4"] <= 1.0
