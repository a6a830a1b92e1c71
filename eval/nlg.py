"""BLEU-1..4 and ROUGE-L for generated reports, computed the way R2Gen and its successors report them.

Two conventions decide whether our numbers compare with the papers' tables:

- Text. Both sides are cleaned as R2Gen cleans IU X-Ray and MIMIC-CXR reports before training and
  scoring (cuhksz-nlp/R2Gen, modules/tokenizers.py: `clean_report_iu_xray`, `clean_report_mimic_cxr`):
  lower-cased, split into sentences at ". ", most punctuation deleted, and the sentences re-joined with
  " . " so that each period is a token of its own. R2Gen feeds that text to the scorers as it is
  (modules/metrics.py), with no PTB tokenizer in between: the periods count as words.
- Scorer. coco-caption's corpus BLEU (pycocoevalcap/bleu/bleu_scorer.py, called by bleu.py with
  option "closest"): clipped n-gram matches and n-gram counts summed over the corpus, each
  prediction's reference length the closest one (the shorter on a tie), the brevity penalty from
  the corpus totals, and its constants (1e-15 added to matches, 1e-9 to counts and lengths), which
  make a perfect corpus score a hair under 1 and a corpus with no 4-gram match a tiny positive BLEU-4.

R2Gen's references are also cut to max_seq_length - 1 tokens (59 for IU X-Ray, 99 for MIMIC-CXR)
and its rare words mapped to <unk>; we score the whole reference text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

DATASETS = ("iu_xray", "mimic_cxr")
# coco-caption's constants: matches + TINY over counts + SMALL, so that nothing divides by zero.
TINY, SMALL = 1e-15, 1e-9

# R2Gen's character class is written "[.,?;*!%^&_+():-\[\]{}]": the ":-\[" in it is a range (":" to
# "["), so it also deletes "<=>@" (and capitals, gone already by then) and keeps the hyphen.
_DELETED_IN_SENTENCE = re.compile(r"[.,?;:*!%^&_+()<=>@\[\]{}]")
_DELETED_VERBATIM = ('"', "/", "\\", "'")


def _replace_passes(text: str, old: str, new: str, passes: int) -> str:
    # R2Gen chains a fixed number of str.replace calls, so a long enough run survives shortened.
    for _ in range(passes):
        text = text.replace(old, new)
    return text


def _split_sentences(text: str, dataset: str) -> list[str]:
    if dataset == "mimic_cxr":
        text = text.replace("\n", " ")
        text = _replace_passes(text, "__", "_", 7)
        text = _replace_passes(text, "  ", " ", 6)
        text = _replace_passes(text, "..", ".", 8)
    else:
        text = _replace_passes(text, "..", ".", 3)
    # Numbered findings lists ("1. ... 2. ..."): the numbers go; "1. " goes wherever it stands.
    text = text.replace("1. ", "")
    for number in "2345":
        text = text.replace(f". {number}. ", ". ")
    for number in "2345":
        text = text.replace(f" {number}. ", ". ")
    return text.strip().lower().split(". ")


def _clean_sentence(sentence: str) -> str:
    for character in _DELETED_VERBATIM:
        sentence = sentence.replace(character, "")
    return _DELETED_IN_SENTENCE.sub("", sentence.strip().lower())


def prepare_report(text: str, dataset: str = "iu_xray") -> str:
    """A report as R2Gen scores it: space-separated lower-case tokens, each period a token.

    dataset: "iu_xray" or "mimic_cxr", R2Gen's two cleaners (MIMIC's also joins lines and squeezes
    runs of spaces and underscores first). Like R2Gen, an empty report becomes ".".
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    sentences = [_clean_sentence(sentence) for sentence in _split_sentences(text, dataset)]
    return " ".join((" . ".join(sentences) + " .").split())


@dataclass(frozen=True)
class _Statistics:
    """What BLEU needs from one prediction (or, summed, from a corpus)."""

    prediction_length: int
    reference_length: int  # the reference length closest to the prediction's
    guessed: tuple[int, ...]  # n-grams of each order in the prediction
    matched: tuple[int, ...]  # of those, how many the references hold (clipped)

    def __add__(self, other: _Statistics) -> _Statistics:
        return _Statistics(
            self.prediction_length + other.prediction_length,
            self.reference_length + other.reference_length,
            tuple(a + b for a, b in zip(self.guessed, other.guessed)),
            tuple(a + b for a, b in zip(self.matched, other.matched)),
        )


def ngram_counts(tokens: list[str], max_n: int) -> Counter[tuple[str, ...]]:
    """How often each 1..max_n-gram of `tokens` occurs."""
    return Counter(
        tuple(tokens[start : start + n]) for n in range(1, max_n + 1) for start in range(len(tokens) - n + 1)
    )


