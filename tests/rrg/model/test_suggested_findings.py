"""The findings the heads suggest to the language model: threshold tuning, the prompt line, the bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from prompts.instructions import after_image, report_cue
from prompts.vocabulary import CHEXBERT_LABELS
from rrg.bundle import Bundle, OutdatedBundleError
from rrg.data.imaging import load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter
from rrg.model.suggested_findings import (
    NEVER,
    example_f1,
    finding_names,
    suggest,
    tune_thresholds,
    with_no_finding,
)

CARDIOMEGALY = CHEXBERT_LABELS.index("Cardiomegaly")
FRACTURE = CHEXBERT_LABELS.index("Fracture")
NO_FINDING = CHEXBERT_LABELS.index("No Finding")


def _studies(count: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half cardiomegaly (the heads separate it: 0.6-0.9 vs 0.1-0.4), a fracture the heads cannot see."""
    rng = np.random.default_rng(seed)
    positives = np.zeros((count, 14), dtype=bool)
    positives[: count // 2, CARDIOMEGALY] = True
    positives[rng.random(count) < 0.1, FRACTURE] = True
    positives = with_no_finding(positives)
    probabilities = rng.random((count, 14)) * 0.3
    probabilities[:, CARDIOMEGALY] = np.where(positives[:, CARDIOMEGALY], 0.6, 0.1) + rng.random(count) * 0.3
    probabilities[:, FRACTURE] = rng.random(count)  # noise
    return probabilities, positives


def test_example_f1_counts_no_finding_and_scores_empty_studies_zero():
    reference = np.array([[True, False], [False, True], [False, False]])
    predicted = np.array([[True, False], [True, True], [False, False]])
    # Study 1: F1 1; study 2: tp 1, fp 1 -> 2/3; study 3: nothing on either side -> 0.
    assert example_f1(predicted, reference) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_tuning_suggests_a_separable_finding_and_never_a_noisy_one():
    probabilities, positives = _studies()
    thresholds = tune_thresholds(probabilities, positives)
    assert 0.4 <= thresholds[CARDIOMEGALY] < 0.6
    assert thresholds[FRACTURE] == NEVER and thresholds[NO_FINDING] == NEVER
    tuned = example_f1(with_no_finding(suggest(probabilities, thresholds)), positives)
    never = example_f1(with_no_finding(suggest(probabilities, np.full(14, NEVER))), positives)
    assert tuned > never + 0.3
    # It holds on studies the tuning has not seen.
    fresh_probabilities, fresh_positives = _studies(seed=1)
    suggested = suggest(fresh_probabilities, thresholds)
    assert (suggested[:, CARDIOMEGALY] == fresh_positives[:, CARDIOMEGALY]).all()


def test_no_finding_is_never_suggested_and_names_read_as_the_prompt_writes_them():
    probabilities = np.full((1, 14), 0.99)
    assert suggest(probabilities, np.full(14, 0.5))[0, NO_FINDING] == np.False_
    row = np.zeros(14, dtype=bool)
    row[[CARDIOMEGALY, CHEXBERT_LABELS.index("Pleural Effusion"), NO_FINDING]] = True
    assert finding_names(row) == ["cardiomegaly", "pleural effusion"]


def test_the_prompt_names_the_findings_or_says_none():
    heading = "Findings suggested by the image:"
    text = after_image("Write it.", ["cardiomegaly", "pleural effusion"], ["Prior one."], heading, "Priors:")
    assert text.splitlines() == [
        "</Img> Write it.", "Findings suggested by the image: cardiomegaly, pleural effusion.", "Priors:",
        "1. Prior one.", "Assistant:",
    ]
    assert "Findings suggested by the image: none." in after_image("Write it.", [], [], heading, "Priors:")


def test_findings_last_puts_the_line_just_before_the_answer_as_the_base_model_learned_it():
    heading = "Findings suggested by the image:"
    text = after_image("Write it.", ["pleural effusion"], ["Prior one."], heading, "Priors:", findings_last=True)
    assert text.splitlines() == [
        "</Img> Write it.", "Priors:", "1. Prior one.", "Findings suggested by the image: pleural effusion.", "Assistant:",
    ]
    assert text.endswith(report_cue(["pleural effusion"], heading))  # what the language stage trains on


def test_bundle_thresholds_decide_the_findings_in_the_prompt(micro_bundle, micro_data):
    bundle = Bundle.open(micro_bundle)
    summary = bundle.facts["training_summary"]["vision"]
    assert "val_example_f1_of_suggestions" in summary and "suggestion_thresholds" in summary
    drafter = Drafter(bundle)
    image = load_image(micro_data / read_manifest(micro_data)[0]["image"]).pixels
    plan = drafter.plan([image])[0]
    expected = [name.lower() for name, p in plan.findings.items()
                if name != "No Finding" and p > float(drafter.heads.thresholds[CHEXBERT_LABELS.index(name)])]
    assert plan.suggested == expected
    # Lowering every threshold names every finding the heads see, and the prompt grows with them.
    drafter.heads.thresholds.fill_(0.0)
    every = drafter.plan([image])[0]
    assert every.suggested == [name.lower() for name in CHEXBERT_LABELS if name != "No Finding"]
    assert len(every.prompt_embeds) > len(plan.prompt_embeds)
    # A findings line given in place of the heads' (the diagnostic of bench/demo_quality.py).
    given = drafter.plan([image], findings=[["pleural effusion"]])[0]
    assert given.suggested == ["pleural effusion"]
    with pytest.raises(ValueError, match="findings lines"):
        drafter.plan([image, image], findings=[["pleural effusion"]])


def test_a_bundle_of_the_older_format_is_refused_with_the_fix(micro_bundle, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(micro_bundle, old)
    config = json.loads((old / "config.json").read_text())
    del config["format"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(OutdatedBundleError, match="rrg train --force"):
        Bundle.open(old)


def test_findings_first_moves_finding_sentences_ahead_keeping_every_word():
    from rrg.data.training_data import findings_first

    report = "The heart is normal in size. The lungs are clear. Small left pleural effusion. No pneumothorax."
    assert findings_first(report) == (
        "Small left pleural effusion. The heart is normal in size. The lungs are clear. No pneumothorax."
    )
    normal = "The heart is normal in size. The lungs are clear."
    assert findings_first(normal) == normal
