"""Clinical-efficacy metrics: every named variant, checked against scikit-learn and by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from eval.clinical import AVERAGES, LABEL_SETS, MODES, clinical_efficacy, per_label_scores, present_matrix
from prompts.vocabulary import CHEXBERT_LABELS

STATUSES = ("positive", "negative", "uncertain", "blank")


def _random_labels(rng: random.Random, n: int) -> list[dict[str, str]]:
    return [{name: rng.choice(STATUSES) for name in CHEXBERT_LABELS} for _ in range(n)]


def test_every_variant_is_named():
    metrics = clinical_efficacy(_random_labels(random.Random(0), 5), _random_labels(random.Random(1), 5))
    expected = {
        f"ce/{m}/{a}/{s}/{x}"
        for m in MODES
        for a in AVERAGES
        for s in LABEL_SETS
        for x in ("precision", "recall", "f1")
    }
    assert set(metrics) == expected and len(expected) == 36


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("set_name", list(LABEL_SETS))
def test_averages_match_scikit_learn(mode, set_name):
    rng = random.Random(42)
    predicted, reference = _random_labels(rng, 40), _random_labels(rng, 40)
    metrics = clinical_efficacy(predicted, reference)
    names = LABEL_SETS[set_name]
    pred, ref = present_matrix(predicted, mode, names), present_matrix(reference, mode, names)
    for average, sklearn_average in (("micro", "micro"), ("macro", "macro"), ("example", "samples")):
        p, r, f, _ = precision_recall_fscore_support(ref, pred, average=sklearn_average, zero_division=0)
        prefix = f"ce/{mode}/{average}/{set_name}"
        assert metrics[f"{prefix}/precision"] == pytest.approx(p)
        assert metrics[f"{prefix}/recall"] == pytest.approx(r)
        assert metrics[f"{prefix}/f1"] == pytest.approx(f)


def test_example_average_by_hand_and_empty_reports_score_zero():
    blank = dict.fromkeys(CHEXBERT_LABELS, "blank")
    both_effusion = {**blank, "Pleural Effusion": "positive"}
    half = {**blank, "Pleural Effusion": "positive", "Edema": "positive"}
    # Report 1: tp=1, fp=1 -> F1 2/3. Report 2: nothing on either side -> 0 (PromptMRG's convention).
    metrics = clinical_efficacy([half, blank], [both_effusion, blank])
    assert metrics["ce/pos/example/all14/f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["ce/pos/example/all14/precision"] == pytest.approx(0.25)
    assert metrics["ce/pos/example/all14/recall"] == pytest.approx(0.5)


def test_uncertain_counts_only_in_pos_unc():
    blank = dict.fromkeys(CHEXBERT_LABELS, "blank")
    predicted = [{**blank, "Edema": "uncertain"}]
    reference = [{**blank, "Edema": "positive"}]
    metrics = clinical_efficacy(predicted, reference)
    assert metrics["ce/pos/micro/top5/f1"] == 0.0
    assert metrics["ce/pos_unc/micro/top5/f1"] == 1.0


def test_per_label_scores_give_support_per_label():
    blank = dict.fromkeys(CHEXBERT_LABELS, "blank")
    rows = per_label_scores([{**blank, "Edema": "positive"}], [{**blank, "Edema": "positive"}], "pos")
    by_label = {row["label"]: row for row in rows}
    assert by_label["Edema"]["f1"] == 1.0 and by_label["Edema"]["support"] == 1
    assert by_label["Cardiomegaly"]["support"] == 0 and by_label["Cardiomegaly"]["f1"] == 0.0
    assert [row["label"] for row in rows] == list(CHEXBERT_LABELS)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        clinical_efficacy(_random_labels(random.Random(0), 2), _random_labels(random.Random(0), 1))


def test_present_matrix_shape_on_empty_input():
    assert present_matrix([], "pos", CHEXBERT_LABELS).shape == (0, 14)
    assert np.asarray(present_matrix([{"Edema": "positive"}], "pos", ("Edema",))).all()
