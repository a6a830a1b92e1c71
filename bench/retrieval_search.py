"""Hyperbolic kNN at MIMIC-CXR scale: the exact FAISS index against geoopt brute force, and the
approximate IVF index against the exact one.

Two reference sets of 270,000 points x 512 dimensions on the Poincare ball (c = 0.01), with 64
queries drawn the same way as each set's references (fresh samples), top 10:

  uniform    uniformly random directions at radii spread out to 0.999 of the ball's radius, most
             near the edge (fraction 0.999 * (1 - u^4), u uniform): no cluster structure.
  clustered  a mixture of 1,000 wrapped normal clusters (Nagano et al. 2019): a tangent vector
             N(0, 0.25^2 I) at the origin, parallel-transported to its cluster's centre and mapped
             onto the ball by the exponential map there, so every cluster has the same geodesic
             spread (about 0.25 * sqrt(512) = 5.7 from its centre); centres in uniformly random
             directions at radii 0.99 * (1 - u^4) of the ball's radius; each point's cluster uniform.

The clustered set stands in for the learned embeddings, which the ranking loss trains to put studies
of the same label status together. (Gaussians in the tangent space at the origin mapped with expmap0
are not clusters in geodesic distance near the boundary: their angular spread is geodesically huge
there, and most queries' nearest rows then belong to the most central cluster.)

The brute force is what REVTAF does (every query's geoopt distance to every reference), in float64
and in chunks that fit in memory: on the uniform set for all queries, on the clustered set for the
first 4 (it costs 2 s or more a query); the exact index's top k must equal it. The IVF index is timed on the
same queries as the exact index; recall@k is the fraction of the exact top-k ids it finds. Goal:
recall >= 0.95 at >= 5x over the exact index on the clustered set. Also prints a probes sweep and
the bytes each reference costs.

    uv run python bench/retrieval_search.py [--references 270000] [--dim 512] [--queries 64] [--k 10]
        [--lists sqrt(N)] [--probes 8] [--sweep 1,2,4,16,32] [--clusters 1000] [--spread 0.25]
        [--clustered-brute-force-queries 4]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time

import geoopt
import numpy as np
import torch
from tqdm import tqdm

from retrieval.hyperbolic_index import HyperbolicIndex
from retrieval.hyperbolic_ivf import DEFAULT_PROBES, HyperbolicIVFIndex, default_lists

CHUNK = 16384  # rows per geoopt call, so that float64 temporaries fit in memory


def uniform_points(count: int, dim: int, curvature: float, seed: int, edge: float = 0.999) -> np.ndarray:
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((count, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    fraction = edge * (1.0 - rng.uniform(0.0, 1.0, size=(count, 1)) ** 4)
    return directions * fraction / math.sqrt(curvature)


def clustered_points(
    count: int, dim: int, curvature: float, clusters: int, spread: float, seed: int, edge: float = 0.99
) -> np.ndarray:
    """Wrapped normal clusters (see the module docstring); the centres are the same for every seed."""
    ball = geoopt.PoincareBall(c=torch.tensor(curvature, dtype=torch.float64))
    centres = torch.from_numpy(uniform_points(clusters, dim, curvature, seed=12345, edge=edge))
    rng = np.random.default_rng(seed)
    chosen = torch.from_numpy(rng.integers(clusters, size=count))
    points = np.empty((count, dim))
    for start in range(0, count, CHUNK):
        centre = centres[chosen[start : start + CHUNK]]
        tangent = torch.from_numpy(spread * rng.standard_normal((len(centre), dim)))
        points[start : start + CHUNK] = ball.expmap(centre, ball.transp0(centre, tangent)).numpy()
    return points


def brute_force(points: np.ndarray, queries: np.ndarray, k: int, curvature: float):
    """Top-k (distances, ids) per query by geoopt's float64 distance to every reference (ids: row numbers)."""
    ball = geoopt.PoincareBall(c=torch.tensor(curvature, dtype=torch.float64))
    points, results = torch.from_numpy(points), []
    for query in tqdm(torch.from_numpy(queries), desc="geoopt brute force", unit="query"):
        distances = torch.cat([ball.dist(points[i : i + CHUNK], query) for i in range(0, len(points), CHUNK)])
        top = torch.topk(distances, k, largest=False)
        results.append((top.values.numpy(), [str(row) for row in top.indices.tolist()]))
    return results


def ids_of(results) -> list[list[str]]:
    return [[n.id for n in neighbors] for neighbors in results]


def recall(found: list[list[str]], expected: list[list[str]]) -> float:
    """The fraction of the exact top-k ids that the approximate top-k holds, over all queries."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, expected)]))


def exact_versus_brute_force(points: np.ndarray, queries: np.ndarray, args, checked: int):
    """The exact index's build and search times, and its top k against brute force on `checked` queries."""
    ids = [str(i) for i in range(len(points))]
    started = time.perf_counter()
    exact = HyperbolicIndex.build(points, ids, [""] * len(ids), args.curvature)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    found = exact.search(queries, args.k)
    exact_s = time.perf_counter() - started
    del exact  # its float32 shells: memory for the brute force and the IVF index
    started = time.perf_counter()
    expected = brute_force(points, queries[:checked], args.k, args.curvature)
    brute_s = time.perf_counter() - started
    largest_gap = max(
        float(np.max(np.abs(np.array([n.distance for n in f]) - d))) for f, (d, _) in zip(found, expected)
    )
    result = {
        "exact_build_s": round(build_s, 2),
        "faiss_exact_s": round(exact_s, 3),
        "brute_force_queries": checked,
        "geoopt_brute_force_s": round(brute_s, 2),
        "speedup_over_brute_force": round((brute_s / checked) / (exact_s / len(queries)), 1),  # per query
        "identical_top_k": all([n.id for n in f] == e for f, (_, e) in zip(found, expected)),
        "largest_distance_gap": largest_gap,
    }
    return result, exact_s, ids_of(found)


