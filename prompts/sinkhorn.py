"""Multi-Prompt Sinkhorn Attention (OTSeg's MPSA): one fusion branch of REVTAF (eq. 10-11).

Plain cross-attention lets every visual token pick its prompts on its own (a softmax per row), so
all tokens tend to pile onto the same salient prompt. MPSA instead solves an entropic optimal
transport problem between the N visual tokens and the P prompts of each image: cost
C = 1 - cos(Q, K), mass 1/N per token and 1/P per prompt. The column constraint is the point:
every prompt must spend its mass somewhere, and it wins the tokens it fits best, so different
prompts light up different regions. The plan T then re-weights the attention over the prompt
values, and its columns are the per-prompt attention maps that FCC and the UI heat maps use.

Layout: (batch, visual tokens, prompts); one problem per (image, head). REVTAF's released code
passes the image to OTSeg's `AttentionOT` as `[1, 49, B, C]`, which that code reads as
(queries, classes, batch, channels). The query axis is the one OTSeg transports prompts onto, so
with size 1 each visual token becomes its own (M prompts x 1) problem, whose only feasible plan
is uniform: the "attention" is a plain mean of the values, whatever the cost.
`tests/prompts/test_sinkhorn.py` pins that bug down and shows this module is not fooled by it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from ot.batch import bregman_log_projection_batch
from torch import Tensor, nn

# Affinity given to padded prompt columns. Any finite value works; it must not be -inf: the solver
# would then take a logsumexp over a column of -inf, and v = log(0) - (-inf) is NaN.
_PADDED_AFFINITY = -1e4


def transport_plan(
    cost: Tensor,
    prompt_mask: Tensor | None = None,
    eps: float = 0.05,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Tensor:
    """Entropic OT plan (B, N, P): rows sum to 1/N, valid prompt columns to 1/P_valid, padding to 0.

    cost: (B, N, P) transport cost between visual tokens and prompts.
    prompt_mask: (B, P) bool, True for real prompts; None means all are real.
    """
    if cost.ndim != 3:
        raise ValueError(f"cost must be (B, N, P), got shape {tuple(cost.shape)}")
    batch, n_tokens, n_prompts = cost.shape
    if prompt_mask is None:
        prompt_mask = torch.ones(batch, n_prompts, dtype=torch.bool, device=cost.device)
    elif prompt_mask.shape != (batch, n_prompts):
        raise ValueError(f"prompt_mask must be {(batch, n_prompts)}, got {tuple(prompt_mask.shape)}")
    prompt_mask = prompt_mask.to(device=cost.device, dtype=torch.bool)

    # 100 exp/logsumexp sweeps in half precision drift the marginals: solve in at least float32.
    work = cost.to(torch.promote_types(cost.dtype, torch.float32))  # (B, N, P)
    # A problem with no real prompt would have b = 0 everywhere, and the row update then divides
    # by zero mass (NaN plan). Solve it over all columns and zero its plan afterwards.
    has_prompt = prompt_mask.any(dim=1, keepdim=True)  # (B, 1)
    solve_mask = prompt_mask | ~has_prompt  # (B, P)

    a = work.new_full((batch, n_tokens), 1.0 / n_tokens)  # (B, N)
    b = solve_mask.to(work.dtype) / solve_mask.sum(dim=1, keepdim=True)  # (B, P)
    # Padding is removed by b = 0, not by the affinity: log b = -inf makes the column potential
    # v = -inf, so exp(K + u + v) is exactly 0 there and those columns never enter the row update.
    # The finite fill only cuts the padded keys out of the gradient (verified with POT 0.9.7).
    affinity = (-work / eps).masked_fill(~solve_mask[:, None, :], _PADDED_AFFINITY)  # (B, N, P)
    # grad="autodiff" backpropagates through the iterations; POT's default "detach" gives none.
    plan = bregman_log_projection_batch(affinity, a, b, max_iter=max_iter, tol=tol, grad="autodiff")["T"]
    plan = plan * has_prompt[:, :, None].to(plan.dtype)  # (B, N, P)
    return plan.to(cost.dtype)


class SinkhornAttentionOutput(NamedTuple):
    """Fused visual features and the per-prompt attention maps of one MPSA branch."""

    fused: Tensor  # (B, N, dim): F_c of eq. 11
    attention_maps: Tensor  # (B, P, N): M_c of eq. 10, averaged over heads, 0 on padded prompts


class MultiPromptSinkhornAttention(nn.Module):
    """One MPSA branch (GRPs or LRPs): visual tokens attend to prompts through a Sinkhorn plan."""

    def __init__(
        self, visual_dim: int, prompt_dim: int, dim: int, *, heads: int, eps: float, max_iter: int, tol: float,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.eps, self.max_iter, self.tol = heads, eps, max_iter, tol
        self.phi_q = nn.Linear(visual_dim, dim)
        self.phi_k = nn.Linear(prompt_dim, dim)
        self.phi_v = nn.Linear(prompt_dim, dim)
        # Eq. 11 adds F_v to the attended features; a linear map only where the widths differ.
        self.visual_residual = nn.Linear(visual_dim, dim) if visual_dim != dim else nn.Identity()
        self.norm = nn.LayerNorm(dim)
        self.f_proj = nn.Linear(dim, dim)

    def forward(
        self, visual: Tensor, prompts: Tensor, prompt_mask: Tensor | None = None
    ) -> SinkhornAttentionOutput:
        """Fuse prompts into visual tokens.

        visual: (B, N, visual_dim) patch tokens F_v; prompts: (B, P, prompt_dim) prompt embeddings
        F_t; prompt_mask: (B, P) bool, True for real prompts (references differ in sentence count).
        """
        batch, n_tokens, _ = visual.shape
        n_prompts, heads = prompts.shape[1], self.heads

        q = self.phi_q(visual).view(batch, n_tokens, heads, -1).transpose(1, 2)  # (B, H, N, d_h) eq. 10
        k = self.phi_k(prompts).view(batch, n_prompts, heads, -1).transpose(1, 2)  # (B, H, P, d_h) eq. 10
        v = self.phi_v(prompts).view(batch, n_prompts, heads, -1).transpose(1, 2)  # (B, H, P, d_h) eq. 10

        cosine = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)  # (B, H, N, P)
        cost = (1.0 - cosine).reshape(batch * heads, n_tokens, n_prompts)  # (B*H, N, P)
        # reshape flattens (B, H) batch-major, so each image's mask repeats once per head.
        head_mask = None if prompt_mask is None else prompt_mask.repeat_interleave(heads, dim=0)  # (B*H, P)
        plan = transport_plan(cost, head_mask, self.eps, self.max_iter, self.tol)  # (B*H, N, P)
        plan = plan.view(batch, heads, n_tokens, n_prompts)  # (B, H, N, P)

        # Normalisation: T * N, so each visual token's row is a distribution over the real prompts
        # (sums to 1) and attended = a convex mix of prompt values, on the scale of softmax
        # attention. OTSeg's other choice, T * N * P, makes the scale grow with the number of
        # prompts, so a report with more sentences (or more padding) would shift the features.
        attention = plan * n_tokens  # (B, H, N, P)
        attended = (attention @ v).transpose(1, 2).reshape(batch, n_tokens, -1)  # (B, N, dim) eq. 10
        fused = self.f_proj(self.norm(attended + self.visual_residual(visual)))  # (B, N, dim) eq. 11

        # Per-prompt map over visual tokens: the share of each token's attention the prompt wins,
        # in [0, 1], which is what the soft IoU of FCC (eq. 13) and the heat maps expect.
        attention_maps = attention.mean(dim=1).transpose(1, 2)  # (B, P, N)
        return SinkhornAttentionOutput(fused=fused, attention_maps=attention_maps)
