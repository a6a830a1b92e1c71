"""BLEU with the RRG papers' conventions: R2Gen's text cleaning, coco-caption's corpus scorer."""

from __future__ import annotations

import math
import random

import pytest

from eval.nlg import bleu_scores, prepare_report, rouge_l_score, sentence_bleu4

KEYS = ["nlg/bleu1", "nlg/bleu2", "nlg/bleu3", "nlg/bleu4"]


def test_prepare_report_cleans_iu_text_as_r2gen_does():
    text = "The heart is normal in size. XXXX opacity, left base. No pneumothorax or effusion."
    assert prepare_report(text) == (
        "the heart is normal in size . xxxx opacity left base . no pneumothorax or effusion ."
    )


def test_prepare_report_keeps_hyphens_and_digits_and_drops_other_punctuation():
    text = "Degenerative changes (T-spine); 2 cm nodule: stable/unchanged?  Pt's heart [normal] <ok>"
    assert (
        prepare_report(text)
        == "degenerative changes t-spine 2 cm nodule stableunchanged pts heart normal ok ."
    )


def test_prepare_report_squeezes_periods_and_drops_list_numbers():
    assert prepare_report("1. Heart normal... 2. Lungs clear.. 3. No effusion.") == (
        "heart normal . lungs clear . no effusion ."
    )
    # A period not followed by a space does not end a sentence, and is dropped.
    assert prepare_report("Size 2.5 cm.No change.") == "size 25 cmno change ."
    assert prepare_report("") == "."


def test_prepare_report_mimic_style_joins_lines_first():
    text = "FINDINGS:\nHeart size is normal.\nNo pleural effusion.\n\n___ is noted."
    # R2Gen's IU cleaner splits sentences only at ". ", so periods before a line break vanish.
    assert prepare_report(text) == "findings heart size is normal no pleural effusion is noted ."
    assert prepare_report(text, dataset="mimic_cxr") == (
        "findings heart size is normal . no pleural effusion . is noted ."
    )
    with pytest.raises(ValueError, match="dataset must be one of"):
        prepare_report(text, dataset="chexpert")


def test_identical_corpus_scores_one_for_every_order():
    reports = ["the heart is normal .", "no focal consolidation pneumothorax or effusion . bones intact ."]
    scores = bleu_scores(reports, reports)
    assert list(scores) == KEYS
    for key in KEYS:
        assert scores[key] == pytest.approx(1.0, abs=1e-9)


def test_disjoint_corpus_scores_about_zero():
    scores = bleu_scores(["cardiomegaly with edema"], ["lungs are clear"], prepared=True)
    assert all(value < 1e-9 for value in scores.values())


def test_hand_computed_corpus_matches():
    predictions = ["the heart is normal .", "no effusion . no effusion ."]
    references = ["the heart size is normal .", "no pleural effusion ."]
    # Pair 1 (5 tokens, reference 6): matches 5/5, 3/4 ("the heart", "is normal", "normal ."), 1/3, 0/2.
    # Pair 2 (6 tokens, reference 4): clipped matches 3/6 (no, effusion, . once each), 1/5 ("effusion ."
    # once), 0/4, 0/3. Totals: 8/11, 4/9, 1/7, 0/5; length 11 against 6 + 4 = 10, so no brevity penalty.
    scores = bleu_scores(predictions, references, prepared=True)
    assert scores["nlg/bleu1"] == pytest.approx(8 / 11, rel=1e-8)
    assert scores["nlg/bleu2"] == pytest.approx(math.sqrt(8 / 11 * 4 / 9), rel=1e-8)
    assert scores["nlg/bleu3"] == pytest.approx((8 / 11 * 4 / 9 * 1 / 7) ** (1 / 3), rel=1e-8)
    # No 4-gram matches: coco-caption's 1e-15 leaves BLEU-4 tiny but not zero.
    assert 0.0 < scores["nlg/bleu4"] < 1e-3
    assert scores["nlg/bleu4"] == pytest.approx((8 / 11 * 4 / 9 * 1 / 7 * 1e-15 / 5) ** (1 / 4), rel=1e-6)


def test_brevity_penalty_applies_to_short_predictions():
    # 5 predicted tokens against 11: all unigrams match, 2 of 4 bigrams; penalty exp(1 - 11/5).
    prediction = "the heart is normal ."
    reference = "the heart size is normal and the lungs are clear ."
    scores = bleu_scores([prediction], [reference], max_n=2, prepared=True)
    assert list(scores) == ["nlg/bleu1", "nlg/bleu2"]
    penalty = math.exp(1 - 11 / 5)
    assert scores["nlg/bleu1"] == pytest.approx(penalty, rel=1e-8)
    assert scores["nlg/bleu2"] == pytest.approx(math.sqrt(0.5) * penalty, rel=1e-8)
    # Too long instead: no penalty, but the repeated words are clipped (11 of 16 unigrams count).
    longer = bleu_scores([reference + " " + prediction], [reference], max_n=1, prepared=True)
    assert longer["nlg/bleu1"] == pytest.approx(11 / 16, rel=1e-8)


def test_brevity_penalty_is_taken_over_the_corpus_totals():
    # One short and one long prediction: 3 + 9 = 12 tokens against 6 + 6, so no penalty at all.
    predictions = ["a b c", "d e f g h i j k l"]
    references = ["a b c x y z", "d e f g h i"]
    assert bleu_scores(predictions, references, max_n=1, prepared=True)["nlg/bleu1"] == pytest.approx(
        9 / 12, rel=1e-8
    )


