"""The report generator: a Mistral causal language model with a LoRA adapter, prompted with
embeddings so that visual tokens can sit between pieces of embedded instruction text.

The same prompt embeddings go to vLLM (`prompt_embeds`) or to transformers' `generate(inputs_embeds=)`
(the fallback engine, `rrg generate`, `rrg-eval`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from prompts.instructions import after_image, before_image
from rrg.config import GeneratorConfig, PromptConfig

IGNORE = -100  # label of prompt positions: no loss there
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config's dtype name."""
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {name!r}")
    return _DTYPES[name]


def build_demo_llm(config: GeneratorConfig, tokenizer: PreTrainedTokenizerFast) -> MistralForCausalLM:
    """A small Mistral with random weights, to be trained on report text."""
    mistral = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        sliding_window=None,
    )
    return MistralForCausalLM(mistral).to(torch_dtype(config.dtype))


def load_llm(path_or_id: str | Path, dtype: str) -> MistralForCausalLM:
    """A Mistral-architecture causal LM from a local folder or a hub id (no download where there is no hub)."""
    try:
        return MistralForCausalLM.from_pretrained(str(path_or_id), dtype=torch_dtype(dtype))
    except OSError as error:
        raise ValueError(
            f"cannot load the language model {str(path_or_id)!r}: give a local folder in Hugging Face format "
            f"or a hub id reachable from this machine ({error})"
        ) from None


def with_new_lora(model: MistralForCausalLM, config: GeneratorConfig) -> PeftModel:
    """The model with a fresh LoRA adapter on the attention projections; the base stays frozen."""
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def with_merged_lora(model: MistralForCausalLM, path: str | Path) -> MistralForCausalLM:
    """The model with a saved PEFT adapter folded into its weights, for inference without extra matmuls.

    LoRA (Hu et al. 2021), Eq. 3: h = W0 x + (alpha / r) B A x; merged, W = W0 + (alpha / r) B A.
    """
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()


# --- prompts -------------------------------------------------------------------------------------


class PromptEmbedder:
    """Builds prompt embeddings with the language model's own token embeddings.

    Holds only the embedding matrix, so a serving front can build prompts for a remote or separate
    vLLM engine without loading the whole model.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, embedding: nn.Embedding, prompt: PromptConfig):
        self.tokenizer = tokenizer
        self.embedding = embedding
        self.prompt = prompt

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _embed(self, ids: Sequence[int]) -> torch.Tensor:
        weight = self.embedding.weight
        return self.embedding(torch.tensor(list(ids), dtype=torch.long, device=weight.device))

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` takes in the prompt."""
        return len(self._ids(text))

    def shorten(self, report: str, max_tokens: int) -> str:
        """A report cut to its first `max_tokens` tokens (retrieved references are kept short)."""
        ids = self._ids(report)
        return report if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens]).strip()

    def prompt_embeds(
        self,
        visual: torch.Tensor,
        findings: Sequence[str],
        references: Sequence[str],
        instruction: str | None = None,
    ) -> torch.Tensor:
        """(T, H): [BOS] "Human: <Img>" visual "</Img> instruction, findings, references, Assistant:".

        findings: the names of the suggested findings; instruction: replaces the config's
        instruction (the model was trained with the config's).
        """
        shortened = [self.shorten(r, self.prompt.max_reference_tokens) for r in references]
        after = after_image(
            instruction or self.prompt.instruction,
            findings,
            shortened,
            self.prompt.findings_heading,
            self.prompt.references_heading,
        )
        head = self._embed([self.tokenizer.bos_token_id, *self._ids(before_image())])  # (h, H)
        tail = self._embed(self._ids(after))  # (t, H)
        return torch.cat([head, visual.to(head.dtype), tail])  # (h + V + t, H)

    def training_example(
        self, visual: torch.Tensor, findings: Sequence[str], references: Sequence[str], report: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt plus target report: embeddings (T, H) and labels (T,) with the prompt ignored."""
        prompt = self.prompt_embeds(visual, findings, references)
        target = self._ids(" " + report.strip())[: self.prompt.max_report_tokens] + [self.tokenizer.eos_token_id]
        embeds = torch.cat([prompt, self._embed(target)])
        labels = torch.tensor([IGNORE] * len(prompt) + target, dtype=torch.long)
        return embeds, labels


def pad_batch(
    sequences: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] | None = None, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack (T_i, H) embeddings into (B, T, H) with an attention mask; pad left for generation."""
    longest = max(len(s) for s in sequences)
    hidden = sequences[0].shape[1]
    embeds = sequences[0].new_zeros(len(sequences), longest, hidden)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    padded_labels = torch.full((len(sequences), longest), IGNORE, dtype=torch.long) if labels is not None else None
    for i, sequence in enumerate(sequences):
        span = slice(longest - len(sequence), longest) if left else slice(0, len(sequence))
        embeds[i, span] = sequence
        mask[i, span] = 1
        if padded_labels is not None:
            padded_labels[i, span] = labels[i]
    return embeds, mask, padded_labels


# --- generation with transformers ----------------------------------------------------------------


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
