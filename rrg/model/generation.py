"""Drafting with transformers: OpenAI's sampling settings, a generated draft, and `generate()` over
prompt embeddings. The engines of `serving` take the same settings and return the same drafts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LogitsProcessorList, PreTrainedTokenizerFast

from rrg.model.marker_guard import marker_guard
from rrg.model.prompt import pad_batch


@dataclass(frozen=True)
class SamplingSettings:
    """How to draw a draft: OpenAI's completion parameters."""

    max_tokens: int = 128
    min_tokens: int = 0  # vLLM's extension: no end of text before this many tokens
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    """One generated draft."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" (end of report or a stop string) or "length"


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text cut before the first stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


_SEED_LOCK = threading.Lock()  # torch's sampling RNG is global: seeded generations take turns


@torch.no_grad()
def generate_hf(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[torch.Tensor],
    settings: SamplingSettings,
) -> list[Generation]:
    """Drafts for a batch of prompt embeddings with transformers' generate()."""
    embeds, mask, _ = pad_batch(prompts, left=True)
    sampling = settings.temperature > 0
    options = {
        "inputs_embeds": embeds,
        "attention_mask": mask,
        "max_new_tokens": settings.max_tokens,
        "min_new_tokens": settings.min_tokens,
        "do_sample": sampling,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "logits_processor": LogitsProcessorList([marker_guard(tokenizer).processor()]),  # no "XXXX" in a draft
    }
    if sampling:
        options.update(temperature=settings.temperature, top_p=settings.top_p)
    with _SEED_LOCK:
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        output = model.generate(**options)  # (B, new tokens): with inputs_embeds only new ones return
    generations = []
    for row in output.tolist():
        ended = tokenizer.eos_token_id in row
        ids = row[: row.index(tokenizer.eos_token_id)] if ended else row
        ids = [i for i in ids if i != tokenizer.pad_token_id]
        text, stopped = apply_stop(tokenizer.decode(ids, skip_special_tokens=True).strip(), settings.stop)
        generations.append(Generation(text.strip(), tuple(ids), "stop" if ended or stopped else "length"))
    return generations
