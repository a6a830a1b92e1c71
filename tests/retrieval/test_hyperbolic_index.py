"""The exact hyperbolic index: FAISS on the hyperboloid, re-ranked in float64, equals geoopt's brute force."""

from __future__ import annotations

import json
import math

import faiss
import geoopt
import numpy as np
import pytest
import torch

from retrieval.cosine_index import CosineIndex
from retrieval.hyperbolic_index import HyperbolicIndex, lift_to_hyperboloid

DIM = 16


def _ball_points(count: int, curvature: float, seed: int, dim: int = DIM, edge: float = 0.9999) -> np.ndarray:
    """Random directions at radii spread from the centre to `edge` of the ball's radius, most near the edge."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(count, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    fraction = edge * (1.0 - rng.uniform(0.0, 1.0, size=(count, 1)) ** 4)  # many close to the edge
    return directions * fraction / math.sqrt(curvature)


def _brute_force(points, ids, query, k, curvature, excluded=None):
    ball = geoopt.PoincareBall(c=torch.tensor(curvature, dtype=torch.float64))
    distances = ball.dist(torch.from_numpy(points), torch.from_numpy(query)).numpy()
    order = sorted((d, i) for d, i in zip(distances.tolist(), ids) if i != excluded)[:k]
    return [i for _, i in order], [d for d, _ in order]


def _corpus(count, curvature, seed=0):
    points = _ball_points(count, curvature, seed)
    ids = [f"study-{i:04d}" for i in range(count)]
    return points, ids, [f"report {i}." for i in range(count)]


@pytest.mark.parametrize("curvature", [0.01, 1.0])
def test_top_10_equals_geoopt_brute_force_near_the_boundary(curvature):
    points, ids, reports = _corpus(3000, curvature)
    index = HyperbolicIndex.build(points, ids, reports, curvature)
    queries = _ball_points(40, curvature, seed=1)
    for query, neighbors in zip(queries, index.search(queries, 10)):
        expected_ids, expected_distances = _brute_force(points, ids, query, 10, curvature)
        assert [n.id for n in neighbors] == expected_ids
        np.testing.assert_allclose([n.distance for n in neighbors], expected_distances, atol=1e-6, rtol=0)


def test_a_cluster_float32_cannot_order_is_still_ranked_exactly():
    # 300 points within 1e-7 of each other at 0.999999 of the radius: float32 inner products of the
    # lifted points (X0 near 5e5) cannot tell them apart, the float64 re-rank can.
    curvature = 0.01
    rng = np.random.default_rng(3)
    centre = rng.normal(size=DIM)
    centre *= 0.999999 / (np.linalg.norm(centre) * math.sqrt(curvature))
    points = centre + rng.normal(size=(300, DIM)) * 1e-7
    ids = [f"s{i:03d}" for i in range(300)]
    index = HyperbolicIndex.build(points, ids, ids, curvature)
    query = centre + rng.normal(size=DIM) * 1e-7
    expected_ids, expected_distances = _brute_force(points, ids, query, 10, curvature)
    neighbors = index.search(query, 10)[0]
    assert [n.id for n in neighbors] == expected_ids
    np.testing.assert_allclose([n.distance for n in neighbors], expected_distances, atol=1e-6, rtol=0)
    # The negative control: FAISS's float32 order alone gets these wrong.
    probe = lift_to_hyperboloid(query[None], curvature)
    probe[:, 0] *= -1
    raw = faiss.IndexFlatIP(DIM + 1)
    raw.add(lift_to_hyperboloid(points, curvature).astype(np.float32))
    _, rows = raw.search(probe.astype(np.float32), 10)
    assert [ids[r] for r in rows[0]] != expected_ids


def test_lifted_points_lie_on_the_hyperboloid_and_keep_geoopt_distances():
    curvature = 0.01
    points = _ball_points(50, curvature, seed=4, edge=0.99)
    lifted = lift_to_hyperboloid(points, curvature)
    lorentz = -np.outer(lifted[:, 0], lifted[:, 0]) + lifted[:, 1:] @ lifted[:, 1:].T  # <X, Y>_L
    np.testing.assert_allclose(np.diag(lorentz), -1.0, rtol=1e-9)
    ball = geoopt.PoincareBall(c=torch.tensor(curvature, dtype=torch.float64))
    expected = ball.dist(torch.from_numpy(points)[:, None], torch.from_numpy(points)[None]).numpy()
    off_diagonal = ~np.eye(50, dtype=bool)
    np.testing.assert_allclose(
        np.arccosh(-lorentz[off_diagonal]) / math.sqrt(curvature), expected[off_diagonal], rtol=1e-7
    )


def test_incremental_add_equals_one_build_and_exclusion_skips_the_own_study():
    points, ids, reports = _corpus(400, 0.01, seed=5)
    whole = HyperbolicIndex.build(points, ids, reports, 0.01)
    grown = HyperbolicIndex.build(points[:250], ids[:250], reports[:250], 0.01)
    grown.add(points[250:], ids[250:], reports[250:])
    queries = points[:20]
    assert [[n.id for n in r] for r in whole.search(queries, 5)] == [[n.id for n in r] for r in grown.search(queries, 5)]
    own = whole.search(queries, 3)
    assert all(r[0].id == ids[q] and r[0].distance == pytest.approx(0.0, abs=1e-6) for q, r in enumerate(own))
    others = whole.search(queries, 3, exclude_ids=ids[:20])
    for q, neighbors in enumerate(others):
        assert [n.id for n in neighbors] == _brute_force(points, ids, points[q], 3, 0.01, excluded=ids[q])[0]
        assert neighbors[0].report == reports[ids.index(neighbors[0].id)]


def test_save_and_load_round_trip(tmp_path):
    points, ids, reports = _corpus(120, 0.01, seed=6)
    index = HyperbolicIndex.build(points, ids, reports, 0.01)
    index.save(tmp_path / "index")
    loaded = HyperbolicIndex.load(tmp_path / "index")
    assert json.loads((tmp_path / "index" / "index.json").read_text())["curvature"] == 0.01
    queries = _ball_points(5, 0.01, seed=7)
    assert index.search(queries, 4) == loaded.search(queries, 4)
    loaded.add(_ball_points(1, 0.01, seed=8), ["new"], ["a new reference report."])
    assert len(loaded) == 121


def test_bad_input_is_refused_plainly(tmp_path):
    index = HyperbolicIndex(DIM, 0.01)
    outside = np.zeros((1, DIM))
    outside[0, 0] = 10.0  # on the boundary of the ball of radius 10
    with pytest.raises(ValueError, match="inside the Poincare ball of radius 1/sqrt"):
        index.add(outside, ["a"], ["r"])
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, DIM), np.nan), ["a"], ["r"])
    with pytest.raises(ValueError, match="curvature must be a positive number"):
        HyperbolicIndex(DIM, -1.0)
    assert index.search(np.zeros(DIM), 3) == [[]]
    CosineIndex.build(np.ones((2, DIM)), ["a", "b"], ["r", "s"]).save(tmp_path / "cosine")
    with pytest.raises(ValueError, match="holds a 'cosine' index"):
        HyperbolicIndex.load(tmp_path / "cosine")
