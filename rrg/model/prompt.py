"""The drafting prompt as embeddings, built with the language model's own token embeddings:
[BOS] "Human: <Img>" visual tokens "</Img> instruction, findings, references, Assistant:" (DESIGN.md
section 6), for generation and, with the report appended, for training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerFast

from prompts.instructions import after_image, before_image
from rrg.config import PromptConfig

IGNORE = -100  # label of prompt positions: no loss there


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
            self.prompt.findings_last,
        )
        head = self._embed([self.tokenizer.bos_token_id, *self._ids(before_image())])  # (h, H)
        tail = self._embed(self._ids(after))  # (t, H)
        return torch.cat([head, visual.to(head.dtype), tail])  # (h + V + t, H)

    def target_ids(self, report: str) -> list[int]:
        """The token ids a draft learns to write for `report`: cut to max_report_tokens, then end of text."""
        return self._ids(" " + report.strip())[: self.prompt.max_report_tokens] + [self.tokenizer.eos_token_id]

    def training_example(
        self, visual: torch.Tensor, findings: Sequence[str], references: Sequence[str], report: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt plus target report: embeddings (T, H) and labels (T,) with the prompt ignored."""
        prompt = self.prompt_embeds(visual, findings, references)
        target = self.target_ids(report)
        embeds = torch.cat([prompt, self._embed(target)])
        labels = torch.tensor([IGNORE] * len(prompt) + target, dtype=torch.long, device=embeds.device)
        return embeds, labels


def pad_batch(
    sequences: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] | None = None, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack (T_i, H) embeddings into (B, T, H) with an attention mask; pad left for generation."""
    longest = max(len(s) for s in sequences)
    hidden = sequences[0].shape[1]
    embeds = sequences[0].new_zeros(len(sequences), longest, hidden)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long, device=embeds.device)
    padded_labels = None
    if labels is not None:
        padded_labels = torch.full((len(sequences), longest), IGNORE, dtype=torch.long, device=embeds.device)
    for i, sequence in enumerate(sequences):
        span = slice(longest - len(sequence), longest) if left else slice(0, len(sequence))
        embeds[i, span] = sequence
        mask[i, span] = 1
        if padded_labels is not None:
            padded_labels[i, span] = labels[i]
    return embeds, mask, padded_labels
