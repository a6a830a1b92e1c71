"""Training losses of the rrg core, one module each, side by side (as open_clip keeps its losses).

The language-model losses are the causal LM cross-entropy computed by transformers from `labels`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prompts.clues import DiseaseClueLoss
from prompts.consistency import FineGrainedConsistencyLoss
from rrg.model.visual_prompt import PromptTexts, VisualPromptOutput


class FindingLoss(nn.Module):
    """Binary cross-entropy over the label heads, and over the entity heads where the report
    mentions the entity (MedKLIP's -1, unmentioned, is ignored rather than read as absent)."""

    def forward(self, label_logits, entity_logits, label_targets, entity_targets) -> torch.Tensor:
        label_loss = nn.functional.binary_cross_entropy_with_logits(label_logits, label_targets)
        mentioned = entity_targets >= 0  # (B, 75)
        if not mentioned.any():
            return label_loss
        entity_loss = nn.functional.binary_cross_entropy_with_logits(
            entity_logits[mentioned], entity_targets[mentioned].float()
        )
        return label_loss + entity_loss


class VisualPromptLosses(nn.Module):
    """The visual prompt's losses beside the language model's: beta x L_fcc (REVTAF eq. 14) when both
    fusion branches run, L_dc (TRRG eq. 4) and the clue selection loss when clues run."""

    def __init__(self, fcc_weight: float, dc_weight: float, selection_weight: float):
        super().__init__()
        self.fcc_weight, self.dc_weight, self.selection_weight = fcc_weight, dc_weight, selection_weight
        self.fcc = FineGrainedConsistencyLoss()
        self.dc = DiseaseClueLoss()

    def forward(self, output: VisualPromptOutput, texts: PromptTexts, label_targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted terms by name; label_targets: (B, 14) 1.0 where the study's label is positive."""
        terms = {}
        if output.grp_maps is not None and output.lrp_maps is not None and self.fcc_weight:
            fcc = self.fcc(texts.grp, texts.lrp, output.grp_maps, output.lrp_maps, texts.grp_mask)
            terms["fcc"] = self.fcc_weight * fcc
        if output.clues is not None:
            if self.dc_weight:
                terms["dc"] = self.dc_weight * self.dc(output.clues.visual_summary, output.clues.clue_summary)
            if self.selection_weight:
                terms["clue_selection"] = self.selection_weight * clue_selection_loss(output.clues.all_weights, label_targets)
        return terms


def clue_selection_loss(clue_weights: torch.Tensor, label_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy from the clue weights (B, 14) to the study's positive labels, spread evenly.

    Ours, not TRRG's: TRRG's v_cls . c_cls ranks clues well because its image encoder was
    pre-trained against disease prompts; without that stage the weights need this to mean anything.
    Studies with no positive label (all blank) do not count.
    """
    positives = label_targets.sum(dim=1)  # (B,)
    labelled = positives > 0
    if not labelled.any():
        return clue_weights.sum() * 0.0  # keeps the graph, adds nothing
    target = label_targets[labelled] / positives[labelled, None]  # (b, 14)
    return -(target * clue_weights[labelled].clamp_min(1e-12).log()).sum(dim=1).mean()


def loss_tail(losses: list[float]) -> float | None:
    """The mean of the last 20 step losses, rounded: a stage's final loss in its summary."""
    return round(float(np.mean(losses[-20:])), 4) if losses else None
