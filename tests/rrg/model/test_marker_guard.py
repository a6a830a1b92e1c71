"""Drafting never writes a de-identification marker, even from a model that wants to."""

from __future__ import annotations

import torch
from torch import nn
from transformers import MistralConfig, MistralForCausalLM

from rrg.data.deidentified import has_marker
from rrg.model.generation import SamplingSettings, generate_hf
from rrg.model.marker_guard import MarkerGuard
from rrg.training.tokenizer import train_report_tokenizer

REPORTS = [
    "The XXXX are intact. Heart size is normal.",
    "No pleural effusion. XXXX XXXX of the chest.",
    "Compared to ___, the lungs are clear.",
    "The lungs are clear. No pneumothorax. Exam of XXXX.",
] * 20


def _tokenizer():
    return train_report_tokenizer(REPORTS, vocab_size=300)


def test_the_guard_finds_the_marker_tokens_and_the_pieces_that_spell_one():
    tokenizer = _tokenizer()
    guard = MarkerGuard(tokenizer)
    assert guard.marker_tokens, "a vocabulary learned from marked text has whole marker tokens"
    assert all(has_marker(tokenizer.decode([i])) for i in guard.marker_tokens)
    x = tokenizer.convert_tokens_to_ids("X")
    lungs = tokenizer.encode(" lungs")[0]
    assert not guard.banned(None)[0, x]  # one "X" alone is not a marker
    assert guard.banned(torch.tensor([x]))[0, x]  # a second is
    assert not guard.banned(torch.tensor([lungs]))[0, x]
    assert set(guard.bad_words()) >= {"XX", "__"}


def _model_that_writes(tokenizer, favourite: list[int]) -> nn.Module:
    """A tiny Mistral whose head ignores the text and ranks `favourite` tokens first, in that order."""
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )).eval()
    head = nn.Linear(32, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for rank, token in enumerate(favourite):
            head.bias[token] = 10.0 - rank
    model.lm_head = head
    return model


def test_a_model_that_prefers_markers_drafts_none():
    tokenizer = _tokenizer()
    guard = MarkerGuard(tokenizer)
    x, period = tokenizer.convert_tokens_to_ids("X"), tokenizer.convert_tokens_to_ids(".")
    model = _model_that_writes(tokenizer, [*guard.marker_tokens, x, period])
    prompts = [torch.randn(3, 32) for _ in range(2)]
    settings = SamplingSettings(max_tokens=12)
    drafts = generate_hf(model, tokenizer, prompts, settings)
    for draft in drafts:
        assert draft.text and not has_marker(draft.text), draft.text
        assert "X" in draft.text  # the favourite left after the guard: "X." repeated
    sampled = generate_hf(model, tokenizer, prompts, SamplingSettings(max_tokens=12, temperature=1.5, seed=3))
    assert not any(has_marker(d.text) for d in sampled)
