"""The prompt text encoder's load options from the model config: `prompt.text_encoder_trust_remote_code`
(an encoder that ships its own model code, as CXR-BERT does) and `prompt.text_encoder_device`.

The custom-code encoder is a tiny BERT saved with its own configuration and model classes and an
`auto_map`, the layout of microsoft/BiomedVLP-CXR-BERT-specialized: transformers runs that code only
when trust_remote_code reaches it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers.dynamic_module_utils

from prompts.text_encoder import DEFAULT_ENCODER, SentenceEncoder, encoder_device
from rrg.config import PromptConfig, load_model_config

_CONFIGURATION = '''from transformers import BertConfig


class TinyCxrConfig(BertConfig):
    model_type = "tiny-cxr-bert"
'''
_MODELING = '''from transformers import BertModel

from .configuration_tinycxr import TinyCxrConfig


class TinyCxrModel(BertModel):
    """A BERT under its own class name: the encoder's code, not transformers'."""

    config_class = TinyCxrConfig
'''


@pytest.fixture
def custom_code_encoder(tmp_path, tiny_bert, monkeypatch) -> Path:
    """A tiny BERT that names its own classes in config.json's auto_map; transformers copies that code into
    a modules cache, kept in tmp_path here."""
    folder = tiny_bert(tmp_path / "tiny-cxr-bert")
    (folder / "configuration_tinycxr.py").write_text(_CONFIGURATION)
    (folder / "modeling_tinycxr.py").write_text(_MODELING)
    config = json.loads((folder / "config.json").read_text())
    config |= {"model_type": "tiny-cxr-bert", "architectures": ["TinyCxrModel"],
               "auto_map": {"AutoConfig": "configuration_tinycxr.TinyCxrConfig",
                            "AutoModel": "modeling_tinycxr.TinyCxrModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return folder


def test_the_defaults_load_the_shipped_encoder_on_the_cpu_without_remote_code():
    prompt = PromptConfig()
    assert (prompt.text_encoder_trust_remote_code, prompt.text_encoder_device) == (False, "cpu")
    encoder = SentenceEncoder.from_config(prompt)
    assert encoder.name == DEFAULT_ENCODER and encoder.dim == 384
    assert encoder.device == torch.device("cpu") and not encoder.trust_remote_code


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "auto"])
def test_the_device_accepts_cpu_cuda_and_auto(device):
    assert PromptConfig(text_encoder_device=device).text_encoder_device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "CPU"])
def test_another_device_is_refused(device):
    with pytest.raises(ValueError, match="prompt.text_encoder_device must be cpu, cuda, cuda:N or auto"):
        PromptConfig(text_encoder_device=device)


def test_trust_remote_code_must_be_a_boolean():
    with pytest.raises(ValueError, match="text_encoder_trust_remote_code must be true or false"):
        PromptConfig(text_encoder_trust_remote_code="yes")


def test_auto_is_the_gpu_when_there_is_one():
    assert encoder_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert encoder_device("cuda:1") == torch.device("cuda", 1)


def test_an_encoder_with_its_own_code_is_refused_without_trust(custom_code_encoder):
    prompt = PromptConfig(text_encoder=str(custom_code_encoder))
    with pytest.raises(ValueError, match=r"ships its own model code.*prompt\.text_encoder_trust_remote_code: true"):
        SentenceEncoder.from_config(prompt)


def test_the_config_fields_reach_the_load(custom_code_encoder):
    prompt = PromptConfig(text_encoder=str(custom_code_encoder), text_encoder_trust_remote_code=True,
                          text_encoder_device="cpu")
    encoder = SentenceEncoder.from_config(prompt)
    assert type(encoder.model).__name__ == "TinyCxrModel"  # the folder's own class ran
    assert encoder.trust_remote_code and encoder.device == torch.device("cpu")
    assert {p.device for p in encoder.model.parameters()} == {torch.device("cpu")}
    vectors = encoder.encode(["small left pleural effusion", "the heart is"])
    assert vectors.shape == (2, 32) and vectors.device == torch.device("cpu")
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2))


def test_auto_places_the_encoder_on_the_gpu_when_there_is_one(tiny_bert, tmp_path):
    encoder = SentenceEncoder.from_config(PromptConfig(text_encoder=str(tiny_bert(tmp_path / "bert")),
                                                       text_encoder_device="auto"))
    assert encoder.device == encoder_device("auto") and not encoder.trust_remote_code
    assert {p.device.type for p in encoder.model.parameters()} == {encoder.device.type}
    assert encoder.encode(["no effusion"]).device == torch.device("cpu")


def test_the_mimic_config_names_cxr_bert_with_its_own_code_and_the_auto_device():
    prompt = load_model_config("mimic-mistral-7b").prompt
    assert prompt.text_encoder == "microsoft/BiomedVLP-CXR-BERT-specialized"
    assert prompt.text_encoder_trust_remote_code and prompt.text_encoder_device == "auto"
