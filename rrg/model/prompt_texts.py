"""A bundle's text prompts, encoded once: GRP sentences, LRP triplets and disease clue templates.

Bundle part `prompts/`: the encoding cache (`prompts.reference_prompts.PromptTextCache`: every
sentence of every reference report, the LRP texts, the clue texts) and `lrp_positions.json`, the
position each entity takes in its triplet text.

LRP positions: the entity head predicts whether each of the 75 entities is present, not where,
so every triplet names the entity's most common position in the training reports, at training
and at inference alike (the text the model learns is the text it will see). Existence comes from
the study's own report in training (as the findings line does) and from the entity head,
thresholded at `fusion.entity_threshold`, at inference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from prompts.clues import clue_texts, templates_from_config
from prompts.reference_prompts import (
    PromptTextCache,
    grp_sentences,
    lrp_texts,
    lrp_vocabulary,
    pad_prompts,
    position_prior,
)
from prompts.text_encoder import SentenceEncoder
from prompts.triplets import ABSENT, PRESENT
from rrg.config import ModelConfig
from rrg.model.visual_prompt import PromptTexts, VisualPrompt

_POSITIONS = "lrp_positions.json"


def present_entities(entity_logits: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B, 75) which entities the LRPs call present at inference: the entity head's probability at
    or above `fusion.entity_threshold`."""
    return torch.sigmoid(entity_logits) >= config.fusion.entity_threshold


class PromptTextEncodings:
    """Text prompts to encodings for a model config, through the bundle's cache."""

    def __init__(self, config: ModelConfig, cache: PromptTextCache, positions: dict[str, str]):
        self.config = config
        self.cache = cache
        self.positions = positions
        self.clue_texts = _clue_texts(config)
        # One (75, 2, d) table of the LRP vectors: [entity, present?]
        absent = self.cache.lookup(lrp_texts([ABSENT] * len(positions), positions))  # (75, d)
        present = self.cache.lookup(lrp_texts([PRESENT] * len(positions), positions))  # (75, d)
        self._lrp_table = torch.stack([absent, present], dim=1)  # (75, 2, d)

    @classmethod
    def build(
        cls, config: ModelConfig, training_reports: Sequence[str], reference_reports: Sequence[str]
    ) -> PromptTextEncodings:
        """Encode the LRPs, clue templates and every reference report's sentences."""
        encoder = SentenceEncoder.from_config(config.prompt)
        positions = position_prior(training_reports)
        texts = lrp_vocabulary(positions) + _clue_texts(config) + _sentences(reference_reports)
        return cls(config, PromptTextCache.build(encoder, texts), positions)

    @property
    def dim(self) -> int:
        return self.cache.dim

    def save(self, folder: Path) -> None:
        """Write the bundle part (a bundle's prompts/ folder)."""
        self.cache.save(folder)
        (folder / _POSITIONS).write_text(json.dumps(self.positions, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path, config: ModelConfig) -> PromptTextEncodings:
        positions = json.loads((folder / _POSITIONS).read_text())
        return cls(config, PromptTextCache.load(folder), positions)

    def add_reports(self, reports: Sequence[str]) -> None:
        """Encode the sentences of new reference reports (after `rrg index build`)."""
        self._encode_misses(_sentences(reports))

    def _encode_misses(self, texts: Sequence[str]) -> None:
        if all(t in self.cache for t in texts):
            return
        if self.cache.encoder is None:  # loaded only when a text is new (an index rebuilt from other reports)
            self.cache.attach(SentenceEncoder.from_config(self.config.prompt))
        self.cache.add(texts)

    def grp(self, references: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P, d) sentence encodings of each study's retrieved reports and their mask (B, P)."""
        rows, device = [], self.cache.device
        for reports in references:
            sentences = grp_sentences(reports, self.config.fusion.max_grp_sentences)
            self._encode_misses(sentences)
            if sentences:
                rows.append(self.cache.lookup(sentences))
            else:
                rows.append(torch.zeros(0, self.dim, device=device))
        if not any(len(r) for r in rows):  # one masked column keeps the attention's shapes
            return (
                torch.zeros(len(rows), 1, self.dim, device=device),
                torch.zeros(len(rows), 1, dtype=torch.bool, device=device),
            )
        return pad_prompts(rows)

    def lrp(self, present: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, 75, d) triplet encodings for a (B, 75) boolean of which entities are present."""
        present = torch.as_tensor(present, dtype=torch.bool, device=self._lrp_table.device)
        entities = torch.arange(present.shape[1], device=present.device)
        return self._lrp_table[entities[None, :], present.long()]  # (B, 75, d)

    def clues(self) -> torch.Tensor:
        """(C, d) encodings of the clue templates."""
        return self.cache.lookup(self.clue_texts)

    def texts_for(
        self, visual_prompt: VisualPrompt, references: Sequence[Sequence[str]], present: np.ndarray | torch.Tensor
    ) -> PromptTexts:
        """The encodings a visual prompt takes (only the parts its config has) for a batch.

        references: each study's retrieved reports; present: (B, 75) which entities are present.
        """
        grp, grp_mask = self.grp(references) if visual_prompt.needs_grp else (None, None)
        lrp = self.lrp(present) if visual_prompt.needs_lrp else None
        return PromptTexts(grp, grp_mask, lrp, self.clues() if visual_prompt.needs_clues else None)


def _clue_texts(config: ModelConfig) -> list[str]:
    """The clue templates' texts: the config's, or the shipped ones."""
    return clue_texts(templates_from_config(config.clues.templates) if config.clues.templates else None)


def _sentences(reports: Sequence[str]) -> list[str]:
    """Every sentence of every report, as the GRPs take them."""
    return [s for report in reports for s in grp_sentences([report], 1_000)]
