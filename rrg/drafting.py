"""From X-ray images to drafts.

`Drafter` does everything before the language model, from a bundle: vision encoder, finding
heads and the findings they suggest, retrieval of reference reports (cosine or hyperbolic), the
visual prompt (Sinkhorn fusion of the reference sentences and entity triplets, disease clues, the
projector; as the config has them), and prompt embeddings built with the LLM's own token
embeddings. Any engine then generates from `DraftPlan.prompt_embeds`: vLLM in the server, or
transformers here (`LocalDrafter`, for `rrg generate` and `rrg-eval`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from prompts.clues import ClueOutput
from prompts.vocabulary import CHEXBERT_LABELS
from retrieval.cosine_index import Neighbor
from rrg.bundle import Bundle
from rrg.data.imaging import decode_side, to_model_input
from rrg.model import factory
from rrg.model.generation import SamplingSettings, generate_hf
from rrg.model.prompt_texts import present_entities
from rrg.model.suggested_findings import finding_names, suggest
from rrg.model.visual_prompt import PromptTexts

MACHINE_DRAFT = "Machine draft, not for clinical use."


def disclaimer(bundle: Bundle) -> str:
    """What every place showing a draft of this bundle must say."""
    return f"{MACHINE_DRAFT} {bundle.config.notice}" if bundle.config.demo else MACHINE_DRAFT


@dataclass
class Clue:
    """A disease clue the model selected for an image, and where on the image it looked."""

    label: str  # the CheXbert label of its template
    text: str  # "Clue: <severity> <disease> at <location>"
    weight: float  # its share of softmax(v . c) over the 14 clues
    attention: list[list[float]]  # (grid, grid) over the patch grid, summing to 1


@dataclass
class DraftPlan:
    """One image, ready for the language model."""

    prompt_embeds: torch.Tensor  # (T, H)
    neighbors: list[Neighbor]
    findings: dict[str, float]  # probability per CheXbert label
    suggested: list[str]  # the findings named in the prompt (probability above the bundle's threshold)
    clues: list[Clue] = field(default_factory=list)  # empty for a model without clues


@dataclass
class Draft:
    """A generated draft with what it leaned on."""

    text: str
    finish_reason: str
    token_ids: tuple[int, ...]
    neighbors: list[Neighbor]
    findings: dict[str, float]
    suggested: list[str]
    clues: list[Clue] = field(default_factory=list)


class Drafter:
    """The part of the model in front of the language model."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.encoder = factory.load_vision(bundle)
        self.heads = factory.load_heads(bundle)
        self.visual_prompt = factory.load_visual_prompt(bundle)
        self.prompt_texts = factory.load_prompt_texts(bundle)
        self.retriever = factory.load_retriever(bundle)
        self.embedder = factory.load_prompt_embedder(bundle)
        self.image_size = bundle.config.vision.image_size
        self.decode_side = decode_side(self.image_size)  # the longest_side to decode uploads at
        self.k = bundle.config.retrieval.k

    @torch.no_grad()
    def plan(
        self, images: Sequence[np.ndarray], instruction: str | None | Sequence[str | None] = None,
        timings: dict[str, float] | None = None, findings: Sequence[Sequence[str]] | None = None,
    ) -> list[DraftPlan]:
        """Prompts for decoded grayscale images (any size, float in [0, 1]), in one batch.

        instruction: one for every image, or one per image (a server's micro-batch of requests);
        timings: if given, gets the seconds of the batch's stages "vision", "retrieval" and "fusion";
        findings: for each image, the finding names its prompt states instead of the heads' suggestions
        (a diagnostic: what the drafts make of a right findings line, bench/demo_quality.py).
        """
        if not images:
            return []
        instructions = [instruction] * len(images) if instruction is None or isinstance(instruction, str) else instruction
        if len(instructions) != len(images):
            raise ValueError(f"{len(instructions)} instructions for {len(images)} images")
        clock = _StageClock(timings)
        batch = torch.from_numpy(np.stack([to_model_input(image, self.image_size) for image in images]))
        seen = self.encoder(batch[:, None])  # pooled (B, E), tokens (B, N, W)
        label_logits, entity_logits = self.heads(seen.pooled)  # (B, 14), (B, 75)
        probabilities = torch.sigmoid(label_logits).numpy()
        suggested = suggest(probabilities, self.heads.thresholds.numpy())
        clock.lap("vision")
        neighbors = self.retriever.search(seen.pooled, entity_logits, self.k)
        references = [[n.report for n in found] for found in neighbors]
        clock.lap("retrieval")
        visual = self.visual_prompt(seen.tokens, self._texts(references, entity_logits))  # tokens (B, V [+ 2L], H)
        clues = self._clues(visual.clues) if visual.clues is not None else [[] for _ in neighbors]
        plans = []
        if findings is not None and len(findings) != len(images):
            raise ValueError(f"{len(findings)} findings lines for {len(images)} images")
        for row, found in enumerate(neighbors):
            names = finding_names(suggested[row]) if findings is None else list(findings[row])
            embeds = self.embedder.prompt_embeds(visual.tokens[row], names, references[row], instructions[row])
            scores = {name: round(float(p), 4) for name, p in zip(CHEXBERT_LABELS, probabilities[row])}
            plans.append(DraftPlan(embeds, found, scores, names, clues[row]))
        clock.lap("fusion")  # projector, Sinkhorn fusion, clues and the prompt's assembly
        return plans

    def _texts(self, references: list[list[str]], entity_logits: torch.Tensor) -> PromptTexts | None:
        """The encoded text prompts the visual prompt takes: LRP existence from the entity head."""
        if self.prompt_texts is None:
            return None
        present = present_entities(entity_logits, self.bundle.config)  # (B, 75)
        return self.prompt_texts.texts_for(self.visual_prompt, references, present)

    def _clues(self, output: ClueOutput) -> list[list[Clue]]:
        """The selected clues of each image, heaviest first, with their attention on the patch grid."""
        grid = self.encoder.grid
        texts = self.prompt_texts.clue_texts
        return [
            [
                Clue(
                    label=CHEXBERT_LABELS[int(index)],
                    text=texts[int(index)],
                    weight=round(float(weight), 4),
                    attention=output.clue_attention[row, j].reshape(grid, grid).numpy().round(5).tolist(),
                )
                for j, (index, weight) in enumerate(zip(output.selected[row], output.selected_weights[row]))
            ]
            for row in range(output.selected.shape[0])
        ]


class _StageClock:
    """Seconds since the previous lap, into a timings dict (or nowhere)."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings
        self.mark = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.mark
        self.mark = now


class LocalDrafter:
    """Drafts in this process with transformers: the Drafter plus the language model and its LoRA."""

    def __init__(self, bundle: Bundle):
        self.drafter = Drafter(bundle)
        self.model = factory.load_generator(bundle).eval()
        self.tokenizer = self.drafter.embedder.tokenizer

    def draft(
        self, images: Sequence[np.ndarray], settings: SamplingSettings | None = None,
        findings: Sequence[Sequence[str]] | None = None,
    ) -> list[Draft]:
        """Drafts for a batch of decoded images; `findings` as in `Drafter.plan`."""
        plans = self.drafter.plan(images, findings=findings)
        if not plans:
            return []
        settings = settings or SamplingSettings()
        generations = generate_hf(self.model, self.tokenizer, [p.prompt_embeds for p in plans], settings)
        return [
            Draft(g.text, g.finish_reason, g.token_ids, p.neighbors, p.findings, p.suggested, p.clues)
            for g, p in zip(generations, plans)
        ]
