"""Fine-grained Cross-modal Consistency (FCC) loss of REVTAF (eq. 12-14).

Prompts that say the same thing should look at the same place: a GRP sentence ("small left
effusion") and an LRP triplet ("effusion at left costophrenic: present") with similar text
embeddings should have overlapping MPSA attention maps. The loss is 1 - S * O averaged over
(GRP, LRP) pairs, with S the sigmoid of the cosine between the texts and O the soft IoU of the maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def soft_iou(maps_a: Tensor, maps_b: Tensor, eps: float = 1e-8) -> Tensor:
    """Soft IoU of every map in `maps_a` with every map in `maps_b`: (B, N_a, M) (eq. 13).

    maps_a: (B, N_a, L) and maps_b: (B, M, L), non-negative maps over the same L visual tokens.
    """
    # No threshold: REVTAF binarises the maps at 0.5 before the IoU, which has zero gradient
    # almost everywhere, so FCC could never move the image side. Element-wise min over max keeps
    # the IoU differentiable in the maps themselves.
    a = maps_a[:, :, None, :]  # (B, N_a, 1, L)
    b = maps_b[:, None, :, :]  # (B, 1, M, L)
    intersection = torch.minimum(a, b).sum(dim=-1)  # (B, N_a, M)
    union = torch.maximum(a, b).sum(dim=-1)  # (B, N_a, M)
    # eps keeps two all-zero maps (e.g. padded prompts) at IoU 0 instead of 0/0.
    return intersection / (union + eps)  # (B, N_a, M)


class FineGrainedConsistencyLoss(nn.Module):
    """L_fcc = mean over valid (GRP n, LRP m) pairs of 1 - sigmoid(cos(t_n, t_m)) * IoU(M_n, M_m)."""

    def forward(
        self,
        grp_text: Tensor,
        lrp_text: Tensor,
        grp_maps: Tensor,
        lrp_maps: Tensor,
        grp_mask: Tensor | None = None,
        lrp_mask: Tensor | None = None,
    ) -> Tensor:
        """Scalar FCC loss: eq. 14 per study over its valid pairs, then the mean over studies.

        grp_text: (B, N, d), lrp_text: (B, M, d) prompt embeddings; grp_maps: (B, N, L),
        lrp_maps: (B, M, L) their attention maps; masks: (B, N) / (B, M) bool, True for real prompts.
        """
        batch, n_grp, _ = grp_text.shape
        n_lrp = lrp_text.shape[1]
        if grp_mask is None:
            grp_mask = torch.ones(batch, n_grp, dtype=torch.bool, device=grp_text.device)
        if lrp_mask is None:
            lrp_mask = torch.ones(batch, n_lrp, dtype=torch.bool, device=lrp_text.device)

        grp_unit, lrp_unit = F.normalize(grp_text, dim=-1), F.normalize(lrp_text, dim=-1)
        cosine = grp_unit @ lrp_unit.transpose(1, 2)  # (B, N, M) eq. 12
        similarity = torch.sigmoid(cosine)  # (B, N, M): the paper's sigmoid normalisation to [0, 1]
        overlap = soft_iou(grp_maps, lrp_maps)  # (B, N, M) eq. 13
        pair_loss = 1.0 - similarity * overlap  # (B, N, M) eq. 14

        pair_mask = (grp_mask[:, :, None] & lrp_mask[:, None, :]).to(pair_loss.dtype)  # (B, N, M)
        pairs_per_study = pair_mask.sum(dim=(1, 2))  # (B,)
        # Eq. 14 averages within one report; averaging per study first keeps a reference with many
        # sentences from outweighing the others in the batch.
        study_loss = (pair_loss * pair_mask).sum(dim=(1, 2)) / pairs_per_study.clamp_min(1.0)  # (B,)
        has_pairs = (pairs_per_study > 0).to(study_loss.dtype)  # (B,)
        return (study_loss * has_pairs).sum() / has_pairs.sum().clamp_min(1.0)
