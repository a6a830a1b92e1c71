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
    assert {"nlg/meteor", "nlg/cider", "nlg/rouge_l", "nlg/bleu4"} <= set(metrics)
    rows = list(csv.DictReader((tmp_path / "out" / "per_label.csv").open()))
    assert len(rows) == 28 and rows[0]["labeler"] == "rules"
    labelled = [
        json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    ]
    assert labelled[0]["labels"]["rules"]["prediction"]["Pleural Effusion"] == "positive"
    out = capsys.readouterr()
    assert "labeler: rules" in out.out and "meteor" in out.out and "cider" in out.out
    assert "report.html" in out.err


def test_without_java_meteor_is_named_as_not_computed_and_the_rest_is_scored(tmp_path, capsys, monkeypatch):
    from eval import meteor

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(meteor, "_shared", None)
    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["--predictions", str(source), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "nlg/meteor" not in metrics and "install a Java runtime" in metrics["not_computed"]["nlg/meteor"]
    assert "nlg/cider" in metrics
    out = capsys.readouterr()
    assert "meteor      n/a" in out.out and "not computed: nlg/meteor" in out.err


def test_a_folder_that_is_not_a_bundle_is_a_plain_error(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path / "nothing"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "rrg-eval: error:" in capsys.readouterr().err


def test_report_html_has_the_plots_the_disclaimer_and_escaped_worst_cases(tmp_path):
    rows = [*ROWS, {"id": "c", "prediction": "<script>alert(1)</script> Edema.", "reference": "No edema."}]
    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--predictions", str(source), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    assert "not for clinical use" in page
    assert page.count("<svg") == 2  # per-label F1 bars, length histogram
    assert page.count("<caption>") == 14  # a status confusion table per label
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Worst first: b and c (example F1 0; ties by BLEU-4, then id) before a (F1 1).
    worst = page.split("Worst cases")[1]
    assert worst.index("Mild cardiomegaly.") < worst.index("&lt;script&gt;") < worst.index("Small left pleural")
    assert "Edema: positive vs negative" in worst
    scored = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert set(scored[0]["scores"]) == {"example_f1", "bleu4", "meteor", "cider"}
    assert scored[0]["scores"]["example_f1"] == 1.0
