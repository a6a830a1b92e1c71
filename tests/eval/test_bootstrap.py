"""Paired bootstrap of CE differences (eval/bootstrap.py) and `rrg-eval --compare --bootstrap`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.bootstrap import BOOTSTRAPPED, paired_bootstrap
from eval.cli import main
from eval.clinical import clinical_efficacy
from prompts.vocabulary import CHEXBERT_LABELS


def _labels(*present: str, uncertain: tuple[str, ...] = ()) -> dict[str, str]:
    """A report's 14 statuses: `present` positive, `uncertain` uncertain, the rest blank."""
    return {
        name: "positive" if name in present else "uncertain" if name in uncertain else "blank"
        for name in CHEXBERT_LABELS
    }


# Six studies' reference labels, and two runs' predictions of them: A gets some right, B others.
REFERENCE = {
    "s1": _labels("Cardiomegaly", "Edema"),
    "s2": _labels("Pleural Effusion"),
    "s3": _labels("No Finding"),
    "s4": _labels("Atelectasis", "Lung Opacity", uncertain=("Pneumonia",)),
    "s5": _labels("Support Devices", "Pleural Effusion"),
    "s6": _labels(),
}
PREDICTED_A = {
    "s1": _labels("Cardiomegaly"),
    "s2": _labels("No Finding"),
    "s3": _labels("No Finding"),
    "s4": _labels("Atelectasis"),
    "s5": _labels("Pleural Effusion", "Edema"),
    "s6": _labels("Cardiomegaly"),
}
PREDICTED_B = {
    "s1": _labels("Cardiomegaly", "Edema", "Consolidation"),
    "s2": _labels("Pleural Effusion"),
    "s3": _labels("Lung Opacity"),
    "s4": _labels("Lung Opacity", "Pneumonia"),
    "s5": _labels("Support Devices"),
    "s6": _labels(),
}


def _run(predicted: dict) -> dict:
    return {study: (labels, REFERENCE[study]) for study, labels in predicted.items()}


def test_the_full_sample_difference_is_that_of_the_clinical_efficacy_metrics():
    result = paired_bootstrap(_run(PREDICTED_A), _run(PREDICTED_B), resamples=50)
    ids = sorted(REFERENCE)
    reference = [REFERENCE[i] for i in ids]
    a = clinical_efficacy([PREDICTED_A[i] for i in ids], reference)
    b = clinical_efficacy([PREDICTED_B[i] for i in ids], reference)
    assert result.studies == 6 and result.resamples == 50 and set(result.differences) == set(BOOTSTRAPPED)
    for key in BOOTSTRAPPED:
        assert result.differences[key].observed == pytest.approx(b[key] - a[key], abs=1e-12)
        assert result.differences[key].low <= result.differences[key].high


def test_each_resample_scores_as_clinical_efficacy_scores_the_drawn_studies():
    # The vectorised resamples against a plain loop over the same draws (the seeded Generator's).
    resamples = 40
    result = paired_bootstrap(_run(PREDICTED_A), _run(PREDICTED_B), resamples=resamples, seed=7)
    ids = sorted(REFERENCE)
    draws = np.random.default_rng(7).integers(0, len(ids), size=(resamples, len(ids)))
    looped = {key: [] for key in BOOTSTRAPPED}
    for row in draws:
        chosen = [ids[j] for j in row]
        reference = [REFERENCE[i] for i in chosen]
        a = clinical_efficacy([PREDICTED_A[i] for i in chosen], reference)
        b = clinical_efficacy([PREDICTED_B[i] for i in chosen], reference)
        for key in BOOTSTRAPPED:
            looped[key].append(b[key] - a[key])
    for key in BOOTSTRAPPED:
        low, high = np.percentile(looped[key], [2.5, 97.5])
        assert result.differences[key].low == pytest.approx(low, abs=1e-12)
        assert result.differences[key].high == pytest.approx(high, abs=1e-12)


def test_identical_runs_differ_by_zero_with_a_zero_interval():
    result = paired_bootstrap(_run(PREDICTED_A), _run(PREDICTED_A), resamples=100)
    for difference in result.differences.values():
        assert (difference.observed, difference.low, difference.high) == (0.0, 0.0, 0.0)


def test_a_run_right_on_every_study_beats_one_wrong_on_every_study():
    right = _run(REFERENCE)
    wrong = _run({study: _labels("Fracture") for study in REFERENCE})  # never a reference label
    better = paired_bootstrap(wrong, right, resamples=200)
    worse = paired_bootstrap(right, wrong, resamples=200)
    for key in BOOTSTRAPPED:
        assert better.differences[key].low > 0 and better.differences[key].observed > 0
        assert worse.differences[key].high < 0 and worse.differences[key].observed < 0
    # micro F1 over all 14 labels: 1 against 0 on every resample.
    assert better.differences["ce/pos/micro/all14/f1"].low == pytest.approx(1.0)


