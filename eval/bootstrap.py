"""Paired bootstrap of clinical-efficacy differences between two runs on the same studies.

Two runs scored on the same split differ by some amount in CE F1; how much of that is the test set's
luck? Resample the shared studies with replacement, score both runs on each resample (the same draw
for both: paired), and take the 2.5th and 97.5th percentiles of the differences (run B minus run A).

The metrics are eval/clinical.py's, from the same functions, so the full-sample difference is the
difference of the two runs' `metrics.json` values (when both scored the same studies):
- `ce/pos/example/all14/f1`: each study's F1 is fixed, so a resample's score is the mean of the drawn
  studies' F1;
- `ce/pos/micro/all14/f1`, `ce/pos/micro/top5/f1`: each study's true positive, false positive and
  false negative counts are fixed, so a resample's score is the F1 of the drawn studies' summed counts.
Both are sums over the drawn studies, so every resample is one row of a (resamples, studies) matrix of
draw counts, and all resamples are one matrix product with the per-study terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eval.clinical import LABEL_SETS, counts_per_report, example_f1, precision_recall_f1, present_matrix

# (predicted labels, reference labels) of one study: {label: positive|negative|uncertain|blank}.
StudyLabels = tuple[Mapping[str, str], Mapping[str, str]]

BOOTSTRAPPED = ("ce/pos/example/all14/f1", "ce/pos/micro/all14/f1", "ce/pos/micro/top5/f1")
LEVEL = 0.95  # the interval's coverage


@dataclass(frozen=True)
class Difference:
    """Run B's metric minus run A's: on all shared studies, and the bootstrap percentile interval."""

    observed: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedBootstrap:
    """The outcome of `paired_bootstrap`: how many studies were shared and resampled how often, and
    the difference of each metric of BOOTSTRAPPED."""

    studies: int
    resamples: int
    differences: dict[str, Difference]


def _shared_studies(
    run_a: Mapping[str, StudyLabels], run_b: Mapping[str, StudyLabels], names: Sequence[str]
) -> list[str]:
    """The study ids both runs scored, sorted; a ValueError when there are none or the runs' reference
    labels of a shared study differ (they were not scored on the same split with the same labeler)."""
    shared = sorted(run_a.keys() & run_b.keys())
    if not shared:
        raise ValueError(
            f"{names[0]} and {names[1]} share no study id ({len(run_a)} and {len(run_b)} studies): "
            "a paired bootstrap needs two runs on the same split"
        )
    differing = [study for study in shared if dict(run_a[study][1]) != dict(run_b[study][1])]
    if differing:
        study = differing[0]
        first, second = run_a[study][1], run_b[study][1]
        label = next(name for name in sorted(first.keys() | second.keys()) if first.get(name) != second.get(name))
        raise ValueError(
            f"{names[0]} and {names[1]} disagree on the reference labels of {len(differing)} of their "
            f"{len(shared)} shared studies (first: {study}, {label}: {first.get(label)} vs {second.get(label)}): "
            "they were not scored on the same split with the same labeler, so their studies do not pair"
        )
    return shared


def _study_terms(predicted: Sequence[Mapping[str, str]], reference: Sequence[Mapping[str, str]]) -> np.ndarray:
    """(studies, 7) floats: each study's example F1 over all14, then its true positive, false positive
    and false negative counts over all14, then over top5 (mode pos)."""
    columns = [np.asarray(example_f1(predicted, reference, "pos", "all14"))]
    for set_name in ("all14", "top5"):
        names = LABEL_SETS[set_name]
        columns += counts_per_report(present_matrix(predicted, "pos", names), present_matrix(reference, "pos", names))
    return np.column_stack(columns).astype(float)


def _metrics(sums: np.ndarray, studies: int) -> dict[str, np.ndarray]:
    """Each metric of BOOTSTRAPPED for every row of `sums`, `_study_terms` summed over a sample of
    `studies` studies (one row per sample)."""
    example = sums[:, 0] / studies
    micro_all14 = precision_recall_f1(*sums[:, 1:4].T)[2]
    micro_top5 = precision_recall_f1(*sums[:, 4:7].T)[2]
    return dict(zip(BOOTSTRAPPED, (example, micro_all14, micro_top5)))


def _differences(sums: np.ndarray, studies: int) -> dict[str, np.ndarray]:
    """Run B's metrics minus run A's for every row of `sums`, the two runs' `_study_terms` side by side
    (A's 7 columns, then B's) summed over a sample of `studies` studies."""
    a, b = _metrics(sums[:, :7], studies), _metrics(sums[:, 7:], studies)
    return {key: b[key] - a[key] for key in BOOTSTRAPPED}


def _draw_counts(studies: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, studies) ints: how often each resample (drawn with replacement, `studies` draws)
    holds each study."""
    drawn = rng.integers(0, studies, size=(resamples, studies))
    flat = drawn + studies * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * studies).reshape(resamples, studies)


def paired_bootstrap(
    run_a: Mapping[str, StudyLabels], run_b: Mapping[str, StudyLabels], resamples: int = 2000, seed: int = 0,
    names: Sequence[str] = ("run A", "run B"),
) -> PairedBootstrap:
    """The paired bootstrap of run B minus run A on the studies both scored.

    run_a, run_b: {study id: (predicted labels, reference labels)}; the studies in only one run are
    left out. resamples: how many resamples of the shared studies (with replacement, as many draws as
    studies), drawn by numpy's Generator seeded with `seed`, the same for both runs. names: the runs'
    names in error messages.
    Returns the number of shared studies, `resamples`, and for each metric of BOOTSTRAPPED the
    difference on all shared studies with its 95 % percentile interval over the resamples.
    Raises ValueError when the runs share no study or disagree on a shared study's reference labels.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples}")
    shared = _shared_studies(run_a, run_b, names)
    reference = [run_a[study][1] for study in shared]
    terms = np.hstack([
        _study_terms([run[study][0] for study in shared], reference) for run in (run_a, run_b)
    ])
    draws = _draw_counts(len(shared), resamples, np.random.default_rng(seed))
    observed = _differences(terms.sum(axis=0, keepdims=True), len(shared))
    resampled = _differences(draws @ terms, len(shared))
    tail = 100 * (1 - LEVEL) / 2
    differences = {}
    for key in BOOTSTRAPPED:
        low, high = np.percentile(resampled[key], [tail, 100 - tail])
        differences[key] = Difference(float(observed[key][0]), float(low), float(high))
    return PairedBootstrap(len(shared), resamples, differences)
