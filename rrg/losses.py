"""Training losses of the rrg core, one module each, side by side (as open_clip keeps its losses).

The language-model losses are the causal LM cross-entropy computed by transformers from `labels`.
"""

from __future__ import annotations

import torch
from torch import nn


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
