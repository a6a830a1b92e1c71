"""Clinical-efficacy (CE) metrics over CheXbert-style labels, every variant named.

Papers disagree on how CE F1 is computed and users keep asking why their numbers differ, so rrg
reports all of them, each under a name that says what it is (DESIGN.md section 7):

    ce/<mode>/<average>/<labels>/<precision|recall|f1>

- mode `pos`: only "positive" counts as present (PromptMRG, REVTAF); `pos_unc`: "uncertain"
  counts as present too (RadEval's "rrg" mode).
- average `example`: precision/recall/F1 per report, then the mean (PromptMRG's headline). A report
  with no present label on either side scores 0 there, as PromptMRG computes it. `micro`: counts
  pooled over all reports and labels. `macro`: per-label scores, then the mean over labels
  (scikit-learn's conventions, zero_division=0: a label never predicted has precision 0).
- labels `all14`: the 14 CheXbert labels, No Finding included; `top5`: Cardiomegaly, Edema,
  Consolidation, Atelectasis, Pleural Effusion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prompts.vocabulary import CHEXBERT_LABELS, TOP5_LABELS

MODES: dict[str, frozenset[str]] = {
    "pos": frozenset({"positive"}),
    "pos_unc": frozenset({"positive", "uncertain"}),
}
LABEL_SETS: dict[str, tuple[str, ...]] = {"all14": CHEXBERT_LABELS, "top5": TOP5_LABELS}
AVERAGES = ("example", "micro", "macro")


def present_matrix(labels: Sequence[dict[str, str]], mode: str, names: Sequence[str]) -> np.ndarray:
    """(reports, labels) booleans: which labels each report states as present under `mode`."""
    counted = MODES[mode]
    return np.array(
        [[report.get(name) in counted for name in names] for report in labels], dtype=bool
    ).reshape(len(labels), len(names))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(np.shape(numerator)), where=denominator > 0)


def precision_recall_f1(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of true positive, false positive and false negative counts (arrays of
    any one shape, elementwise), 0 where a denominator is 0 (scikit-learn's zero_division=0)."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def counts_per_label(
    predicted: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label (columns)."""
    tp = (predicted & reference).sum(axis=0)
    fp = (predicted & ~reference).sum(axis=0)
    fn = (~predicted & reference).sum(axis=0)
    return tp, fp, fn


def counts_per_report(
    predicted: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per report (rows), over its labels."""
    return counts_per_label(predicted.T, reference.T)


def clinical_efficacy(
    predicted: Sequence[dict[str, str]], reference: Sequence[dict[str, str]]
) -> dict[str, float]:
    """Every CE variant for paired predicted and reference label dicts."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions but {len(reference)} references")
    if not predicted:
        raise ValueError("no reports to score")
    metrics: dict[str, float] = {}
    for mode in MODES:
        for set_name, names in LABEL_SETS.items():
            pred = present_matrix(predicted, mode, names)
            ref = present_matrix(reference, mode, names)
            tp, fp, fn = counts_per_label(pred, ref)
            # Per report: counts over its labels (rows), then the mean over reports.
            example = [s.mean() for s in precision_recall_f1(*counts_per_report(pred, ref))]
            micro = precision_recall_f1(tp.sum(), fp.sum(), fn.sum())
            macro = [s.mean() for s in precision_recall_f1(tp, fp, fn)]
            for average, values in zip(AVERAGES, (example, micro, macro)):
                for measure, value in zip(("precision", "recall", "f1"), values):
                    metrics[f"ce/{mode}/{average}/{set_name}/{measure}"] = float(value)
    return metrics


def per_label_scores(
    predicted: Sequence[dict[str, str]], reference: Sequence[dict[str, str]], mode: str
) -> list[dict[str, float | int | str]]:
    """Precision, recall, F1 and support (reference count) of each of the 14 labels."""
    pred = present_matrix(predicted, mode, CHEXBERT_LABELS)
    ref = present_matrix(reference, mode, CHEXBERT_LABELS)
    tp, fp, fn = counts_per_label(pred, ref)
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    return [
        {
            "label": name,
            "mode": mode,
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for name, p, r, f, s in zip(CHEXBERT_LABELS, precision, recall, f1, tp + fn)
    ]


def example_f1(
    predicted: Sequence[dict[str, str]], reference: Sequence[dict[str, str]], mode: str = "pos",
    labels: str = "all14",
) -> list[float]:
    """Each report's own F1 (the terms `ce/<mode>/example/<labels>/f1` averages), 0 where neither side
    states a label present."""
    names = LABEL_SETS[labels]
    pred = present_matrix(predicted, mode, names)
    ref = present_matrix(reference, mode, names)
    return [float(f) for f in precision_recall_f1(*counts_per_report(pred, ref))[2]]


def class_confusion(
    predicted: Sequence[dict[str, str]], reference: Sequence[dict[str, str]], label: str
) -> dict[str, dict[str, int]]:
    """{reference class: {predicted class: reports}} of one label over the four statuses."""
    classes = ("positive", "uncertain", "negative", "blank")
    table = {r: dict.fromkeys(classes, 0) for r in classes}
    for p, r in zip(predicted, reference):
        table[r.get(label, "blank")][p.get(label, "blank")] += 1
    return table
