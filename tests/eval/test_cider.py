"""CIDEr-D: hand-computed tiny corpora, and the same numbers as coco-caption's own scorer."""

from __future__ import annotations

import math
import random

import pytest
from pycocoevalcap.cider.cider import Cider

from eval.cider import cider_score, cider_scores
from eval.nlg import prepare_report


def test_two_pair_corpus_by_hand():
    # N = 2 pairs, so every reference n-gram (df 1) weighs ln 2 - ln 1 = ln 2.
    # Pair 1 equals its reference: cosine 1 at orders 1 and 2, nothing at 3 and 4 -> 10 * 2/4 = 5.
    # Pair 2 shares nothing with its reference: 0.
    scores = cider_scores(["a b", "c"], ["a b", "d"], prepared=True)
    assert scores == pytest.approx([5.0, 0.0])
    assert cider_score(["a b", "c"], ["a b", "d"], prepared=True)["nlg/cider"] == pytest.approx(2.5)


def test_extra_word_costs_cosine_and_the_length_penalty():
    # "a b x" against "a b": order 1 cosine 2 ln2^2 / (sqrt3 ln2 * sqrt2 ln2) = 2/sqrt6; order 2
    # (ab, bx against ab) 1/sqrt2; order 3 nothing. Bigram counts 2 vs 1: penalty exp(-1/72).
    [score, _] = cider_scores(["a b x", "c"], ["a b", "d"], prepared=True)
    expected = 10 * math.exp(-1 / 72) * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4
    assert score == pytest.approx(expected)


def test_one_pair_corpus_scores_zero_as_coco_caption_does():
    # log(1) = 0 and df 1: every weight is 0.
    assert cider_score(["the heart is normal"], ["the heart is normal"])["nlg/cider"] == 0.0


def test_matches_pycocoevalcap_with_one_and_several_references():
    rng = random.Random(3)
    words = ["the", "heart", "is", "normal", "in", "size", "lungs", "are", "clear", "no", "pleural", "effusion", "mild", "cardiomegaly", ".", "left"]

    def text():
        return " ".join(rng.choices(words, k=rng.randint(0, 18)))

    predictions = [text() for _ in range(150)]
    references = [[text() for _ in range(rng.randint(1, 3))] for _ in range(150)]
    ours = cider_scores(predictions, references)
    gts = {i: [prepare_report(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [prepare_report(p)] for i, p in enumerate(predictions)}
    corpus, theirs = Cider().compute_score(gts, res)
    assert ours == pytest.approx(list(theirs), abs=1e-9)
    assert cider_score(predictions, references)["nlg/cider"] == pytest.approx(corpus, abs=1e-9)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        cider_score(["a", "b"], ["a"])
