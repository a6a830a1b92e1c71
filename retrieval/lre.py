"""REVTAF's Learnable Retrieval Enhancer (LRE, section 3.3): entity logits -> hyperbolic embedding.

An image's 75 MedKLIP entity logits go through a small hyperbolic neural network (HNN, Ganea et
al. 2018) onto the Poincare ball of curvature -c (REVTAF: c = 0.01, 75 -> 512 -> 512). It learns
from the batch alone, with no labelled pairs: for each study, the other study of the batch whose
report is nearest in label status (Hamming distance, eq. 6) must be its nearest in the ball
(cross-entropy over negative geodesic distances, eq. 7). At inference, the training study nearest
in the ball gives the reference report (`retrieval.hyperbolic_index` searches it exactly).

The manifold maths (Mobius addition and matrix-vector product, exp/log maps at the origin, and the
geodesic distance of eq. 3-4) is geoopt's `PoincareBall`.
"""

from __future__ import annotations

import math

import geoopt
import numpy as np
import torch
from torch import nn

from retrieval.hyperbolic_index import lift_to_hyperboloid, reproducible_geoopt
from retrieval.metrics import hamming_distances


class MobiusLinear(nn.Module):
    """A hyperbolic linear layer: W (x) x (+) b, the Mobius matrix-vector product then the Mobius
    addition of a bias that is itself a point of the ball (Ganea et al. 2018, section 3.2)."""

    def __init__(self, ball: geoopt.PoincareBall, in_features: int, out_features: int):
        super().__init__()
        self.ball = ball
        self.weight = nn.Parameter(torch.empty(out_features, in_features))  # cpu: a parameter
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation
        self.bias = geoopt.ManifoldParameter(torch.zeros(out_features), manifold=ball)  # cpu: a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ball.mobius_add(self.ball.mobius_matvec(self.weight, x), self.bias)


class RetrievalEnhancer(nn.Module):
    """The HNN of the LRE: entity logits (B, 75) -> points h (B, dim) of the Poincare ball.

    expmap0 puts the logits on the ball; between the two Mobius layers, ReLU acts in the tangent
    space at the origin (log0, ReLU, exp0: the Mobius version of a pointwise non-linearity).
    """

    def __init__(self, in_features: int, hidden: int, dim: int, curvature: float):
        super().__init__()
        if not curvature > 0:
            raise ValueError(f"curvature must be positive (the ball has curvature -c), got {curvature!r}")
        self.in_features, self.hidden, self.dim, self.curvature = in_features, hidden, dim, float(curvature)
        self.ball = geoopt.PoincareBall(c=self.curvature)
        self.first = MobiusLinear(self.ball, in_features, hidden)
        self.second = MobiusLinear(self.ball, hidden, dim)

    def forward(self, entity_logits: torch.Tensor) -> torch.Tensor:
        if entity_logits.dim() != 2 or entity_logits.shape[1] != self.in_features:
            raise ValueError(f"entity logits must have shape (B, {self.in_features}), got {tuple(entity_logits.shape)}")
        with reproducible_geoopt():
            x = self.ball.expmap0(entity_logits)
            x = self.ball.expmap0(torch.relu(self.ball.logmap0(self.first(x))))
            return self.ball.projx(self.second(x))  # kept strictly inside the ball

    def pairwise_distances(self, points: torch.Tensor) -> torch.Tensor:
        """(B, B) geodesic distances d_c(h_i, h_j) (eq. 3, 5)."""
        with reproducible_geoopt():
            return self.ball.dist(points[:, None, :], points[None, :, :])

    def config(self) -> dict:
        return {"in_features": self.in_features, "hidden": self.hidden, "dim": self.dim, "curvature": self.curvature}