def test_several_references_clip_by_the_most_one_holds_and_take_the_closest_length():
    # "x" three times: one reference holds it once, the other twice, so 2 of 3 match.
    assert bleu_scores(["x x x"], [["x y", "x x z"]], max_n=1, prepared=True)["nlg/bleu1"] == pytest.approx(
        2 / 3, rel=1e-8
    )
    # Lengths 2 and 4 are equally close to 3: coco-caption takes the shorter, so no penalty.
    assert bleu_scores(["a b c"], [["a b", "a b c d"]], max_n=1, prepared=True)["nlg/bleu1"] == pytest.approx(
        1.0, abs=1e-9
    )


def test_scores_prepare_raw_reports_unless_told_they_are_prepared():
    raw = ["The heart is normal. No effusion!"]
    reference = ["the heart is normal . no effusion ."]
    assert bleu_scores(raw, reference)["nlg/bleu4"] == pytest.approx(1.0, abs=1e-9)
    assert bleu_scores(raw, reference, prepared=True)["nlg/bleu4"] < 0.5


def test_empty_prediction_scores_zero_without_crashing():
    scores = bleu_scores([""], ["lungs are clear ."], prepared=True)
    assert all(value == 0.0 for value in scores.values())
    assert sentence_bleu4("", "lungs are clear .", prepared=True) == 0.0


def test_sentence_bleu4_is_the_corpus_formula_on_one_pair():
    prediction = "the heart is normal in size . the lungs are clear ."
    reference = "the heart is normal in size . lungs are clear . no effusion ."
    single = sentence_bleu4(prediction, reference, prepared=True)
    assert 0.0 < single < 1.0
    assert single == pytest.approx(
        bleu_scores([prediction], [reference], prepared=True)["nlg/bleu4"], rel=1e-12
    )
    assert sentence_bleu4(prediction, prediction, prepared=True) == pytest.approx(1.0, abs=1e-9)


def test_sentence_bleu4_is_exactly_zero_without_a_four_gram_match():
    assert sentence_bleu4("the heart is normal .", "the heart size is normal .", prepared=True) == 0.0
    assert sentence_bleu4("heart normal", "heart normal", prepared=True) == 0.0  # under four tokens
    assert sentence_bleu4("Heart normal.", "Heart normal.") == 0.0  # "heart normal ." after preparing


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "error", "message"),
    [
        (["a"], ["a", "b"], {}, ValueError, "1 predictions but 2 references"),
        ([], [], {}, ValueError, "no predictions"),
        ("a b", "a b", {}, TypeError, "not one string"),
        (["a"], [[]], {}, ValueError, "at least one reference"),
        (["a"], [None], {}, TypeError, "must be strings"),
        (["a"], ["a"], {"max_n": 0}, ValueError, "max_n must be a positive integer"),
    ],
)
def test_bleu_scores_rejects_bad_input(predictions, references, kwargs, error, message):
    with pytest.raises(error, match=message):
        bleu_scores(predictions, references, **kwargs)


def _random_pairs(count: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = [
        "the",
        "heart",
        "lungs",
        "are",
        "is",
        "normal",
        "clear",
        "no",
        "effusion",
        "size",
        ".",
        "xxxx",
        "left",
    ]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 25)))

    return [sentence() for _ in range(count)], [sentence() for _ in range(count)]


def test_matches_pycocoevalcap_on_random_pairs():
    coco_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    predictions, references = _random_pairs(20, seed=0)
    gts = {i: [reference] for i, reference in enumerate(references)}
    res = {i: [prediction] for i, prediction in enumerate(predictions)}
    try:
        corpus, per_pair = coco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    except TypeError:  # coco-caption's own copy has no verbose argument
        corpus, per_pair = coco_bleu.Bleu(4).compute_score(gts, res)
    ours = bleu_scores(predictions, references, prepared=True)
    assert [ours[key] for key in KEYS] == pytest.approx(corpus, rel=1e-12, abs=1e-15)
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        single = sentence_bleu4(prediction, reference, prepared=True)
        assert single == 0.0 or single == pytest.approx(per_pair[3][i], rel=1e-12)


def test_rouge_l_matches_a_hand_computed_case():
    # LCS("a b c d", "a c d e f") = "a c d": P = 3/4, R = 3/5, F = 2.44 P R / (R + 1.44 P)
    expected = 2.44 * 0.75 * 0.6 / (0.6 + 1.44 * 0.75)
    score = rouge_l_score(["a b c d"], ["a c d e f"], prepared=True)["nlg/rouge_l"]
    assert score == pytest.approx(expected, abs=1e-12)


def test_rouge_l_takes_the_best_precision_and_recall_over_references_and_averages_reports():
    # vs "a b": P = 2/4, R = 1; vs "a b c d e f g h": P = 1, R = 4/8 -> P = 1, R = 1 taken apart
    two_references = rouge_l_score(["a b c d"], [["a b", "a b c d e f g h"]], prepared=True)["nlg/rouge_l"]
    assert two_references == pytest.approx(1.0)
    mean = rouge_l_score(["a b", "x y"], ["a b", "a b"], prepared=True)["nlg/rouge_l"]
    assert mean == pytest.approx(0.5)  # 1.0 and 0.0 (no common word)
    assert rouge_l_score([""], ["a b"], prepared=True)["nlg/rouge_l"] == 0.0