def _statistics(prediction: list[str], references: list[list[str]], max_n: int) -> _Statistics:
    reference_counts: Counter[tuple[str, ...]] = Counter()
    for reference in references:
        reference_counts |= ngram_counts(reference, max_n)  # the most times any one reference holds it
    matched = [0] * max_n
    for ngram, count in ngram_counts(prediction, max_n).items():
        matched[len(ngram) - 1] += min(count, reference_counts[ngram])
    length = len(prediction)
    closest = min((abs(len(reference) - length), len(reference)) for reference in references)[1]
    guessed = tuple(max(0, length - n + 1) for n in range(1, max_n + 1))
    return _Statistics(length, closest, guessed, tuple(matched))


def _bleu(totals: _Statistics, max_n: int) -> list[float]:
    """BLEU-1..max_n from (corpus) totals, with coco-caption's constants."""
    ratio = (totals.prediction_length + TINY) / (totals.reference_length + SMALL)
    brevity_penalty = math.exp(1.0 - 1.0 / ratio) if ratio < 1.0 else 1.0
    scores, product = [], 1.0
    for n in range(1, max_n + 1):
        product *= (totals.matched[n - 1] + TINY) / (totals.guessed[n - 1] + SMALL)
        scores.append(product ** (1.0 / n) * brevity_penalty)  # geometric mean of p_1..p_n
    return scores


def _tokens(text: str, prepared: bool, dataset: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"reports must be strings, got {type(text).__name__}")
    return (text if prepared else prepare_report(text, dataset)).split()


def _reference_tokens(references: str | Sequence[str], prepared: bool, dataset: str) -> list[list[str]]:
    if isinstance(references, str):
        references = [references]
    elif not isinstance(references, Sequence):
        raise TypeError(f"references must be strings or lists of strings, got {type(references).__name__}")
    if len(references) == 0:
        raise ValueError("every prediction needs at least one reference")
    return [_tokens(reference, prepared, dataset) for reference in references]


def _check_pairs(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> None:
    """One reference (or list of them) per prediction, at least one pair."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of reports, not one string")
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("no predictions to score")


def tokenized_pairs(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    prepared: bool = False,
    dataset: str = "iu_xray",
) -> list[tuple[list[str], list[list[str]]]]:
    """(prediction tokens, [reference tokens, ...]) per pair, R2Gen-cleaned unless `prepared`.

    The one tokenisation every NLG metric here scores (BLEU, ROUGE-L, METEOR, CIDEr).
    """
    _check_pairs(predictions, references)
    return [
        (_tokens(prediction, prepared, dataset), _reference_tokens(reference, prepared, dataset))
        for prediction, reference in zip(predictions, references)
    ]


def bleu_scores(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    max_n: int = 4,
    prepared: bool = False,
    *,
    dataset: str = "iu_xray",
) -> dict[str, float]:
    """Corpus BLEU-1..max_n as {"nlg/bleu1": ..., "nlg/bleuN": ...}.

    references[i]: the reference report of predictions[i], or a list of them (all are used, as
    coco-caption does: clipping by the most any one holds, the closest length).
    prepared: the texts are already `prepare_report` output; otherwise both sides are prepared.
    """
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive integer, got {max_n!r}")
    totals = None
    for prediction, reference in tokenized_pairs(predictions, references, prepared, dataset):
        statistics = _statistics(prediction, reference, max_n)
        totals = statistics if totals is None else totals + statistics
    return {f"nlg/bleu{n}": score for n, score in enumerate(_bleu(totals, max_n), start=1)}


def sentence_bleu4(
    prediction: str, reference: str | Sequence[str], *, prepared: bool = False, dataset: str = "iu_xray"
) -> float:
    """BLEU-4 of one report (coco-caption's formula on one pair), 0.0 where an order has no match.

    Unsmoothed, as coco-caption is; where its 1e-15 would leave ~1e-4 for a pair with no 4-gram
    match (or a prediction under four tokens), this returns exactly 0.0.
    """
    statistics = _statistics(
        _tokens(prediction, prepared, dataset), _reference_tokens(reference, prepared, dataset), 4
    )
    if min(statistics.matched) == 0:
        return 0.0
    return _bleu(statistics, 4)[3]


# coco-caption's ROUGE-L (pycocoevalcap/rouge/rouge.py): the F-measure of the longest common
# subsequence with recall weighted beta = 1.2, the best precision and the best recall over a
# prediction's references taken apart, averaged over predictions.
ROUGE_BETA = 1.2


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_l(prediction: list[str], references: list[list[str]]) -> float:
    if not prediction:
        return 0.0
    common = [_lcs_length(prediction, reference) for reference in references]
    precision = max(c / len(prediction) for c in common)
    recall = max(c / len(reference) if reference else 0.0 for c, reference in zip(common, references))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + ROUGE_BETA**2) * precision * recall / (recall + ROUGE_BETA**2 * precision)


def rouge_l_score(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    prepared: bool = False,
    *,
    dataset: str = "iu_xray",
) -> dict[str, float]:
    """{"nlg/rouge_l": mean ROUGE-L}, coco-caption's formula on R2Gen-cleaned text (as for BLEU)."""
    scores = [
        _rouge_l(prediction, reference)
        for prediction, reference in tokenized_pairs(predictions, references, prepared, dataset)
    ]
    return {"nlg/rouge_l": sum(scores) / len(scores)}