def nearest_in_labels(status: torch.Tensor) -> torch.Tensor:
    """(B, B) target distribution of eq. 7: each row spread evenly over the other samples at the
    smallest Hamming distance.

    REVTAF takes one index pi_i, the argmin. Ties are the rule, not the exception (every normal
    report has the same status vector), and an argmin would pick among them by batch position;
    sharing the target between them is the same loss wherever the nearest sample is unique.
    """
    if status.dim() != 2 or len(status) < 2:
        raise ValueError(f"the ranking loss needs a batch of at least 2 status vectors (B, L), got {tuple(status.shape)}")
    status = status.cpu().numpy()
    hamming = torch.from_numpy(hamming_distances(status, status)).float()  # eq. 6
    hamming.fill_diagonal_(math.inf)  # a study is not its own neighbour
    nearest = hamming == hamming.min(dim=1, keepdim=True).values
    return nearest.float() / nearest.sum(dim=1, keepdim=True)


def ranking_loss(distances: torch.Tensor, status: torch.Tensor) -> torch.Tensor:
    """L_rank = CE(-D_hat, Pi) (eq. 7): the hyperbolic distances as logits of which other sample is
    nearest in labels, the diagonal masked before the softmax."""
    if distances.shape != (len(status), len(status)):
        raise ValueError(f"distances must be (B, B) for {len(status)} status vectors, got {tuple(distances.shape)}")
    diagonal = torch.eye(len(distances), dtype=torch.bool, device=distances.device)
    log_p = torch.log_softmax((-distances).masked_fill(diagonal, -math.inf), dim=1)
    target = nearest_in_labels(status).to(distances.device)
    return -(target * log_p.masked_fill(diagonal, 0.0)).sum(dim=1).mean()


_CHUNK_ELEMENTS = 1 << 24  # rows x N entries of a chunk's matrices: 128 MiB each in float64
_MAX_CHUNK_ROWS = 1024


def label_neighbours(
    status: np.ndarray,
    points: np.ndarray,
    curvature: float,
    k: int,
    device: str | torch.device = "cpu",
    chunk_rows: int | None = None,
) -> np.ndarray:
    """(N, k) rows of the k other studies nearest in label status (Hamming, eq. 6), ties broken by
    the learned hyperbolic distance between their embeddings `points` (N, dim).

    REVTAF's references during training: the report nearest in labels stands in for the one the
    trained LRE will retrieve at inference, so the generator learns from relevant references.

    Each row's order is that of a stable sort by (Hamming distance, Lorentz product, index), the row
    itself never included. It runs on `device` (training passes its own, e.g. "cuda") a chunk of
    rows at a time, `chunk_rows` of them (default: at most 1024, and at most 2^24 / N so that a
    chunk's (rows, N) float64 matrices stay within 128 MiB each), with a top-k selection per chunk
    instead of a sort of all N: O(N^2 (L + dim)) products, O(N^2) memory traffic.

    The Lorentz products are float64 matrix products; BLAS libraries (numpy's, torch's CPU one, a
    GPU's) may round them differently in the last bits, so two different points whose products with
    a row are a few ulps apart may come out in either order on another device (or than in the first,
    np.lexsort implementation). The same point twice ties exactly on every device (each distinct
    point's product is computed once) and goes to the lower index, as in a stable sort.
    """
    status, points = np.asarray(status), np.asarray(points, dtype=np.float64)
    if len(status) != len(points) or not 0 < k < len(status):
        raise ValueError(
            f"need 0 < k < N status vectors and as many points, got k={k}, {len(status)}, {len(points)}"
        )
    if status.ndim != 2 or not (status.dtype == bool or np.issubdtype(status.dtype, np.number)):
        raise ValueError(f"status must be (N, L) 0/1 or booleans, got shape {status.shape}, {status.dtype}")
    if not np.isin(status, (0, 1)).all():
        raise ValueError("status must hold only 0/1 or booleans")
    if points.ndim != 2 or not np.isfinite(points).all() or not (curvature * (points**2).sum(axis=1) < 1).all():
        raise ValueError(f"points must be (N, dim), finite, inside the Poincare ball of curvature -{curvature}")
    # Lorentz products with each distinct point once: the same point twice gives the same product to
    # the bit, whatever the BLAS's blocking (a tile's edge may round a column apart from its twin).
    distinct, column_point = np.unique(points, axis=0, return_inverse=True)
    lifted = lift_to_hyperboloid(points, curvature)  # (N, dim + 1)
    repeats = len(distinct) < len(points)
    distinct = lift_to_hyperboloid(distinct, curvature) if repeats else lifted  # (U, dim + 1)
    n = len(status)
    if chunk_rows is None:
        chunk_rows = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_ELEMENTS // n))
    elif chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    device = torch.device(device)
    # eq. 6 for 0/1 entries, |a - b| = a (1 - b) + (1 - a) b: one product of [a, 1 - a] and [1 - b, b],
    # sums of 0/1 products, exact in float64
    status = torch.from_numpy(status.astype(np.float64)).to(device)  # (N, L)
    left, right = torch.cat([status, 1.0 - status], dim=1), torch.cat([1.0 - status, status], dim=1)
    lifted, distinct = torch.from_numpy(lifted).to(device), torch.from_numpy(distinct).to(device)
    column_point = torch.from_numpy(column_point.reshape(-1)).to(device)  # (N,) row of `distinct`
    time, space = lifted[:, :1], lifted[:, 1:]
    neighbours = torch.empty((n, k), dtype=torch.int64, device=device)
    for start in range(0, n, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n))
        hamming = left[rows] @ right.T  # (n, N), eq. 6
        hamming.diagonal(start).fill_(math.inf)  # never the row itself
        # cosh(sqrt(c) d) = -<X, Y>_L grows with d: the Lorentz product orders the ties by distance.
        lorentz = time[rows] @ distinct[:, :1].T - space[rows] @ distinct[:, 1:].T  # (n, U)
        if repeats:
            lorentz = lorentz[:, column_point]  # (n, N)
        neighbours[rows] = _smallest_by_keys(hamming, lorentz, k)
    return neighbours.cpu().numpy()


