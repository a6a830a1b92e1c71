"""GRP sentences, LRP triplet texts and the position prior, the prompt text cache, and padding."""

from __future__ import annotations

import pytest
import torch

from prompts.reference_prompts import (
    PromptCacheMiss,
    PromptTextCache,
    grp_sentences,
    lrp_texts,
    lrp_vocabulary,
    pad_prompts,
    position_prior,
    position_prior_of_triplets,
    predicted_lrp_texts,
    report_lrp_texts,
)
from prompts.text_encoder import SentenceEncoder
from prompts.triplets import Triplet, extract_triplets
from prompts.vocabulary import MEDKLIP_ENTITIES

EFFUSION = MEDKLIP_ENTITIES.index("effusion")
CARDIOMEGALY = MEDKLIP_ENTITIES.index("cardiomegaly")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, tiny_bert) -> SentenceEncoder:
    return SentenceEncoder.load(str(tiny_bert(tmp_path_factory.mktemp("tiny-bert"), hidden=16)))


@pytest.fixture
def counted(tiny_encoder, monkeypatch) -> list[list[str]]:
    """The texts of each call to the tiny encoder's encode."""
    calls: list[list[str]] = []
    encode = tiny_encoder.encode

    def counting_encode(texts, batch_size=64):
        calls.append(list(texts))
        return encode(texts, batch_size=batch_size)

    monkeypatch.setattr(tiny_encoder, "encode", counting_encode)
    return calls


# --- GRPs ----------------------------------------------------------------------------------------


def test_grp_sentences_keep_report_order_once_each_up_to_the_cut():
    nearest = "Heart size is normal. Small left pleural effusion. No pneumothorax."
    second = "No pneumothorax. The lungs are clear."
    assert grp_sentences([nearest, second], max_sentences=10) == [
        "heart size is normal",
        "small left pleural effusion",
        "no pneumothorax",
        "the lungs are clear",
    ]
    assert grp_sentences([nearest, second], max_sentences=2) == [
        "heart size is normal",
        "small left pleural effusion",
    ]
    assert grp_sentences([], max_sentences=4) == []


# --- LRPs ----------------------------------------------------------------------------------------


def test_lrp_texts_give_one_triplet_per_entity_with_its_exist_and_position():
    exists = [-1] * len(MEDKLIP_ENTITIES)
    exists[EFFUSION], exists[CARDIOMEGALY] = 1, 0
    positions = {e: "unspecified" for e in MEDKLIP_ENTITIES} | {"effusion": "left_costophrenic"}
    texts = lrp_texts(exists, positions)
    assert len(texts) == 75
    assert texts[EFFUSION] == "effusion at left costophrenic: present"
    assert texts[CARDIOMEGALY] == "cardiomegaly at unspecified: absent"
    assert texts[0] == "normal at unspecified: absent"  # unmentioned reads as absent, as at inference
    with pytest.raises(ValueError, match="75"):
        lrp_texts([1, 0], positions)


def test_position_prior_takes_each_entitys_most_common_position():
    prior = position_prior(
        [
            "Small left pleural effusion.",
            "Left pleural effusion has increased.",
            "Right pleural effusion.",
            "Mild cardiomegaly.",
        ]
    )
    assert prior["effusion"] == "left_pleural" and prior["cardiomegaly"] == "heart_size"
    assert prior["pneumothorax"] == "pleural_unspec"  # never seen: the extractor's default
    assert prior["hernia"] == "unspecified" and set(prior) == set(MEDKLIP_ENTITIES)


def test_position_prior_breaks_ties_by_vocabulary_order():
    tied = [Triplet("nodule", "right_mid_lung", 1), Triplet("nodule", "left_hilar", 1)]
    assert position_prior_of_triplets(tied)["nodule"] == "left_hilar"


def test_report_lrps_take_the_reports_positions_and_the_prior_for_the_rest():
    prior = position_prior(["Right pleural effusion."])
    texts = report_lrp_texts(extract_triplets("No pneumothorax. Small left pleural effusion."), prior)
    assert texts[EFFUSION] == "effusion at left pleural: present"
    assert texts[MEDKLIP_ENTITIES.index("pneumothorax")] == "pneumothorax at pleural unspec: absent"
    assert texts[CARDIOMEGALY] == "cardiomegaly at heart size: absent"


