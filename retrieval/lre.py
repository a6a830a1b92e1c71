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
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation
        self.bias = geoopt.ManifoldParameter(torch.zeros(out_features), manifold=ball)

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


def label_neighbours(status: np.ndarray, points: np.ndarray, curvature: float, k: int) -> np.ndarray:
    """(N, k) rows of the k other studies nearest in label status (Hamming, eq. 6), ties broken by
    the learned hyperbolic distance between their embeddings `points` (N, dim).

    REVTAF's references during training: the report nearest in labels stands in for the one the
    trained LRE will retrieve at inference, so the generator learns from relevant references.
    """
    if len(status) != len(points) or not 0 < k < len(status):
        raise ValueError(f"need 0 < k < N status vectors and as many points, got k={k}, {len(status)}, {len(points)}")
    lifted = lift_to_hyperboloid(np.asarray(points, dtype=np.float64), curvature)  # (N, dim + 1)
    neighbours = np.empty((len(status), k), dtype=np.int64)
    for start in range(0, len(status), 256):
        rows = slice(start, start + 256)
        hamming = hamming_distances(status[rows], status)  # (n, N), eq. 6
        # cosh(sqrt(c) d) = -<X, Y>_L grows with d: the Lorentz product orders the ties by distance.
        lorentz = lifted[rows, :1] @ lifted[:, :1].T - lifted[rows, 1:] @ lifted[:, 1:].T  # (n, N)
        for i, row in enumerate(range(len(status))[rows]):
            ranked = np.lexsort((lorentz[i], hamming[i]))  # by Hamming, then by distance
            neighbours[row] = ranked[ranked != row][:k]
    return neighbours
