"""REVTAF's LRE: the HNN lands on the ball, eq. 6-7 are computed as written, and training it puts the
study nearest in labels nearest in the ball."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import geoopt
import numpy as np
import pytest
import torch

from retrieval.hyperbolic_index import lift_to_hyperboloid
from retrieval.lre import RetrievalEnhancer, label_neighbours, nearest_in_labels, ranking_loss
from retrieval.metrics import hamming_distances


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
    with pytest.raises(ValueError, match="0/1"):
        label_neighbours(status * 2, points, curvature=0.01, k=3)
    with pytest.raises(ValueError, match="inside"):
        label_neighbours(status, points * 3, curvature=0.01, k=3)  # (15, 0) is outside the radius 10


def reference_label_neighbours(
    status: np.ndarray, points: np.ndarray, curvature: float, k: int
) -> np.ndarray:
    """The first implementation of `label_neighbours`, a full np.lexsort per row (O(N^2 log N))."""
    lifted = lift_to_hyperboloid(np.asarray(points, dtype=np.float64), curvature)  # (N, dim + 1)
    neighbours = np.empty((len(status), k), dtype=np.int64)
    for start in range(0, len(status), 256):
        rows = slice(start, start + 256)
        hamming = hamming_distances(status[rows], status)  # (n, N), eq. 6
        lorentz = lifted[rows, :1] @ lifted[:, :1].T - lifted[rows, 1:] @ lifted[:, 1:].T  # (n, N)
        for i, row in enumerate(range(len(status))[rows]):
            ranked = np.lexsort((lorentz[i], hamming[i]))  # by Hamming, then by distance
            neighbours[row] = ranked[ranked != row][:k]
    return neighbours


def _ball_points(rng: np.random.Generator, n: int, dim: int, curvature: float) -> np.ndarray:
    """n random points inside the ball of radius 1 / sqrt(c), some near its boundary."""
    directions = rng.normal(size=(n, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions * rng.uniform(0.0, 0.999, size=(n, 1)) / np.sqrt(curvature)


@pytest.mark.parametrize(
    ("n", "labels", "dim", "k", "chunk_rows"),
    [
        (40, 3, 2, 1, None), (97, 4, 8, 5, 7), (300, 6, 16, 10, None), (300, 6, 16, 299, 64), (513, 8, 4, 3, 256)
    ],
)
def test_label_neighbours_are_those_of_a_full_lexsort(n, labels, dim, k, chunk_rows):
    """Few labels: Hamming ties by the dozen, broken by distinct Lorentz products."""
    rng = np.random.default_rng(n + k)
    status = rng.integers(0, 2, size=(n, labels)).astype(np.uint8)
    points = _ball_points(rng, n, dim, 0.01)
    expected = reference_label_neighbours(status, points, 0.01, k)
    assert np.array_equal(label_neighbours(status, points, 0.01, k, chunk_rows=chunk_rows), expected)


def _dyadic_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """n points of the ball of curvature -1/4 (radius 2) drawn from 57 whose hyperboloid coordinates
    are small integers (|z|^2 = 1 - 2^-m): their Lorentz products are exact in any summation order,
    so every BLAS ties them to the bit, and they tie often (integers), also between different points."""
    grid = np.array(list(itertools.product((-0.5, 0.0, 0.5), repeat=4)))  # z = sqrt(c) p
    z = grid[np.isin((grid**2).sum(axis=1), (0.0, 0.5, 0.75))]
    assert len(z) == 57
    return 2.0 * z[rng.integers(0, len(z), size=n)]  # p = z / sqrt(c)


@pytest.mark.parametrize(
    ("n", "labels", "k", "chunk_rows"), [(60, 3, 4, None), (200, 3, 25, 9), (200, 2, 199, 50)]
)
def test_label_neighbours_break_exact_ties_by_index_like_a_stable_sort(n, labels, k, chunk_rows):
    """Equal Hamming distances and equal Lorentz products (to the bit): every tie that is left goes to
    the lower index, as np.lexsort's stable order does."""
    rng = np.random.default_rng(k)
    status = rng.integers(0, 2, size=(n, labels)).astype(bool)
    points = _dyadic_points(rng, n)
    expected = reference_label_neighbours(status, points, 0.25, k)
    assert np.array_equal(label_neighbours(status, points, 0.25, k, chunk_rows=chunk_rows), expected)
    # All in one place with one status: only the index is left to order them.
    same = label_neighbours(np.zeros((n, 3)), np.zeros((n, 3)), 0.25, k, chunk_rows=chunk_rows)
    assert np.array_equal(same, [[j for j in range(n) if j != row][:k] for row in range(n)])


@pytest.mark.parametrize("k", [30, 202])
def test_label_neighbours_tie_a_point_repeated_whatever_the_blas_rounds(k):
    """A random point repeated: its products with a row are one number, so the repeats go by index (a
    matrix product's edge tiles can round a column a few ulps apart from its twin: torch's CPU product
    does, for this N and dim)."""
    rng = np.random.default_rng(1)
    n = 203
    status = rng.integers(0, 2, size=(n, 3)).astype(bool)
    distinct = _ball_points(rng, 5, 8, 0.5)
    group = rng.integers(0, 5, size=n)
    neighbours = label_neighbours(status, distinct[group], 0.5, k, chunk_rows=50)
    lifted = lift_to_hyperboloid(distinct, 0.5)
    lorentz = (lifted[:, :1] @ lifted[:, :1].T - lifted[:, 1:] @ lifted[:, 1:].T)[group][:, group]  # (n, n)
    hamming = hamming_distances(status, status)
    for row in range(n):
        ranked = np.lexsort((np.arange(n), lorentz[row], hamming[row]))
        assert neighbours[row].tolist() == ranked[ranked != row][:k].tolist(), row


def test_label_neighbours_refuse_bad_chunks():
    with pytest.raises(ValueError, match="chunk_rows"):
        label_neighbours(np.zeros((4, 2)), np.zeros((4, 2)), 0.01, 2, chunk_rows=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_label_neighbours_on_cuda_are_those_of_a_full_lexsort():
    rng = np.random.default_rng(0)
    status = rng.integers(0, 2, size=(3000, 10)).astype(np.uint8)
    points = _ball_points(rng, 3000, 16, 0.01)
    expected = reference_label_neighbours(status, points, 0.01, 8)
    assert np.array_equal(label_neighbours(status, points, 0.01, 8, device="cuda", chunk_rows=700), expected)
    assert np.array_equal(label_neighbours(status, points, 0.01, 8, device=torch.device("cuda")), expected)
    points = _dyadic_points(rng, 3000)  # exact ties, broken by index
    expected = reference_label_neighbours(status, points, 0.25, 40)
    found = label_neighbours(status, points, 0.25, 40, device="cuda", chunk_rows=1000)
    assert np.array_equal(found, expected)


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
