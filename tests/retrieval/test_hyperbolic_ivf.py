"""The IVF hyperbolic index: exact when every list is probed, high recall with few probes on clustered points."""

from __future__ import annotations

import json
import math

import faiss
import geoopt
import numpy as np
import pytest
import torch

from retrieval.hyperbolic_index import HyperbolicIndex, lift_to_hyperboloid
from retrieval.hyperbolic_ivf import HyperbolicIVFIndex

DIM, CURVATURE = 16, 0.01
BALL = geoopt.PoincareBall(c=torch.tensor(CURVATURE, dtype=torch.float64))


def _clustered(count: int, seed: int, clusters: int = 40, spread: float = 0.5) -> np.ndarray:
    """Wrapped-normal clusters: N(0, spread^2) tangent vectors at the origin, moved to the cluster's centre
    (parallel transport) and mapped onto the ball there; centres in random directions, most near the edge."""
    centre_rng = np.random.default_rng(100)  # the same centres for references and queries
    directions = centre_rng.normal(size=(clusters, DIM))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    fraction = 0.99 * (1.0 - centre_rng.uniform(size=(clusters, 1)) ** 4)
    centres = torch.from_numpy(directions * fraction / math.sqrt(CURVATURE))
    rng = np.random.default_rng(seed)
    centre = centres[rng.integers(clusters, size=count)]
    tangent = torch.from_numpy(spread * rng.normal(size=(count, DIM)))
    return BALL.expmap(centre, BALL.transp0(centre, tangent)).numpy()


def _corpus(count: int = 3000, seed: int = 0):
    points = _clustered(count, seed)
    ids = [f"study-{i:04d}" for i in range(count)]
    return points, ids, [f"report {i}." for i in range(count)]


@pytest.fixture(scope="module")
def corpus():
    points, ids, reports = _corpus()
    return points, ids, reports, HyperbolicIndex.build(points, ids, reports, CURVATURE)


def _ids(results):
    return [[n.id for n in neighbors] for neighbors in results]


def test_probing_every_list_equals_the_exact_index(corpus):
    points, ids, reports, exact = corpus
    index = HyperbolicIVFIndex.build(points, ids, reports, CURVATURE, lists=30, probes=30)
    queries = _clustered(50, seed=1)
    expected, found = exact.search(queries, 10), index.search(queries, 10)
    assert _ids(found) == _ids(expected)
    np.testing.assert_allclose(
        [[n.distance for n in r] for r in found],
        [[n.distance for n in r] for r in expected],
        atol=1e-9,
        rtol=0,
    )


def test_few_probes_keep_recall_high_on_clustered_points(corpus):
    points, ids, reports, exact = corpus
    index = HyperbolicIVFIndex.build(points, ids, reports, CURVATURE, lists=50, probes=3)
    queries = _clustered(100, seed=2)
    expected, found = _ids(exact.search(queries, 10)), _ids(index.search(queries, 10))
    recall = np.mean([len(set(e) & set(f)) / 10 for e, f in zip(expected, found)])
    assert recall >= 0.9  # measured 0.984 (0.956 with one probe)
    assert all(len(f) == 10 for f in found)


def test_a_row_as_query_probes_the_list_it_is_filed_in(corpus):
    # The centroids' time coordinate is 0, so the query's negated time coordinate cannot send it elsewhere.
    points, ids, reports, _ = corpus
    index = HyperbolicIVFIndex.build(points, ids, reports, CURVATURE, lists=50, probes=1)
    assert np.all(index.centroids[:, 0] == 0)
    found = index.search(points[:300], 1)
    assert [r[0].id for r in found] == ids[:300]
    assert max(r[0].distance for r in found) < 1e-6
    # The negative control: centroids trained on the lifted rows, time coordinate included, file a row
    # where its own negated query does not look first.
    lifted = lift_to_hyperboloid(points, CURVATURE).astype(np.float32)
    naive = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM + 1), DIM + 1, 50, faiss.METRIC_INNER_PRODUCT)
    naive.train(lifted)
    naive.add(lifted)
    probes = lifted[:300].copy()
    probes[:, 0] *= -1
    _, rows = naive.search(probes, 1)
    assert np.mean(rows[:, 0] == np.arange(300)) < 0.9  # measured 0.79


def test_a_query_whose_probed_lists_hold_too_few_rows_probes_them_all(corpus):
    points, ids, reports, exact = corpus
    index = HyperbolicIVFIndex.build(points, ids, reports, CURVATURE, lists=50, probes=1)  # ~60 rows a list
    queries = _clustered(10, seed=5)
    assert _ids(index.search(queries, 500)) == _ids(exact.search(queries, 500))