def test_the_same_seed_gives_the_same_interval_and_studies_in_one_run_only_are_left_out():
    a = _run(PREDICTED_A) | {"only-a": (_labels("Edema"), _labels("Edema"))}
    b = _run(PREDICTED_B)
    first, second = paired_bootstrap(a, b, resamples=100, seed=3), paired_bootstrap(a, b, resamples=100, seed=3)
    assert first == second and first.studies == 6


def test_runs_on_different_studies_or_references_do_not_pair():
    with pytest.raises(ValueError, match="share no study id .*same split"):
        paired_bootstrap(_run(PREDICTED_A), {"other": (_labels(), _labels())}, names=("v1", "v2"))
    changed = _run(PREDICTED_B) | {"s2": (PREDICTED_B["s2"], _labels("Pleural Effusion", "Edema"))}
    with pytest.raises(ValueError, match=r"v1 and v2 disagree on the reference labels of 1 of their 6 shared "
                                         r"studies \(first: s2, Edema: blank vs positive\).*same labeler"):
        paired_bootstrap(_run(PREDICTED_A), changed, names=("v1", "v2"))
    with pytest.raises(ValueError, match="positive integer"):
        paired_bootstrap(_run(PREDICTED_A), _run(PREDICTED_B), resamples=0)


def _eval_folder(folder, predicted: dict, labeler: str = "rules"):
    """A finished `rrg-eval --out` folder in the real format: metrics.json and labelled predictions."""
    ids = sorted(predicted)
    metrics = clinical_efficacy([predicted[i] for i in ids], [REFERENCE[i] for i in ids])
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"labeler": labeler, "reports": len(ids), **metrics}))
    records = [
        {
            "id": study,
            "prediction": "text",
            "reference": "text",
            "labels": {labeler: {"prediction": predicted[study], "reference": REFERENCE[study]}},
            "scores": {"example_f1": 0.0},
        }
        for study in ids
    ]
    records.append({"id": "unscored", "prediction": "kept", "reference": "kept"})  # outside the scoring
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_compare_with_bootstrap_prints_the_interval_table_after_the_metrics(tmp_path, capsys):
    a = _eval_folder(tmp_path / "v1", PREDICTED_A)
    b = _eval_folder(tmp_path / "v2", PREDICTED_B)
    assert main(["--compare", str(a), str(b)]) == 0
    plain = capsys.readouterr().out
    assert "bootstrap" not in plain
    assert main(["--compare", str(a), str(b), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(plain.rstrip("\n"))  # the metrics table as before, then the bootstrap table
    lines = out.splitlines()
    heading = lines.index(
        "Paired bootstrap against v1 (200 resamples of the 6 shared studies; labeler rules; 95 % intervals)"
    )
    assert lines[heading + 2] == "| run minus v1 | " + " | ".join(BOOTSTRAPPED) + " |"
    row = lines[heading + 4]
    assert row.startswith("| v2 | ") and len(lines) == heading + 5
    expected = paired_bootstrap(_run(PREDICTED_A), _run(PREDICTED_B), resamples=200)
    cells = row.strip("|").split("|")[1:]
    for key, cell in zip(BOOTSTRAPPED, cells):
        d = expected.differences[key]
        assert cell.strip() == f"{d.observed:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"


def test_bootstrap_needs_compare_and_runs_with_predictions(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--predictions", "p.jsonl", "--out", str(tmp_path / "o"), "--bootstrap", "200"])
    assert stop.value.code == 2 and "--bootstrap N goes with --compare" in capsys.readouterr().err
    a = _eval_folder(tmp_path / "v1", PREDICTED_A)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.json").write_text(json.dumps({"labeler": "rules", "reports": 6}))
    assert main(["--compare", str(a), str(bare), "--bootstrap", "10"]) == 2
    assert "no predictions.jsonl in" in capsys.readouterr().err
    chexbert = _eval_folder(tmp_path / "chexbert", PREDICTED_B, labeler="chexbert")
    assert main(["--compare", str(a), str(chexbert), "--bootstrap", "10"]) == 2
    assert "has no labels by rules" in capsys.readouterr().err
    assert main(["--compare", str(a), "--bootstrap", "10"]) == 2
    assert "at least two runs" in capsys.readouterr().err


def test_runs_sharing_different_studies_with_the_first_get_a_studies_column(tmp_path):
    from eval.compare import compare_table

    a = _eval_folder(tmp_path / "v1", PREDICTED_A)
    b = _eval_folder(tmp_path / "v2", PREDICTED_B)
    c = _eval_folder(tmp_path / "v3", {k: v for k, v in PREDICTED_B.items() if k != "s6"})
    lines = compare_table([a, b, c], bootstrap=20).splitlines()
    assert "(20 resamples of the studies each run shares with it; labeler rules; 95 % intervals)" in lines[-6]
    assert lines[-4].startswith("| run minus v1 | shared studies | ")
    assert lines[-2].startswith("| v2 | 6 | ") and lines[-1].startswith("| v3 | 5 | ")
