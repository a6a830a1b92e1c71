"""CIDEr-D for generated reports, as coco-caption computes it (pycocoevalcap/cider, the `Cider` class).

Vedantam, Zitnick and Parikh, "CIDEr: Consensus-based Image Description Evaluation" (CVPR 2015),
eq. 2-4, with the "D" changes coco-caption ships (section 5 of the paper's arXiv v3):

- each n-gram of order n = 1..4 weighted by tf-idf: its count in the report times
  log(N) - log(max(1, df)), where N is the number of scored pairs and df the number of pairs whose
  references hold it (eq. 2). The idf comes from the references of the corpus being scored, so a
  CIDEr is comparable only between runs on the same test split.
- per order, the cosine of the prediction's and a reference's vectors with the prediction's
  weights clipped at the reference's, min(g_p, g_r) * g_r / (|g_p| |g_r|) (CIDEr-D's clipping);
- times a Gaussian length penalty exp(-delta^2 / (2 sigma^2)), sigma = 6 (CIDEr-D), where coco-caption's
  delta is the difference in *bigram* counts (its length counter adds the term frequencies of
  order-2 n-grams), which is the difference in tokens for reports of one token or more;
- averaged over the four orders and over the references, times 10 (eq. 4); the corpus score
  is the mean over predictions.

The text is R2Gen-cleaned as for BLEU (eval/nlg.py). A corpus of one pair scores 0: log(1) = 0
leaves every weight 0, as coco-caption's does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from eval.nlg import ngram_counts, tokenized_pairs

CIDER_ORDERS = 4
CIDER_SIGMA = 6.0
CIDER_SCALE = 10.0


def _tf_idf(counts: Counter[tuple[str, ...]], idf: dict[tuple[str, ...], float], log_n: float):
    """Per order: the tf-idf weights, their norm; and the report's bigram count (coco-caption's length)."""
    weights = [{} for _ in range(CIDER_ORDERS)]
    norms = [0.0] * CIDER_ORDERS
    for ngram, count in counts.items():
        order = len(ngram) - 1
        weight = count * (log_n - idf.get(ngram, 0.0))  # eq. 2; unseen n-grams: df taken as 1
        weights[order][ngram] = weight
        norms[order] += weight * weight
    bigrams = sum(count for ngram, count in counts.items() if len(ngram) == 2)
    return weights, [math.sqrt(n) for n in norms], bigrams


def _similarity(prediction, reference) -> float:
    """Mean over orders of the clipped cosine times the length penalty (CIDEr-D, one reference)."""
    weights_p, norms_p, length_p = prediction
    weights_r, norms_r, length_r = reference
    penalty = math.exp(-((length_p - length_r) ** 2) / (2 * CIDER_SIGMA**2))
    total = 0.0
    for order in range(CIDER_ORDERS):
        if norms_p[order] == 0 or norms_r[order] == 0:
            continue  # an order with no weight on either side adds nothing
        dot = sum(
            min(weight, weights_r[order].get(ngram, 0.0)) * weights_r[order].get(ngram, 0.0)
            for ngram, weight in weights_p[order].items()
        )
        total += dot / (norms_p[order] * norms_r[order]) * penalty
    return total / CIDER_ORDERS


def cider_scores(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    prepared: bool = False,
    *,
    dataset: str = "iu_xray",
) -> list[float]:
    """CIDEr-D of each prediction against its reference(s), with the idf of this corpus's references."""
    pairs = [
        (ngram_counts(prediction, CIDER_ORDERS), [ngram_counts(r, CIDER_ORDERS) for r in reference])
        for prediction, reference in tokenized_pairs(predictions, references, prepared, dataset)
    ]
    document_frequency: Counter[tuple[str, ...]] = Counter()
    for _, reference_counts in pairs:
        document_frequency.update({ngram for counts in reference_counts for ngram in counts})
    idf = {ngram: math.log(frequency) for ngram, frequency in document_frequency.items()}
    log_n = math.log(len(pairs))
    scores = []
    for prediction_counts, reference_counts in pairs:
        prediction = _tf_idf(prediction_counts, idf, log_n)
        similarity = sum(_similarity(prediction, _tf_idf(r, idf, log_n)) for r in reference_counts)
        scores.append(CIDER_SCALE * similarity / len(reference_counts))  # eq. 4
    return scores


def cider_score(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    prepared: bool = False,
    *,
    dataset: str = "iu_xray",
) -> dict[str, float]:
    """{"nlg/cider": the corpus CIDEr-D}, the mean of `cider_scores`."""
    scores = cider_scores(predictions, references, prepared, dataset=dataset)
    return {"nlg/cider": sum(scores) / len(scores)}