def ivf_versus_exact(points: np.ndarray, queries: np.ndarray, args, exact_s: float, exact_ids) -> dict:
    """The IVF index's build and search times, speedup over the exact index and recall@k, per probes."""
    ids = [str(i) for i in range(len(points))]
    lists = args.lists or default_lists(len(points))
    started = time.perf_counter()
    ivf = HyperbolicIVFIndex.build(points, ids, [""] * len(ids), args.curvature, lists, args.probes)
    build_s = time.perf_counter() - started
    searches = {}  # probes -> (seconds, recall)
    for probes in sorted({args.probes, *(p for p in args.sweep if p <= lists)}):
        ivf.probes = probes
        started = time.perf_counter()
        found = ivf.search(queries, args.k)
        searches[probes] = (time.perf_counter() - started, recall(ids_of(found), exact_ids))
    search_s, found_recall = searches[args.probes]
    return {
        "ivf_lists": lists,
        "ivf_probes": args.probes,
        "ivf_build_s": round(build_s, 2),
        "ivf_search_s": round(search_s, 4),
        "ivf_speedup_over_exact": round(exact_s / search_s, 1),
        "ivf_recall": round(found_recall, 4),
        "ivf_probes_sweep": {
            probes: {
                "search_s": round(s, 4),
                "speedup_over_exact": round(exact_s / s, 1),
                "recall": round(r, 4),
            }
            for probes, (s, r) in searches.items()
        },
    }


def measure(name: str, points: np.ndarray, queries: np.ndarray, args, checked: int) -> dict:
    """Both comparisons on one data set, printed as they finish."""
    exact, exact_s, exact_ids = exact_versus_brute_force(points, queries, args, checked)
    print(
        f"[{name}] exact index (build {exact['exact_build_s']:.1f} s): FAISS hyperboloid + float64 re-rank "
        f"{exact_s:.3f} s   geoopt brute force on {checked} of the {len(queries)} queries: "
        f"{exact['geoopt_brute_force_s']:.2f} s   speedup {exact['speedup_over_brute_force']:.1f}x per query   "
        f"identical top-{args.k}: {exact['identical_top_k']} "
        f"(largest distance gap {exact['largest_distance_gap']:.1e})"
    )
    ivf = ivf_versus_exact(points, queries, args, exact_s, exact_ids)
    print(
        f"[{name}] IVF lists {ivf['ivf_lists']}, probes {ivf['ivf_probes']} (build {ivf['ivf_build_s']:.1f} s): "
        f"{ivf['ivf_search_s']:.3f} s   speedup over exact {ivf['ivf_speedup_over_exact']:.1f}x   "
        f"recall@{args.k} {ivf['ivf_recall']:.3f}"
    )
    sweep = ", ".join(
        f"{probes}: {r['recall']:.3f} at {r['speedup_over_exact']:.1f}x"
        for probes, r in ivf["ivf_probes_sweep"].items()
    )
    print(f"[{name}]   IVF probes -> recall@{args.k} at speedup over exact: {sweep}")
    return {"data": name, **exact, **ivf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=270_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--curvature", type=float, default=0.01)
    parser.add_argument("--lists", type=int, default=None, help="IVF lists (default: about sqrt(references))")
    parser.add_argument("--probes", type=int, default=DEFAULT_PROBES, help="IVF lists scanned per query")
    parser.add_argument(
        "--sweep", type=lambda text: [int(p) for p in text.split(",")], default=[1, 2, 4, 16, 32]
    )
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.25, help="the clusters' tangent standard deviation")
    parser.add_argument("--clustered-brute-force-queries", type=int, default=4)
    args = parser.parse_args()
    n, dim, c, q = args.references, args.dim, args.curvature, args.queries

    print(f"hyperbolic top-{args.k}, {n:,} references x {dim}-d, c = {c}, {q} queries, 2-core CPU")
    print("[uniform] random directions at radii 0.999 * (1 - u^4) of the ball's radius (no clusters)")
    uniform = measure(
        "uniform", uniform_points(n, dim, c, seed=0), uniform_points(q, dim, c, seed=1), args, q
    )
    gc.collect()
    print(
        f"[clustered] {args.clusters:,} wrapped normal clusters: tangent N(0, {args.spread}^2 I) at the origin, "
        f"transported to centres at random directions and radii 0.99 * (1 - u^4) of the ball's radius, "
        f"expmap there; queries from the same mixture"
    )
    clustered = measure(
        "clustered",
        clustered_points(n, dim, c, args.clusters, args.spread, seed=0),
        clustered_points(q, dim, c, args.clusters, args.spread, seed=1),
        args,
        min(args.clustered_brute_force_queries, q),
    )
    result = {
        "references": n,
        "dim": dim,
        "queries": q,
        "k": args.k,
        "curvature": c,
        "clusters": args.clusters,
        "spread": args.spread,
        "uniform": uniform,
        "clustered": clustered,
        "bytes_per_reference": {
            "faiss_fp32 (dim + 1)": 4 * (dim + 1),
            "faiss_fp16 (dim + 1)": 2 * (dim + 1),
            "faiss_pca256_fp16": 2 * 257,
            "rerank_points_fp64": 8 * dim,
            "ivf_fp32 (dim + 1) + id": 4 * (dim + 1) + 8,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
