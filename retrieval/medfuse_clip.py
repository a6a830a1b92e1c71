"""MedFuse-CLIP's training objective: symmetric InfoNCE plus a margin over weighted hard negatives
(MedFuse-CLIP section III.C-D, eqs. 7-11; DESIGN.md section 6).

For a batch of B image-report pairs, both embeddings are put on the unit sphere (eq. 5) and
s_ij = cos(image_i, text_j) (eq. 6), so s_ii scores the true pair. The loss is

    L = L_InfoNCE + lambda * L_margin                                            (eq. 11)

where InfoNCE pulls each true pair above the whole batch and the margin term asks s_ii to beat the
hard negatives of row i (reports of the same patient with other findings, eq. 7) by m.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on 1/tau: below it the logits cannot sharpen without bound


@dataclass(frozen=True)
class MedFuseLossOutput:
    """The scalar terms of eq. 11, apart so that training can log each."""

    total: torch.Tensor  # info_nce + lambda * margin
    info_nce: torch.Tensor  # eq. 9, the two directions averaged
    margin: torch.Tensor  # eq. 10, over the weighted hard negatives


class MedFuseLoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature plus lambda times the hard-negative margin loss.

    The temperature is learnt as a log-scale parameter, log(1/tau), as CLIP does: the step size then
    acts on the ratio of the temperature, and 1/tau stays positive. CLIP clamps that parameter at
    log(100) after each optimiser step; here it is clamped in place at the start of `forward`, which is
    the same thing one call later and leaves the gradient alive at the cap (clamping its exponential
    inside the graph would zero the gradient there and leave the temperature stuck).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        margin: float = 0.2,
        margin_weight: float = 0.5,
        hard_negatives: int = 4,
    ):
        super().__init__()
        if not _is_number(temperature) or not 1.0 / MAX_LOGIT_SCALE <= temperature:
            raise ValueError(
                f"temperature must be a number >= {1.0 / MAX_LOGIT_SCALE:g}, got {temperature!r}"
            )
        if not _is_number(margin) or not margin >= 0:
            raise ValueError(f"margin must be a number >= 0, got {margin!r}")
        if not _is_number(margin_weight) or not margin_weight >= 0:
            raise ValueError(f"margin_weight must be a number >= 0, got {margin_weight!r}")
        if isinstance(hard_negatives, bool) or not isinstance(hard_negatives, int) or hard_negatives <= 0:
            raise ValueError(f"hard_negatives must be a positive integer, got {hard_negatives!r}")
        self.margin = float(margin)  # m
        self.margin_weight = float(margin_weight)  # lambda
        self.hard_negatives = hard_negatives  # K
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))  # cpu: a parameter

    @property
    def temperature(self) -> float:
        """The current tau, as the next `forward` will use it."""
        return math.exp(-min(self.logit_scale.item(), math.log(MAX_LOGIT_SCALE)))

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        negatives: torch.Tensor,
        text_similarity: torch.Tensor,
    ) -> MedFuseLossOutput:
        """The loss of one batch.

        image_embeddings, text_embeddings: (B, D), row i of each from the same study, any length.
        negatives: (B, B) bool, negatives[i, j] when report j may be a hard negative of pair i (see
        `hard_negative_mask`); the diagonal is never one.
        text_similarity: (B, B) sim(h(T_i), h(T_j)) of a text encoder h, which picks and weights the
        hard negatives (eqs. 7-8); it is treated as a constant.
        """
        batch = _check_inputs(image_embeddings, text_embeddings, negatives, text_similarity)
        with torch.no_grad():
            self.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))
        image = F.normalize(image_embeddings, dim=1)  # (B, D), eq. 5
        text = F.normalize(text_embeddings, dim=1)  # (B, D), eq. 5
        similarity = image @ text.T  # (B, B) s_ij, eq. 6
        logits = self.logit_scale.exp() * similarity  # (B, B) s_ij / tau
        targets = torch.arange(batch, device=logits.device)
        # eq. 9 sums the image->text and text->image terms; CLIP averages them, which keeps the
        # InfoNCE term on the scale of one cross entropy and so keeps lambda = 0.5 meaningful.
        info_nce = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2  # eq. 9
        margin = self.margin_loss(similarity, negatives, text_similarity)
        return MedFuseLossOutput(
            total=info_nce + self.margin_weight * margin, info_nce=info_nce, margin=margin
        )

    def margin_loss(
        self, similarity: torch.Tensor, negatives: torch.Tensor, text_similarity: torch.Tensor
    ) -> torch.Tensor:
        """eq. 10 over the K hardest allowed negatives of each row, weighted by eq. 8.

        Eq. 10 as printed hinges on the single hardest negative, max_j s_ij; the text of section III.C
        keeps up to K = 4 negatives per pair, chosen by similarity in the text embedding space and
        "weighted proportionally to their similarity". This reads the two together: per row i,

            sum over the kept j of w_ij * max(0, m + s_ij - s_ii)

        with w_ij the softmax of the text similarities over the kept set (eq. 8), which is eq. 10
        itself when only one negative is allowed. Rows without allowed negatives add nothing and the
        mean runs over the rows that have some (0 when none has).

        The weights are constants: with gradients through them the model could lower the loss by
        making a violating negative's report look less like the positive's, instead of ranking the
        positive higher.
        """
        batch = len(similarity)
        allowed = negatives.to(similarity.device) & ~torch.eye(
            batch, dtype=torch.bool, device=similarity.device
        )
        text_similarity = text_similarity.detach().to(similarity.device, similarity.dtype)
        candidates = text_similarity.masked_fill(~allowed, -math.inf)  # (B, B) N_i, eq. 7
        closest, columns = candidates.topk(min(self.hard_negatives, batch), dim=1)  # (B, K) by text
        kept = torch.isfinite(closest)  # (B, K): rows with fewer than K negatives keep fewer
        has_negatives = kept.any(dim=1)  # (B,)
        # A row with nothing kept gets uniform weights over finite zeros, then all of them masked.
        closest = torch.where(has_negatives[:, None], closest, 0.0)
        weights = torch.softmax(closest, dim=1) * kept  # (B, K) w_ij, eq. 8
        positive = similarity.diagonal()[:, None]  # (B, 1) s_ii
        hinge = (self.margin + similarity.gather(1, columns) - positive).clamp(min=0)  # (B, K), eq. 10
        per_row = (weights * hinge).sum(dim=1)  # (B,)
        return per_row.sum() / has_negatives.sum().clamp(min=1)


def hard_negative_mask(
    label_vectors: np.ndarray | torch.Tensor, patient_ids: Sequence | None = None
) -> torch.Tensor:
    """(B, B) bool: j may be a hard negative of i when j != i, Y_j != Y_i and both share the patient.

    That is eq. 7, MIMIC-CXR's rule: another study of the same patient that describes different
    findings, so it looks alike yet must rank below the true report. Without patient ids (IU X-Ray,
    the demo set: one study per patient) every other sample with different labels is allowed, and
    the loss's choice of the K closest by text similarity then picks the reports close in wording but
    different in labels.

    label_vectors: (B, L) one row of labels per sample (e.g. CheXbert status vectors); rows that
    differ anywhere have different labels. patient_ids: B hashable ids, or None.
    """
    labels = torch.as_tensor(label_vectors)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError(f"label_vectors must have shape (B, L) with B >= 1, got {tuple(labels.shape)}")
    different = (labels[:, None, :] != labels[None, :, :]).any(dim=2)  # (B, B) Y_j != Y_i
    if patient_ids is not None:
        if isinstance(patient_ids, (str, bytes)):
            raise ValueError("patient_ids must hold one id per sample, not be one string")
        patient_ids = list(patient_ids)
        if len(patient_ids) != len(labels):
            raise ValueError(f"got {len(patient_ids)} patient_ids for {len(labels)} label vectors")
        codes = {patient: code for code, patient in enumerate(dict.fromkeys(patient_ids))}
        patients = torch.tensor([codes[patient] for patient in patient_ids], device=labels.device)  # (B,)
        different &= patients[:, None] == patients[None, :]  # same patient, eq. 7
    return different.fill_diagonal_(False)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_inputs(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    negatives: torch.Tensor,
    text_similarity: torch.Tensor,
) -> int:
    """The batch size B; ValueError on shapes or dtypes that do not fit one batch of pairs."""
    if image_embeddings.ndim != 2 or len(image_embeddings) == 0:
        raise ValueError(
            f"image_embeddings must have shape (B, D) with B >= 1, got {tuple(image_embeddings.shape)}"
        )
    if text_embeddings.shape != image_embeddings.shape:
        raise ValueError(
            f"text_embeddings must have the shape of image_embeddings {tuple(image_embeddings.shape)}, "
            f"got {tuple(text_embeddings.shape)}"
        )
    batch = len(image_embeddings)
    if negatives.shape != (batch, batch) or negatives.dtype != torch.bool:
        raise ValueError(
            f"negatives must be a ({batch}, {batch}) bool mask, got {tuple(negatives.shape)} {negatives.dtype}"
        )
    if text_similarity.shape != (batch, batch) or not text_similarity.is_floating_point():
        raise ValueError(
            f"text_similarity must be ({batch}, {batch}) floats, got {tuple(text_similarity.shape)} "
            f"{text_similarity.dtype}"
        )
    return batch