def _smallest_by_keys(first: torch.Tensor, second: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) columns of the k smallest entries of each row by (first, second, column index), in that
    order: the first k of a stable lexicographic sort, without sorting the N columns.

    first must have at least k finite entries per row, second must be finite (NaN compares false).
    """
    # The k-th smallest first key: every column below it is in; of those at it, only some.
    cut = torch.topk(first, k, dim=1, largest=False).values.amax(dim=1, keepdim=True)  # (n, 1)
    below, at = first < cut, first == cut
    wanted = k - below.sum(dim=1, keepdim=True)  # (n, 1), 1 <= wanted <= k
    # Among those at it, the `wanted` smallest second keys: again all below the wanted-th, some at it.
    second_at = torch.where(at, second, math.inf)
    smallest = torch.topk(second_at, k, dim=1, largest=False, sorted=True).values  # ascending
    second_cut = smallest.gather(1, wanted - 1)  # (n, 1), finite: `at` holds at least `wanted`
    chosen = below | (second_at < second_cut)
    tied = second_at == second_cut
    still = k - chosen.sum(dim=1, keepdim=True)  # (n, 1) >= 1
    if bool((tied.sum(dim=1, keepdim=True) > still).any()):  # more tied than wanted somewhere
        tied &= tied.cumsum(dim=1) <= still  # the lowest columns first, as a stable sort
    chosen |= tied
    columns = chosen.nonzero()[:, 1].view(len(first), k)  # k per row, by column
    # Order the k: a stable sort by the second key, then a stable one by the first.
    order = torch.sort(second.gather(1, columns), dim=1, stable=True).indices
    columns = columns.gather(1, order)
    order = torch.sort(first.gather(1, columns), dim=1, stable=True).indices
    return columns.gather(1, order)
