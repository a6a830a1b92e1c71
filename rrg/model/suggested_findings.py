"""Which findings the image heads suggest to the language model, and the thresholds that decide it.

The drafting prompt names the findings the heads are confident of ("Findings suggested by the
image: cardiomegaly, pleural effusion."), so that a small language model need not read every finding
from the visual tokens alone. During training the line states the study's own labels, so the
adapter learns to write what the line names; at inference the heads' probabilities, cut at one
threshold per label, fill it.

The thresholds are tuned on the validation split for the example-based F1 of DESIGN.md section 7
(the clinical-efficacy headline): starting from "never suggest", each label's threshold is set, in
turn, to the value that most improves the mean per-study F1 of the suggested labels, with No Finding
standing for a study where nothing is suggested. A label the heads cannot separate on validation
stays at "never".
"""

from __future__ import annotations

import numpy as np

from prompts.vocabulary import CHEXBERT_LABELS

NO_FINDING = CHEXBERT_LABELS.index("No Finding")
NEVER = 1.0  # a threshold no probability exceeds
GRID = (NEVER, *np.round(np.arange(0.05, 1.0, 0.05), 2))


def with_no_finding(findings: np.ndarray) -> np.ndarray:
    """(N, 14) booleans with No Finding set exactly where no other label is."""
    findings = np.array(findings, dtype=bool)
    others = np.delete(findings, NO_FINDING, axis=1)
    findings[:, NO_FINDING] = ~others.any(axis=1)
    return findings


def example_f1(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Mean over studies of the F1 of their positive labels (a study with none on either side: 0)."""
    tp = (predicted & reference).sum(1)
    wrong = (predicted ^ reference).sum(1)
    return float(np.mean(np.divide(2 * tp, 2 * tp + wrong, out=np.zeros(len(tp)), where=2 * tp + wrong > 0)))


def suggest(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, 14) booleans: the labels whose probability exceeds their threshold (never No Finding)."""
    suggested = np.asarray(probabilities) > np.asarray(thresholds)
    suggested[:, NO_FINDING] = False
    return suggested


def tune_thresholds(probabilities: np.ndarray, positives: np.ndarray, sweeps: int = 2) -> np.ndarray:
    """(14,) thresholds maximising the example-based F1 of the suggestions on a labelled split.

    probabilities: (N, 14) the heads' sigmoid outputs; positives: (N, 14) the reports' positive labels.
    """
    reference = np.asarray(positives, dtype=bool)
    thresholds = np.full(len(CHEXBERT_LABELS), NEVER)

    def score(candidate: np.ndarray) -> float:
        return example_f1(with_no_finding(suggest(probabilities, candidate)), reference)

    best = score(thresholds)
    for _ in range(sweeps):
        for label in range(len(CHEXBERT_LABELS)):
            if label == NO_FINDING:
                continue
            for value in GRID:
                candidate = thresholds.copy()
                candidate[label] = value
                candidate_score = score(candidate)
                if candidate_score > best + 1e-9:
                    thresholds, best = candidate, candidate_score
    return thresholds


def finding_names(row: np.ndarray) -> list[str]:
    """The names of the True labels of one (14,) row, as the prompt writes them."""
    return [name.lower() for name, on in zip(CHEXBERT_LABELS, row) if on and name != "No Finding"]
