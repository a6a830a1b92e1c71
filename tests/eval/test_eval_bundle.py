"""`rrg-eval --bundle` and `--baseline`: predictions for a data split, scored like score-only mode."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from eval.cli import main
from eval.generation import majority_report
from rrg.bundle import Bundle
from rrg.data.manifest import read_manifest


def _read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _split_ids(data: Path, split: str) -> list[str]:
    return [r["id"] for r in read_manifest(data) if r["split"] == split]


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([*map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bundle_mode_drafts_every_test_study_and_writes_named_metrics(
    micro_data, micro_bundle, tmp_path, capsys
):
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        capsys,
        "--bundle",
        micro_bundle,
        "--data",
        micro_data,
        "--split",
        "test",
        "--out",
        out,
        "--max-tokens",
        8,
    )
    assert code == 0, stderr
    predictions = _read_lines(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == _split_ids(micro_data, "test")
    train_ids = set(_split_ids(micro_data, "train"))
    for p in predictions:
        assert isinstance(p["prediction"], str) and p["reference"]
        assert p["neighbors"] and set(p["neighbors"]) <= train_ids
        assert "rules" in p["labels"]
    metrics = json.loads((out / "metrics.json").read_text())
    bundle = Bundle.open(micro_bundle)
    assert metrics["labeler"] == "rules" and metrics["reports"] == len(predictions)
    assert metrics["source"]["kind"] == "bundle" and metrics["source"]["bundle"] == str(micro_bundle)
    assert bundle.config.demo and metrics["notice"] == bundle.config.notice
    for mode in ("pos", "pos_unc"):
        for average in ("example", "micro", "macro"):
            for labels in ("all14", "top5"):
                assert f"ce/{mode}/{average}/{labels}/f1" in metrics
    assert all(0.0 <= metrics[f"nlg/bleu{n}"] <= 1.0 for n in range(1, 5))
    assert "bleu4" in stdout and "cider" in stdout and "meteor" in stdout


def test_limit_keeps_the_first_studies_of_the_split(micro_data, micro_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = _run(
        capsys, "--bundle", micro_bundle, "--data", micro_data, "--out", out, "--limit", 3, "--max-tokens", 4
    )
    assert code == 0, stderr
    assert [p["id"] for p in _read_lines(out / "predictions.jsonl")] == _split_ids(micro_data, "test")[:3]
    assert json.loads((out / "metrics.json").read_text())["reports"] == 3


def test_majority_baseline_gives_every_study_the_most_frequent_train_report(micro_data, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = _run(capsys, "--baseline", "majority", "--data", micro_data, "--out", out)
    assert code == 0, stderr
    counts = Counter(
        " ".join(r["report"].split()) for r in read_manifest(micro_data) if r["split"] == "train"
    )
    top = max(counts.values())
    expected = min(text for text, count in counts.items() if count == top)
    predictions = _read_lines(out / "predictions.jsonl")
    assert len(predictions) == len(_split_ids(micro_data, "test"))
    assert {p["prediction"] for p in predictions} == {expected}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"]["kind"] == "majority baseline" and "nlg/bleu1" in metrics


def test_majority_report_normalises_whitespace_and_breaks_ties_by_smallest_text(tmp_path):
    rows = [
        ("train", "No  acute\ndisease."),
        ("train", "No acute disease."),
        ("train", "Effusion."),
        ("train", "Cardiomegaly."),
        ("train", "Cardiomegaly."),
        ("test", "Effusion."),
        ("test", "Effusion."),
    ]
    manifest = [{"id": str(i), "split": s, "report": r, "image": f"{i}.png"} for i, (s, r) in enumerate(rows)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    # Two each after normalisation; test reports do not count.
    assert majority_report(tmp_path) == "Cardiomegaly."


def test_nearest_baseline_predicts_the_report_of_a_training_study_in_the_index(
    micro_data, micro_bundle, tmp_path, capsys
):
    out = tmp_path / "out"
    code, _, stderr = _run(
        capsys,
        "--baseline",
        "nearest",
        "--bundle",
        micro_bundle,
        "--data",
        micro_data,
        "--out",
        out,
        "--batch-size",
        3,
    )
    assert code == 0, stderr
    index_reports = {r["id"]: r["report"] for r in _read_lines(micro_bundle / "index" / "reports.jsonl")}
    train_ids = set(_split_ids(micro_data, "train"))
    predictions = _read_lines(out / "predictions.jsonl")
    assert len(predictions) == len(_split_ids(micro_data, "test"))
    for p in predictions:
        top = p["neighbors"][0]
        assert top in train_ids and p["prediction"] == index_reports[top]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"]["kind"] == "nearest baseline"
    assert metrics["notice"] == Bundle.open(micro_bundle).config.notice
    # Its neighbours are judged by their labels, from the data folder's manifest.
    assert metrics["retrieval/queries"] == len(predictions)
    assert 0 <= metrics["retrieval/mean_top1_hamming"] <= 56
    assert 0 <= metrics["retrieval/label_precision@1"] <= 1


def test_score_only_mode_adds_bleu_and_names_its_source(tmp_path, capsys):
    source = tmp_path / "p.jsonl"
    source.write_text(
        json.dumps({"id": "a", "prediction": "Heart size normal.", "reference": "Heart size normal."})
    )
    code, stdout, stderr = _run(capsys, "--predictions", source, "--out", tmp_path / "out")
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["source"] == {"kind": "predictions", "path": str(source)}
    assert metrics["nlg/bleu1"] == pytest.approx(1.0, abs=1e-6) and "notice" not in metrics
    assert "bleu1" in stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--baseline", "nearest", "--predictions", "p.jsonl"], "takes no --bundle, --server or --baseline"),
        (["--server", "http://localhost:8000", "--bundle", "b"], "drafts through the server's own bundle"),
        (["--baseline", "majority", "--bundle", "b"], "needs no bundle"),
        (["--labeler", "both"], "--labeler both needs --chexbert-weights"),
        (["--labeler", "chexbert"], "needs --chexbert-weights"),
        (["--limit", "0"], "must be a positive integer"),
    ],
)
def test_unavailable_or_conflicting_options_are_refused_plainly(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_split_is_a_clear_error(micro_data, tmp_path, capsys):
    code, _, stderr = _run(
        capsys, "--baseline", "majority", "--data", micro_data, "--split", "dev", "--out", tmp_path
    )
    assert code == 2
    assert "rrg-eval: error: no studies in split 'dev'" in stderr and "test, train, val" in stderr


def test_missing_bundle_folder_is_a_clear_error(micro_data, tmp_path, capsys):
    code, _, stderr = _run(
        capsys, "--bundle", tmp_path / "nothing", "--data", micro_data, "--out", tmp_path / "o"
    )
    assert code == 2 and "rrg-eval: error:" in stderr and "not a complete rrg bundle" in stderr


def test_unreadable_image_names_its_study(micro_bundle, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    record = {"id": "s1", "split": "test", "report": "Normal.", "image": "broken.png"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    code, _, stderr = _run(
        capsys,
        "--baseline",
        "nearest",
        "--bundle",
        micro_bundle,
        "--data",
        tmp_path,
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and "rrg-eval: error: study s1: cannot read image" in stderr


def test_a_rerun_with_a_smaller_limit_scores_fewer_and_loses_no_finished_prediction(micro_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(capsys, "--baseline", "majority", "--data", micro_data, "--out", out)[0] == 0
    every = [p["id"] for p in _read_lines(out / "predictions.jsonl")]
    code, _, stderr = _run(capsys, "--baseline", "majority", "--data", micro_data, "--out", out, "--limit", 2)
    assert code == 0 and "resuming: 2 of 2" in stderr
    assert json.loads((out / "metrics.json").read_text())["reports"] == 2
    lines = _read_lines(out / "predictions.jsonl")
    assert [p["id"] for p in lines] == every  # the two scored first, the rest kept after them
    assert "labels" in lines[0] and "labels" not in lines[-1]
