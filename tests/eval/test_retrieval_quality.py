"""Retrieved references judged by their labels: hand-made studies with known answers."""

from __future__ import annotations

import json

import pytest

from eval.retrieval_quality import retrieval_lines, retrieval_quality

NORMAL = {"No Finding": "positive"}
EFFUSION = {"Pleural Effusion": "positive", "Cardiomegaly": "negative"}
FRACTURE = {"Fracture": "positive"}


def _manifest(tmp_path, studies):
    lines = [json.dumps({"id": i, "split": s, "report": "r", "image": f"{i}.png", "labels": labels})
             for i, s, labels in studies]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_label_agreement_of_retrieved_neighbours(tmp_path):
    # 25 normal training studies, one effusion, one fracture: both findings are tail labels (< 5 %).
    train = [(f"n{i}", "train", NORMAL) for i in range(25)] + [("e", "train", EFFUSION), ("f", "train", FRACTURE)]
    data = _manifest(tmp_path, [*train, ("q1", "test", NORMAL), ("q2", "test", EFFUSION), ("q3", "test", FRACTURE)])
    records = [
        {"id": "q1", "neighbors": ["n0", "e"]},  # exact, then off by 3 statuses
        {"id": "q2", "neighbors": ["n1", "e"]},  # the effusion only second
        {"id": "q3", "neighbors": ["n2", "n3"]},  # the fracture never
        {"id": "baseline-row-without-neighbours"},
    ]
    metrics = retrieval_quality(records, data)
    assert metrics["retrieval/queries"] == 3
    # q1 -> n0: 0; q2 -> n1: No Finding, Effusion and Cardiomegaly differ, 3 statuses x 2 entries = 6;
    # q3 -> n2: No Finding and Fracture differ = 4.
    assert metrics["retrieval/mean_top1_hamming"] == pytest.approx((0 + 6 + 4) / 3, abs=1e-4)
    assert metrics["retrieval/label_precision@1"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["retrieval/label_precision@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3, abs=1e-4)
    assert set(metrics["retrieval/tail_labels"]) == {"Pleural Effusion", "Fracture"}
    assert metrics["retrieval/tail_recall@2/Pleural Effusion"] == 1.0
    assert metrics["retrieval/tail_recall@2/Fracture"] == 0.0
    assert metrics["retrieval/tail_recall@2/macro"] == 0.5
    assert any("mean_top1_hamming" in line for line in retrieval_lines(metrics))


def test_no_neighbours_no_retrieval_metrics_and_unknown_ids_are_refused(tmp_path):
    data = _manifest(tmp_path, [("a", "train", NORMAL), ("q", "test", NORMAL)])
    assert retrieval_quality([{"id": "q", "prediction": "x"}], data) == {}
    assert retrieval_lines({}) == []
    with pytest.raises(ValueError, match="not studies of"):
        retrieval_quality([{"id": "q", "neighbors": ["elsewhere"]}], data)