def test_predicted_lrps_threshold_the_entity_head_at_the_prior_positions():
    prior = position_prior(["Right pleural effusion."])
    probabilities = torch.full((75,), 0.1)
    probabilities[EFFUSION] = 0.9
    texts = predicted_lrp_texts(probabilities, prior, threshold=0.5)
    assert texts[EFFUSION] == "effusion at right pleural: present"
    assert texts[CARDIOMEGALY] == "cardiomegaly at heart size: absent"
    # Every text an image can produce, and every text of the training reports, is in the vocabulary.
    vocabulary = set(lrp_vocabulary(prior, extract_triplets("Small left pleural effusion.")))
    assert set(texts) <= vocabulary and "effusion at left pleural: present" in vocabulary
    assert len(vocabulary) == 2 * (75 + 1)


# --- the cache -----------------------------------------------------------------------------------


def test_cache_encodes_each_text_once_and_looks_up_without_the_encoder(tiny_encoder, counted):
    cache = PromptTextCache.build(tiny_encoder, ["effusion at left pleural: present", "no effusion"])
    assert len(counted) == 1 and len(cache) == 2
    vectors = cache.lookup(["no effusion", "effusion at left pleural: present", "no effusion"])
    assert len(counted) == 1 and vectors.shape == (3, 16)
    torch.testing.assert_close(vectors[0], vectors[2])
    expected = tiny_encoder.encode(["no effusion", "effusion at left pleural: present", "no effusion"])
    torch.testing.assert_close(vectors, expected)


def test_cache_miss_is_encoded_once_with_an_encoder_and_an_error_without(tiny_encoder, counted):
    cache = PromptTextCache.build(tiny_encoder, ["no effusion"])
    cache.lookup(["effusion", "effusion", "no effusion"])
    assert counted[-1] == ["effusion"] and "effusion" in cache
    cache.lookup(["effusion"])
    assert len(counted) == 2
    detached = PromptTextCache.from_state_dict(cache.state_dict())
    torch.testing.assert_close(detached.lookup(["effusion"]), cache.lookup(["effusion"]))
    with pytest.raises(PromptCacheMiss, match="no text encoder attached"):
        detached.lookup(["a sentence nobody encoded"])
    with pytest.raises(KeyError):
        detached.lookup(["a sentence nobody encoded"])


def test_cache_round_trips_through_a_folder(tiny_encoder, tmp_path):
    texts = ["effusion at left pleural: present", "the lungs are clear", "naïve unicode text"]
    cache = PromptTextCache.build(tiny_encoder, texts)
    cache.save(tmp_path / "prompt-cache")
    loaded = PromptTextCache.load(tmp_path / "prompt-cache")
    assert (loaded.encoder_name, loaded.dim, loaded.texts) == (tiny_encoder.name, 16, texts)
    assert loaded.encoder is None
    assert torch.equal(loaded.lookup(texts), cache.lookup(texts))


def test_cache_refuses_an_encoder_other_than_its_own(tiny_encoder, tiny_bert, tmp_path):
    cache = PromptTextCache.build(tiny_encoder, ["no effusion"])
    other = SentenceEncoder.load(str(tiny_bert(tmp_path / "other-bert", hidden=8)))
    with pytest.raises(ValueError, match="cannot be mixed"):
        cache.attach(other)
    cache.save(tmp_path / "cache")
    with pytest.raises(ValueError, match="cannot be mixed"):
        PromptTextCache.load(tmp_path / "cache", encoder=other)
    assert PromptTextCache.load(tmp_path / "cache", encoder=tiny_encoder).encoder is tiny_encoder


# --- padding -------------------------------------------------------------------------------------


def test_pad_prompts_stacks_variable_counts_with_a_mask():
    rows = [torch.ones(3, 4), torch.full((1, 4), 2.0), torch.empty(0, 4)]
    padded, mask = pad_prompts(rows)
    assert padded.shape == (3, 3, 4) and mask.shape == (3, 3) and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert torch.equal(padded[1, 0], torch.full((4,), 2.0)) and not padded[1, 1:].any()
    with pytest.raises(ValueError, match="one d"):
        pad_prompts([torch.ones(2, 4), torch.ones(2, 5)])
