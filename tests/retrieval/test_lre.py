"""REVTAF's LRE: the HNN lands on the ball, eq. 6-7 are computed as written, and training it puts the
study nearest in labels nearest in the ball."""

from __future__ import annotations

import math
import subprocess
import sys

import geoopt
import numpy as np
import pytest
import torch

from retrieval.lre import RetrievalEnhancer, label_neighbours, nearest_in_labels, ranking_loss


def test_target_is_the_nearest_other_sample_shared_between_ties():
    status = torch.tensor([[1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1], [0, 1, 1, 0], [1, 0, 1, 1]])
    target = nearest_in_labels(status)
    assert torch.allclose(target.sum(dim=1), torch.ones(5))
    assert torch.equal(target[0], torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))  # its twin, never itself
    # Sample 2 is at distance 2 from samples 0, 1 and 3: the target is split three ways.
    assert torch.allclose(target[2], torch.tensor([1 / 3, 1 / 3, 0.0, 1 / 3, 0.0]))
    assert target.diagonal().eq(0).all()


def test_ranking_loss_is_cross_entropy_over_negative_distances_without_the_diagonal():
    status = torch.tensor([[1, 0], [1, 0], [0, 1]])  # 0 <-> 1 nearest; 2 is as far from both
    distances = torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    expected = -(
        math.log(math.exp(-1) / (math.exp(-1) + math.exp(-3)))
        + math.log(math.exp(-1) / (math.exp(-1) + math.exp(-2)))
        + 0.5 * math.log(math.exp(-3) / (math.exp(-3) + math.exp(-2)))
        + 0.5 * math.log(math.exp(-2) / (math.exp(-3) + math.exp(-2)))
    ) / 3
    assert ranking_loss(distances, status).item() == pytest.approx(expected, rel=1e-6)
    # The diagonal is not a candidate: changing it changes nothing.
    changed = distances.clone()
    changed.fill_diagonal_(-50.0)
    assert ranking_loss(changed, status).item() == pytest.approx(expected, rel=1e-6)


def test_embeddings_lie_inside_the_ball_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    enhancer = RetrievalEnhancer(75, hidden=32, dim=16, curvature=0.01)
    logits = 20.0 * torch.randn(8, 75)  # large logits push expmap0 towards the boundary
    points = enhancer(logits)
    assert points.shape == (8, 16)
    assert (points.norm(dim=1) < 1 / math.sqrt(0.01)).all()
    status = (torch.rand(8, 56) > 0.7).long()
    loss = ranking_loss(enhancer.pairwise_distances(points), status)
    loss.backward()
    trainable = [(name, p) for name, p in enhancer.named_parameters() if p.requires_grad]
    assert {name for name, _ in trainable} == {"first.weight", "first.bias", "second.weight", "second.bias"}
    for name, parameter in trainable:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_training_makes_the_ball_neighbour_the_label_neighbour():
    """Status vectors from 6 prototypes, logits a noisy linear read of them: after a few hundred
    steps of eq. 7, the nearest study in the ball has the same status (chance: about 1/6)."""
    torch.manual_seed(0)
    prototypes = (torch.rand(6, 24) > 0.5).float()
    group = torch.randint(0, 6, (300,))
    status = prototypes[group]
    logits = (2 * status - 1) @ torch.randn(24, 75) * 0.5 + torch.randn(300, 75)
    enhancer = RetrievalEnhancer(75, hidden=48, dim=16, curvature=0.01)
    optimizer = geoopt.optim.RiemannianAdam(enhancer.parameters(), lr=3e-3)

    def top1_agreement() -> float:
        with torch.no_grad():
            distances = enhancer.pairwise_distances(enhancer(logits))
            distances.fill_diagonal_(math.inf)
            return (group[distances.argmin(dim=1)] == group).float().mean().item()

    before = top1_agreement()
    for _ in range(150):
        batch = torch.randint(0, 300, (48,))
        loss = ranking_loss(enhancer.pairwise_distances(enhancer(logits[batch])), status[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert top1_agreement() > max(0.9, before)


def test_bad_input_is_refused():
    enhancer = RetrievalEnhancer(75, hidden=8, dim=4, curvature=0.01)
    with pytest.raises(ValueError, match="shape"):
        enhancer(torch.zeros(2, 14))
    with pytest.raises(ValueError, match="curvature"):
        RetrievalEnhancer(75, 8, 4, curvature=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        nearest_in_labels(torch.zeros(1, 56))
    with pytest.raises(ValueError, match=r"\(B, B\)"):
        ranking_loss(torch.zeros(3, 3), torch.zeros(2, 56))


def test_label_neighbours_rank_by_hamming_then_by_hyperbolic_distance():
    status = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 1]])
    # Rows 1 and 2 share row 0's labels; row 2 is nearer to it in the ball than row 1.
    points = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 1.0], [0.1, 0.0], [0.0, -0.2]])
    neighbours = label_neighbours(status, points, curvature=0.01, k=3)
    assert neighbours[0].tolist() == [2, 1, 4]  # Hamming 0, 0 (by distance), then 1
    assert neighbours[3].tolist()[:2] == [0, 2]  # all at Hamming 2 except row 4 (3): nearest first
    assert all(row not in neighbours[row] for row in range(5))
    with pytest.raises(ValueError, match="k"):
        label_neighbours(status, points, curvature=0.01, k=5)


_TRAIN_TWICE = """
import geoopt, numpy as np, torch
from retrieval.lre import RetrievalEnhancer, ranking_loss
def trained():
    torch.manual_seed(0)
    enhancer = RetrievalEnhancer(75, 32, 16, 0.01)
    optimizer = geoopt.optim.RiemannianAdam([p for p in enhancer.parameters() if p.requires_grad], lr=3e-3)
    logits = torch.randn(32, 75)
    status = torch.from_numpy(np.random.RandomState(0).randint(0, 2, (32, 56)))
    for _ in range(8):
        loss = ranking_loss(enhancer.pairwise_distances(enhancer(logits)), status)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in enhancer.parameters()])
print(torch.equal(trained(), trained()))
"""


def test_an_lre_trained_twice_in_one_process_is_the_same_to_the_bit():
    # geoopt's TorchScript functions, once re-compiled by the optimising executor, rounded
    # differently (~1e-7): a bundle trained second in a process differed from the first. A fresh
    # process, since the executor's state is per process.
    result = subprocess.run([sys.executable, "-c", _TRAIN_TWICE], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"