def test_exclusion_skips_the_own_study(corpus):
    points, ids, reports, exact = corpus
    index = HyperbolicIVFIndex.build(points, ids, reports, CURVATURE, lists=30, probes=30)
    exclude = ids[:20] + [None] * 5
    found = index.search(points[:25], 3, exclude_ids=exclude)
    assert _ids(found) == _ids(exact.search(points[:25], 3, exclude_ids=exclude))
    assert all(ids[q] not in [n.id for n in r] for q, r in enumerate(found[:20]))
    assert [r[0].id for r in found[20:]] == ids[20:25]
    assert found[0][0].report == reports[ids.index(found[0][0].id)]


def test_added_rows_are_found_without_retraining(corpus):
    points, ids, reports, _ = corpus
    index = HyperbolicIVFIndex.build(points[:2000], ids[:2000], reports[:2000], CURVATURE, lists=40, probes=2)
    centroids = index.centroids.copy()
    np.testing.assert_array_equal(
        centroids, HyperbolicIVFIndex.build(points[:2000], ids[:2000], reports[:2000], CURVATURE, lists=40).centroids
    )  # a fixed k-means seed: the same build twice gives the same quantizer
    index.add(points[2000:], ids[2000:], reports[2000:])
    assert len(index) == 3000
    np.testing.assert_array_equal(index.centroids, centroids)
    found = index.search(points[2000:2300], 1)
    assert [r[0].id for r in found] == ids[2000:2300]
    assert found[0][0].report == reports[2000]


def test_save_and_load_round_trip(corpus, tmp_path):
    points, ids, reports, _ = corpus
    index = HyperbolicIVFIndex.build(points, ids, reports, CURVATURE, lists=40, probes=3)
    index.save(tmp_path / "ivf")
    loaded = HyperbolicIVFIndex.load(tmp_path / "ivf")
    meta = json.loads((tmp_path / "ivf" / "index.json").read_text())
    assert meta == {
        "kind": "hyperbolic-ivf",
        "dim": DIM,
        "curvature": CURVATURE,
        "count": 3000,
        "lists": 40,
        "probes": 3,
    }
    queries = _clustered(30, seed=3)
    assert loaded.search(queries, 5) == index.search(queries, 5)
    np.testing.assert_array_equal(loaded.centroids, index.centroids)
    loaded.add(_clustered(1, seed=4), ["new"], ["a new reference report."])
    assert len(loaded) == 3001


def test_bad_input_is_refused_plainly(corpus, tmp_path):
    points, ids, reports, exact = corpus
    with pytest.raises(ValueError, match="needs at least 390 points"):
        HyperbolicIVFIndex.build(points[:100], ids[:100], reports[:100], CURVATURE, lists=10)
    with pytest.raises(ValueError, match="needs at least 39 points"):
        HyperbolicIVFIndex.build(points[:20], ids[:20], reports[:20], CURVATURE)  # too few even for one list
    outside = points[:400].copy()
    outside[7] *= 1.001 / (np.linalg.norm(outside[7]) * math.sqrt(CURVATURE))  # past the boundary
    with pytest.raises(ValueError, match="inside the Poincare ball"):
        HyperbolicIVFIndex.build(outside, ids[:400], reports[:400], CURVATURE, lists=5)
    with pytest.raises(ValueError, match="curvature must be a positive number"):
        HyperbolicIVFIndex.build(points[:400], ids[:400], reports[:400], -1.0, lists=5)
    with pytest.raises(ValueError, match="probes must be at most lists = 5"):
        HyperbolicIVFIndex.build(points[:400], ids[:400], reports[:400], CURVATURE, lists=5, probes=6)
    index = HyperbolicIVFIndex.build(points[:400], ids[:400], reports[:400], CURVATURE, lists=5)
    with pytest.raises(ValueError, match=r"shape \(N, 16\)"):
        index.search(np.zeros((2, DIM + 1)), 3)
    with pytest.raises(ValueError, match=r"shape \(N, 16\)"):
        index.add(np.zeros((1, 8)), ["x"], ["r"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.zeros(DIM), 0)
    with pytest.raises(ValueError, match="probes must be at most lists = 5"):
        index.probes = 6
    with pytest.raises(ValueError, match="ids already in the index"):
        index.add(points[:1], ids[:1], reports[:1])
    exact.save(tmp_path / "exact")
    with pytest.raises(ValueError, match="holds a 'hyperbolic' index"):
        HyperbolicIVFIndex.load(tmp_path / "exact")
