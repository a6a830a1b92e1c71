"""`rrg-eval --predictions`: score-only mode writes named metrics and says what it did not compute."""

from __future__ import annotations

import csv
import json

import pytest

from eval.cli import main

ROWS = [
    {"id": "a", "prediction": "Small left pleural effusion.", "reference": "Small left pleural effusion."},
    {"id": "b", "prediction": "Mild cardiomegaly.", "reference": "The heart is normal in size. Lungs clear."},
]


def test_score_only_mode_writes_metrics_per_label_and_labelled_predictions(tmp_path, capsys):
    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["--predictions", str(source), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["labeler"] == "rules" and metrics["reports"] == 2
    # Effusion agrees; cardiomegaly is a false positive; No Finding is a false negative on b.
    assert metrics["ce/pos/micro/all14/precision"] == pytest.approx(0.5)
    assert metrics["ce/pos/micro/all14/recall"] == pytest.approx(0.5)
    assert "not implemented yet" in metrics["not_computed"]
    rows = list(csv.DictReader((tmp_path / "out" / "per_label.csv").open()))
    assert len(rows) == 28 and rows[0]["labeler"] == "rules"
    labelled = [
        json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    ]
    assert labelled[0]["labels"]["rules"]["prediction"]["Pleural Effusion"] == "positive"
    out = capsys.readouterr()
    assert "labeler: rules" in out.out and "NLG metrics" in out.err


def test_a_folder_that_is_not_a_bundle_is_a_plain_error(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path / "nothing"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "rrg-eval: error:" in capsys.readouterr().err
