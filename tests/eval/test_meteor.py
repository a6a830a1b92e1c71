"""METEOR 1.5 through coco-caption's jar: hand-computed scores, coco-caption's own wrapper, and plain
errors where Java or the jar is missing."""

from __future__ import annotations

import random
import shutil

import pytest
from pycocoevalcap.meteor.meteor import Meteor

from eval import meteor
from eval.meteor import MeteorScorer, MeteorUnavailable, meteor_score, shared_scorer
from eval.nlg import prepare_report

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java (make install adds it)")


def test_scores_by_hand_with_meteor_universal_english_parameters():
    # alpha 0.85, beta 0.2, gamma 0.6, delta 0.75 (content words weigh 0.75, function words 0.25).
    # "heart normal" vs "the heart is normal": P 1, R (0.75*2)/(0.75*2 + 0.25*2) = 0.75,
    # Fmean = 0.75 / (0.85 + 0.15*0.75); 2 chunks over 2 matches: penalty 0.6 -> Fmean * 0.4.
    # An exact copy scores 1 (the jar counts its chunks as 0). Corpus: summed statistics,
    # R = 3.5/4, chunks 0 + 2 over (6 + 6)/2 matches -> penalty 0.6 * (1/3)^0.2.
    pairs = [(["the", "heart", "is", "normal"], [["the", "heart", "is", "normal"]]),
             (["heart", "normal"], [["the", "heart", "is", "normal"]])]
    corpus, per_pair = shared_scorer().score_tokens(pairs)
    fmean = 0.75 / (0.85 + 0.15 * 0.75)
    assert per_pair == pytest.approx([1.0, fmean * 0.4], abs=1e-9)
    corpus_fmean = 0.875 / (0.85 + 0.15 * 0.875)
    assert corpus == pytest.approx(corpus_fmean * (1 - 0.6 * (1 / 3) ** 0.2), abs=1e-9)


def test_matches_pycocoevalcap_on_random_reports():
    rng = random.Random(5)
    words = ["the", "heart", "is", "normal", "in", "size", "lungs", "are", "clear", "no", "pleural", "effusions", "mild", "enlarged", ".", "left"]

    def text():
        return " ".join(rng.choices(words, k=rng.randint(1, 16)))

    predictions = [text() for _ in range(40)]
    references = [text() for _ in range(40)]
    ours = meteor_score(predictions, references)["nlg/meteor"]
    theirs, _ = Meteor().compute_score(
        {i: [prepare_report(r)] for i, r in enumerate(references)},
        {i: [prepare_report(p)] for i, p in enumerate(predictions)},
    )
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_field_separator_in_a_report_cannot_break_the_protocol():
    score = meteor_score(["effusion ||| heart"], ["effusion heart"], prepared=True)["nlg/meteor"]
    assert 0.0 < score <= 1.0


def test_no_java_is_a_plain_unavailable_with_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(meteor, "_shared", None)
    with pytest.raises(MeteorUnavailable, match="no `java` on PATH: install a Java runtime"):
        meteor_score(["a"], ["a"])


def test_missing_or_broken_jar_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(meteor.JAR_ENV, str(tmp_path / "missing.jar"))
    with pytest.raises(MeteorUnavailable, match="missing.jar does not exist"):
        MeteorScorer()
    broken = tmp_path / "broken.jar"
    broken.write_text("not a jar")
    with MeteorScorer(broken) as scorer, pytest.raises(MeteorUnavailable, match="broken.jar stopped"):
        scorer.score_tokens([(["a"], [["a"]])])
