"""Approximate hyperbolic kNN at scale: FAISS IVF on the hyperboloid, float64 re-rank (DESIGN.md section 6).

The lift is the exact index's (retrieval/hyperbolic_index.py): a Poincare point x of curvature -c
becomes the hyperboloid point X, and with the query's time coordinate negated, q' = (-Q0, Q1, ...),
the plain inner product is <q', Y> = -cosh(sqrt(c) d_c(q, y)): the largest is the nearest row.
`IndexIVFFlat` files the rows in `lists` inverted lists and scans only the `probes` lists (FAISS's
nprobe) that the coarse quantizer ranks first for a query. The result is APPROXIMATE: a neighbour
filed in a list left unprobed is missed. Recall rises with `probes` (probes == lists scans every
row) and, at fixed probes, falls as `lists` grows; the search time grows with probes / lists.

Why the quantizer's centroids have time coordinate 0. The quantizer files a row Y under the centroid
m with the largest <Y, m>, and a query probes the lists whose m has the largest <q', m>. For a general
m the two disagree, because q' flips the sign of m0's term (-Q0 m0 counts against the very list
whose rows Y0 m0 put there; a query would not probe the list its own point is filed in). Centroids
with m0 = 0 see only the spatial part Xi = 2 zi / (1 - |z|^2), which the negation leaves alone, so
rows and queries are sorted the same way: by the direction of z. The quantizer is trained by FAISS's
spherical k-means (fixed seed, so a build is deterministic) on the unit directions z / |z| with time
0, so the lists are cones of directions around the origin, of similar sizes. Hyperbolic Voronoi
cells (centroids on the hyperboloid, the Lorentz product for both sides) would be consistent too,
but they degenerate: a centroid near the origin is nearer to most boundary points than any centroid
out there, so one list takes most of the rows and the scan saves little.

What the cones miss: neighbours in other directions. A row whose neighbourhood surrounds the origin
(a cluster wider than its distance from the origin) has them in every direction, and in data without
cluster structure the nearest rows to a point near the boundary are the most central rows, whatever
their direction. Embeddings where a row's neighbours are rows of its own cluster (the hyperbolic
retriever is trained to put studies of the same label status together) have them in the first few
cones. bench/retrieval_search.py measures both at 270k x 512 with 520 lists: recall@10 0.969 on clustered
points with 1 to 16 lists probed (all misses are the 2 of 64 queries from a cluster near the
origin, whose rows lie in every direction), 0.044 on uniformly random points with 8 probed.
Where recall must be 1, use HyperbolicIndex.

FAISS proposes 4 candidates per neighbour by float32 score, geoopt's float64 distance d_c orders them
(ties by id). A query whose probed lists hold too few rows is searched again with every list probed.
Rows added after `build` go into the existing lists: the quantizer is not retrained.

On disk an index is a folder (loading needs no training):
    index.faiss     the IndexIVFFlat with its quantizer (`faiss.write_index`)
    points.npy      the Poincare points in float64, for the re-rank
    reports.jsonl   one {"id", "report"} line per row, in index order
    index.json      {"kind": "hyperbolic-ivf", "dim", "curvature", "count", "lists", "probes"}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from retrieval.hyperbolic_index import (
    POINTS_FILE,
    PoincareRows,
    ball_points,
    lift_to_hyperboloid,
)
from retrieval.reference_reports import (
    REPORTS_FILE,
    Neighbor,
    ReferenceReports,
    check_dim,
    positive_int,
    read_index_meta,
    write_index_meta,
)

INDEX_FILE = "index.faiss"
# FAISS's k-means warns below 39 training points per centroid: fewer leave the cones' centroids noisy.
MIN_POINTS_PER_LIST = 39
DEFAULT_PROBES = 8
KMEANS_SEED = 1234
CANDIDATES_PER_NEIGHBOR = 4  # float32 candidates fetched per wanted neighbour, for the float64 re-rank


def default_lists(count: int) -> int:
    """About sqrt(N) lists (FAISS's rule of thumb), but no more than N / 39 so that each can be trained."""
    return max(1, min(round(math.sqrt(count)), count // MIN_POINTS_PER_LIST))


def _directions(points: np.ndarray) -> np.ndarray:
    """(N, dim + 1) float32 training rows (0, z / |z|): the direction of each point, time coordinate 0."""
    norms = np.linalg.norm(points, axis=1, keepdims=True)  # (N, 1)
    directions = np.divide(points, norms, out=np.zeros_like(points), where=norms > 0)  # the centre has none
    return np.ascontiguousarray(
        np.concatenate([np.zeros((len(points), 1)), directions], axis=1), dtype=np.float32
    )


class HyperbolicIVFIndex(PoincareRows):
    """Approximate hyperbolic kNN on the Poincare ball (IVF over direction cones); rows carry id and report."""

    kind = "hyperbolic-ivf"

    def __init__(self, ivf: faiss.IndexIVFFlat, curvature: float, probes: int):
        """An empty index around `ivf` over dim + 1 lifted coordinates (trained by `build`, read by `load`)."""
        super().__init__(ivf.d - 1, curvature)
        self._ivf = ivf
        self.probes = probes

    @classmethod
    def build(
        cls,
        points: np.ndarray,
        ids: Sequence[str],
        reports: Sequence[str],
        curvature: float,
        lists: int | None = None,
        probes: int | None = None,
    ) -> HyperbolicIVFIndex:
        """Train the quantizer on `points` (N, dim) and file them.

        lists: inverted lists, default `default_lists(N)` (about sqrt(N)); N must be at least 39 per list.
        probes: lists scanned per query, default min(8, lists); the recall/speed knob, settable later.
        """
        points = np.asarray(points)
        if points.ndim != 2:
            raise ValueError(f"points must have shape (N, dim), got {points.shape}")
        dim = check_dim(points.shape[1])
        ids, reports = list(ids), list(reports)
        ReferenceReports().check_new(ids, reports, len(points))
        lists = default_lists(len(points)) if lists is None else positive_int(lists, "lists")
        if len(points) < MIN_POINTS_PER_LIST * lists:
            raise ValueError(
                f"training {lists} lists needs at least {MIN_POINTS_PER_LIST * lists} points "
                f"({MIN_POINTS_PER_LIST} per list), got {len(points)}: use fewer lists or the exact HyperbolicIndex"
            )
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim + 1), dim + 1, lists, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.spherical = True  # unit centroids: the lists are cones of directions
        ivf.cp.seed = KMEANS_SEED
        index = cls(ivf, curvature, min(DEFAULT_PROBES, lists) if probes is None else probes)  # checks both
        points = ball_points(points, dim, index.curvature, "points")
        ivf.train(_directions(points))
        index._append(points, ids, reports)
        return index

    @property
    def lists(self) -> int:
        return int(self._ivf.nlist)

    @property
    def probes(self) -> int:
        """Lists scanned per query (FAISS's nprobe), 1..lists: more is slower and finds more."""
        return int(self._ivf.nprobe)

    @probes.setter
    def probes(self, probes: int) -> None:
        probes = positive_int(probes, "probes")
        if probes > self.lists:
            raise ValueError(f"probes must be at most lists = {self.lists}, got {probes}")
        self._ivf.nprobe = probes

    @property
    def centroids(self) -> np.ndarray:
        """(lists, dim + 1) float32 unit centroids of the quantizer, time coordinate 0."""
        return self._ivf.quantizer.reconstruct_n(0, self.lists)

    def add(self, points: np.ndarray, ids: Sequence[str], reports: Sequence[str]) -> None:
        """Append rows (N, dim), e.g. new reference reports, into the existing lists (no retraining)."""
        ids, reports = list(ids), list(reports)
        points = self._new_rows(points, ids, reports)
        if ids:
            self._append(points, ids, reports)

    def _append(self, points: np.ndarray, ids: list[str], reports: list[str]) -> None:
        # FAISS numbers the rows it adds from ntotal on, so its ids are our rows.
        self._ivf.add(np.ascontiguousarray(lift_to_hyperboloid(points, self.curvature), dtype=np.float32))
        self._points = np.concatenate([self._points, points])
        self._table.append(ids, reports)

    def to_gpus(self) -> None:
        """Not offered: the IVF variant's per-query probe settings are CPU FAISS's."""
        raise ValueError("retrieval.device 'gpu' covers the exact indexes (cosine, hyperbolic), not the hyperbolic IVF")

    def search(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[str | None] | None = None
    ) -> list[list[Neighbor]]:
        """The (approximately) k nearest rows to each query (Q, dim) or (dim,), nearest first, ties by id.

        A neighbour's distance is the geodesic distance d_c. exclude_ids[q]: an id left out of query
        q's results (in training, the query's own study); None leaves that query unfiltered.
        """
        k, queries, exclude_ids = self._queries(queries, k, exclude_ids)
        if len(self) == 0:
            return [[] for _ in queries]
        excluded = [self._table.row_of.get(study_id, -1) for study_id in exclude_ids]  # -1: none
        wanted = min(k, len(self))
        fetch = min(len(self), CANDIDATES_PER_NEIGHBOR * (wanted + any(row >= 0 for row in excluded)))
        lifted = np.ascontiguousarray(self._probes(queries), dtype=np.float32)  # (Q, dim + 1)
        _, rows = self._ivf.search(lifted, fetch)  # (Q, fetch), -1 past the rows the probed lists hold
        found = [self._rerank(query, rows[q], excluded[q], wanted) for q, query in enumerate(queries)]
        wide = [  # queries whose probed lists hold too few rows: search every list
            q
            for q, neighbors in enumerate(found)
            if len(neighbors) < min(wanted, len(self) - (excluded[q] >= 0))
        ]
        if wide:
            every_list = faiss.SearchParametersIVF(nprobe=self.lists)
            _, again = self._ivf.search(lifted[wide], fetch, params=every_list)
            for q, wide_rows in zip(wide, again):
                found[q] = self._rerank(queries[q], wide_rows, excluded[q], wanted)
        return found

    def _rerank(self, query: np.ndarray, rows: np.ndarray, excluded: int, wanted: int) -> list[Neighbor]:
        """The `wanted` nearest of FAISS's candidate rows (-1: none) by geoopt's distance, ties by id."""
        return self._by_distance(query, rows[(rows >= 0) & (rows != excluded)], wanted)

    def save(self, folder: str | Path) -> None:
        """Write index.faiss, points.npy, reports.jsonl and index.json into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._ivf, str(folder / INDEX_FILE))
        np.save(folder / POINTS_FILE, self._points)
        self._table.save(folder)
        write_index_meta(folder, {
            "kind": self.kind,
            "dim": self.dim,
            "curvature": self.curvature,
            "count": len(self),
            "lists": self.lists,
            "probes": self.probes,
        })

    @classmethod
    def load(cls, folder: str | Path) -> HyperbolicIVFIndex:
        """Read an index written by `save`; FileNotFoundError or ValueError says what is wrong."""
        folder = Path(folder)
        meta = read_index_meta(folder, cls.kind, (INDEX_FILE, POINTS_FILE, REPORTS_FILE))
        dim = check_dim(meta.get("dim"))
        ivf = faiss.read_index(str(folder / INDEX_FILE))
        if not isinstance(ivf, faiss.IndexIVFFlat) or ivf.d != dim + 1 or ivf.nlist != meta.get("lists"):
            raise ValueError(
                f"{folder / INDEX_FILE} is not an IndexIVFFlat over {dim} + 1 coordinates in {meta.get('lists')} lists"
            )
        index = cls(ivf, meta.get("curvature"), meta.get("probes"))
        index._read_rows(folder, meta, {INDEX_FILE: ivf.ntotal})
        return index
