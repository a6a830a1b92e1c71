"""The whole training objective, in one place: each term with its paper and equation, and the stage
that minimises it. REVTAF's eq. 15 with TRRG's disease-clue term,

    L = L_task + alpha L_rank + beta L_fcc + L_dc

plus what rrg adds (the finding heads' loss, the clue selection loss) and MedFuse-CLIP's pre-training:

    term        source                              what it trains                          stage
    L_task      causal LM cross-entropy             the report given its prompt             language, drafting
    L_rank      REVTAF eq. 7 (`ranking_loss`)       the LRE: near in labels, near on the ball index
    L_fcc       REVTAF eq. 14, beta = 0.5           the GRP and LRP attention maps agree    drafting
    L_dc        TRRG eq. 4, weight 1                the image and clue summaries agree       drafting
    selection   ours (`clue_selection_loss`)        clue weights toward the study's labels  drafting
    findings    ours (`FindingLoss`)                the label and entity heads              vision
    L_MedFuse   MedFuse-CLIP eq. 11                 both open_clip towers                   contrastive

L_task is computed by transformers from the `labels` of each example (the prompt's positions are
ignored). L_rank trains the LRE alone, in the index stage, because the drafting stage learns from the
references it retrieves: alpha (REVTAF: 2) would only rescale its learning rate, so rrg has none.
The terms implemented beside the modules they train (the LRE's in `retrieval.lre`, FCC in
`prompts.consistency`, L_dc in `prompts.clues`, MedFuse-CLIP in `retrieval.medfuse_clip`) are
imported here, so a stage takes every loss from this module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prompts.clues import DiseaseClueLoss
from prompts.consistency import FineGrainedConsistencyLoss
from retrieval.lre import ranking_loss
from retrieval.medfuse_clip import MedFuseLoss, MedFuseLossOutput, hard_negative_mask
from rrg.model.vision import VisionEncoder
from rrg.model.visual_prompt import PromptTexts, VisualPromptOutput

__all__ = ["FindingLoss", "MedFuseLoss", "VisualPromptLosses", "clue_selection_loss", "contrastive_loss",
           "loss_tail", "ranking_loss"]


class FindingLoss(nn.Module):
    """Binary cross-entropy over the label heads, and over the entity heads where the report
    mentions the entity (MedKLIP's -1, unmentioned, is ignored rather than read as absent)."""

    def forward(self, label_logits, entity_logits, label_targets, entity_targets,
                whole_entity_targets: torch.Tensor | None = None) -> torch.Tensor:
        """The mean loss of the batch; with `whole_entity_targets` (the entity targets of a whole global
        batch this batch is part of) this batch's share of the whole batch's mean loss."""
        whole = entity_targets if whole_entity_targets is None else whole_entity_targets
        label_loss = nn.functional.binary_cross_entropy_with_logits(label_logits, label_targets, reduction="sum")
        label_loss = label_loss / (len(whole) * label_targets.shape[1])
        mentioned = entity_targets >= 0  # (B, 75)
        whole_mentioned = int((whole >= 0).sum())
        if not whole_mentioned:
            return label_loss
        entity_loss = nn.functional.binary_cross_entropy_with_logits(
            entity_logits[mentioned], entity_targets[mentioned].float(), reduction="sum"
        )
        return label_loss + entity_loss / whole_mentioned


class VisualPromptLosses(nn.Module):
    """The visual prompt's losses beside the language model's: beta x L_fcc (REVTAF eq. 14) when both
    fusion branches run, L_dc (TRRG eq. 4) and the clue selection loss when clues run."""

    def __init__(self, fcc_weight: float, dc_weight: float, selection_weight: float):
        super().__init__()
        self.fcc_weight, self.dc_weight, self.selection_weight = fcc_weight, dc_weight, selection_weight
        self.fcc = FineGrainedConsistencyLoss()
        self.dc = DiseaseClueLoss()

    def forward(self, output: VisualPromptOutput, texts: PromptTexts, label_targets: torch.Tensor,
                whole_targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Weighted terms by name; label_targets: (B, 14) 1.0 where the study's label is positive. With
        `whole_targets` (those of a whole global batch this batch is part of), each term is this batch's
        share of the whole batch's: each is a mean over studies (over labelled ones for the selection)."""
        per_study = 1.0 if whole_targets is None else len(label_targets) / len(whole_targets)
        terms = {}
        if output.grp_maps is not None and output.lrp_maps is not None and self.fcc_weight:
            fcc = self.fcc(texts.grp, texts.lrp, output.grp_maps, output.lrp_maps, texts.grp_mask)
            terms["fcc"] = self.fcc_weight * fcc * per_study
        if output.clues is not None:
            if self.dc_weight:
                dc = self.dc(output.clues.visual_summary, output.clues.clue_summary)
                terms["dc"] = self.dc_weight * dc * per_study
            if self.selection_weight:
                selection = clue_selection_loss(output.clues.all_weights, label_targets)
                if whole_targets is not None:
                    labelled, whole_labelled = _labelled(label_targets), _labelled(whole_targets)
                    selection = selection * (labelled / whole_labelled if whole_labelled else 0.0)
                terms["clue_selection"] = self.selection_weight * selection
        return terms


def _labelled(label_targets: torch.Tensor) -> int:
    """Studies with at least one positive label (those the clue selection loss counts)."""
    return int((label_targets.sum(dim=1) > 0).sum())


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


def contrastive_loss(
    encoder: VisionEncoder, loss: MedFuseLoss, images: torch.Tensor, tokens: torch.Tensor, status: np.ndarray
) -> MedFuseLossOutput:
    """MedFuse-CLIP's loss (eq. 11) on one batch of images, their report tokens and label statuses.

    Hard negatives: with no patient ids (IU X-Ray), every other report of the batch with another
    label-status vector may be one (eq. 7); the text tower's own embeddings, detached, stand in for the
    paper's Clinical-BERT similarity (eq. 8).
    """
    image_embeddings = encoder(images).pooled  # (B, E)
    text_embeddings = encoder.clip.encode_text(tokens)  # (B, E)
    unit_text = F.normalize(text_embeddings.detach(), dim=-1)
    negatives = hard_negative_mask(torch.from_numpy(status))  # other labels, no patient ids here (eq. 7)
    return loss(image_embeddings, text_embeddings, negatives, unit_text @ unit_text.T)


def loss_tail(losses: list[float]) -> float | None:
    """The mean of the last 20 step losses, rounded: a stage's final loss in its summary."""
    return round(float(np.mean(losses[-20:])), 4) if losses else None
