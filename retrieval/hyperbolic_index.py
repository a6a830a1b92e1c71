"""Exact hyperbolic kNN over Poincare-ball embeddings through FAISS (DESIGN.md section 6).

A point x of the Poincare ball of curvature -c (radius 1/sqrt(c)) lifts to the unit hyperboloid
with z = sqrt(c) * x:

    X0 = (1 + |z|^2) / (1 - |z|^2),   Xi = 2 zi / (1 - |z|^2)

where the geodesic distance is d_c(x, y) = arcosh(-<X, Y>_L) / sqrt(c), with the Lorentz product
<X, Y>_L = -X0 Y0 + X1 Y1 + ... . Negating the query's time coordinate X0 makes FAISS's plain inner
product equal to -cosh(sqrt(c) d): the largest inner product is the nearest point, which
`IndexFlatIP` finds exactly. Near the boundary X0 grows like 1/(1 - |z|^2) and float32 products
lose the small differences that separate neighbours, so FAISS only proposes candidates. Their
scores are computed again in float64, the search widens until a bound on float32's error proves
that no row left unfetched could be nearer than the k-th candidate, and geoopt's float64
distance orders the candidates that float64 scores cannot tell apart from the k-th.

On disk an index is a folder:
    index.faiss     the FAISS index of the lifted points (float32)
    points.npy      the Poincare points in float64, for the exact re-rank
    reports.jsonl   one {"id", "report"} line per row, in index order
    index.json      {"kind": "hyperbolic", "dim": ..., "curvature": ..., "count": ...}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import faiss
import geoopt
import numpy as np
import torch

from retrieval.reference_reports import REPORTS_FILE, Neighbor, ReferenceReports, check_exclusions, check_k

INDEX_FILE, POINTS_FILE, META_FILE = "index.faiss", "points.npy", "index.json"
DEFAULT_CURVATURE = 0.01  # REVTAF's c
# float32's unit roundoff, with a factor of 4 for the casts of both operands and the summation order.
_FLOAT32_ERROR = 4 * 2.0**-24
_FLOAT64_ERROR = 4 * 2.0**-53


def _ball_points(points: np.ndarray, dim: int, curvature: float, what: str) -> np.ndarray:
    """(N, dim) float64 points strictly inside the ball; ValueError otherwise."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {points.shape}")
    if not np.issubdtype(points.dtype, np.number) or np.issubdtype(points.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real numbers, got dtype {points.dtype}")
    points = points.astype(np.float64)
    if not np.isfinite(points).all():
        bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
        raise ValueError(f"{what} contain NaN or inf (rows {bad[:5].tolist()})")
    squared = curvature * np.einsum("nd,nd->n", points, points)  # |z|^2
    if (squared >= 1.0).any():
        bad = np.flatnonzero(squared >= 1.0)
        raise ValueError(
            f"{what} must lie inside the Poincare ball of radius 1/sqrt(c) = {1 / math.sqrt(curvature):g} "
            f"(rows {bad[:5].tolist()} do not)"
        )
    return np.ascontiguousarray(points)


def lift_to_hyperboloid(points: np.ndarray, curvature: float) -> np.ndarray:
    """(N, dim) Poincare points -> (N, dim + 1) points (X0, X1, ...) of the unit hyperboloid."""
    z = math.sqrt(curvature) * points
    squared = np.einsum("nd,nd->n", z, z)[:, None]  # (N, 1)
    denominator = 1.0 - squared
    return np.concatenate([(1.0 + squared) / denominator, 2.0 * z / denominator], axis=1)


class HyperbolicIndex:
    """Exact hyperbolic kNN on the Poincare ball; each row carries a study id and its report."""

    kind = "hyperbolic"

    def __init__(self, dim: int, curvature: float = DEFAULT_CURVATURE):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if isinstance(curvature, bool) or not isinstance(curvature, (int, float)) or not curvature > 0:
            raise ValueError(f"curvature must be a positive number (the ball has curvature -c), got {curvature!r}")
        self.dim, self.curvature = int(dim), float(curvature)
        self.ball = geoopt.PoincareBall(c=torch.tensor(self.curvature, dtype=torch.float64))
        self._index = faiss.IndexFlatIP(self.dim + 1)
        self._points = np.zeros((0, self.dim))  # float64, for the re-rank
        self._largest_time = 1.0  # the largest X0 in the index, for the float32 error bound
        self._table = ReferenceReports()

    @classmethod
    def build(
        cls, points: np.ndarray, ids: Sequence[str], reports: Sequence[str], curvature: float = DEFAULT_CURVATURE
    ) -> HyperbolicIndex:
        """A new index holding `points` (N, dim), the dimension read from their shape."""
        points = np.asarray(points)
        if points.ndim != 2:
            raise ValueError(f"points must have shape (N, dim), got {points.shape}")
        index = cls(points.shape[1], curvature)
        index.add(points, ids, reports)
        return index

    def __len__(self) -> int:
        return self._index.ntotal

    def add(self, points: np.ndarray, ids: Sequence[str], reports: Sequence[str]) -> None:
        """Append rows (N, dim), e.g. new reference reports, without touching the others."""
        ids, reports = list(ids), list(reports)
        shape = np.shape(points)
        self._table.check_new(ids, reports, shape[0] if len(shape) == 2 else None)
        points = _ball_points(points, self.dim, self.curvature, "points")
        if not ids:
            return
        lifted = lift_to_hyperboloid(points, self.curvature)  # (N, dim + 1)
        self._index.add(np.ascontiguousarray(lifted, dtype=np.float32))
        self._points = np.concatenate([self._points, points])
        self._largest_time = max(self._largest_time, float(lifted[:, 0].max()))
        self._table.append(ids, reports)

    def distances(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """geoopt's float64 distances d_c from one query (dim,) to the given rows."""
        return self.ball.dist(torch.from_numpy(self._points[rows]), torch.from_numpy(query)).numpy()

    def search(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[str | None] | None = None
    ) -> list[list[Neighbor]]:
        """The k nearest rows to each query (Q, dim) or (dim,), nearest first, ties by id.

        A neighbour's distance is the geodesic distance d_c. exclude_ids[q]: an id left out of query
        q's results (in training, the query's own study); None leaves that query unfiltered.
        """
        k = check_k(k)
        queries = np.asarray(queries)
        if queries.ndim == 1:
            queries = queries[None, :]  # (1, dim)
        queries = _ball_points(queries, self.dim, self.curvature, "queries")  # (Q, dim)
        exclude_ids = check_exclusions(exclude_ids, len(queries))
        if len(self) == 0:
            return [[] for _ in queries]
        wanted = min(k, len(self))
        probes = lift_to_hyperboloid(queries, self.curvature)  # (Q, dim + 1)
        probes[:, 0] *= -1.0  # inner product = -cosh(sqrt(c) d)
        probes32 = np.ascontiguousarray(probes, dtype=np.float32)
        fetch = min(len(self), max(4 * (wanted + 1), 1024))  # one batched scan settles most queries
        scores, rows = self._index.search(probes32, fetch)  # (Q, fetch) each
        return [
            self._nearest(queries[q], probes32[q], -probes[q, 0], wanted, exclude_ids[q], scores[q], rows[q], fetch)
            for q in range(len(queries))
        ]

    def _nearest(
        self,
        query: np.ndarray,
        probe: np.ndarray,
        query_time: float,
        wanted: int,
        excluded: str | None,
        scores: np.ndarray,
        rows: np.ndarray,
        fetch: int,
    ) -> list[Neighbor]:
        # |float32 score - exact score| <= error: sum |q_i y_i| <= 2 X0(q) X0(y) on the hyperboloid.
        error = _FLOAT32_ERROR * (self.dim + 2) * 2.0 * query_time * self._largest_time
        error64 = error * _FLOAT64_ERROR / _FLOAT32_ERROR  # the same bound for the float64 scores
        exact_probe = lift_to_hyperboloid(query[None, :], self.curvature)[0]
        exact_probe[0] *= -1.0
        while True:
            rows = rows[rows >= 0]
            rows = rows[[self._table.ids[row] != excluded for row in rows]]
            # The candidates' scores again in float64 (-cosh(sqrt(c) d), nearly exact), largest first.
            exact = lift_to_hyperboloid(self._points[rows], self.curvature) @ exact_probe
            order = np.argsort(-exact, kind="stable")
            if fetch == len(self):
                break
            # Every row not fetched scored at most scores[-1] in float32, so at most scores[-1] + error
            # exactly: farther than the k-th candidate when that is below the k-th exact score.
            if len(order) >= wanted and float(scores[-1]) + error < exact[order[wanted - 1]] - error64:
                break
            fetch = min(len(self), 4 * fetch)
            scores, rows = self._index.search(probe[None, :], fetch)
            scores, rows = scores[0], rows[0]
        if not len(order):
            return []
        # geoopt's distance decides the order among the candidates that float64 cannot separate from
        # the k-th (cosh loses precision near the boundary).
        cut = exact[order[min(wanted, len(order)) - 1]]
        close = rows[exact >= cut - 2.0 * error64]
        kept = sorted(zip(self.distances(query, close).tolist(), (self._table.ids[r] for r in close), close.tolist()))
        return [
            Neighbor(id=study_id, report=self._table.reports[row], distance=d) for d, study_id, row in kept[:wanted]
        ]

    def save(self, folder: str | Path) -> None:
        """Write index.faiss, points.npy, reports.jsonl and index.json into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / INDEX_FILE))
        np.save(folder / POINTS_FILE, self._points)
        self._table.save(folder)
        meta = {"kind": self.kind, "dim": self.dim, "curvature": self.curvature, "count": len(self)}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> HyperbolicIndex:
        """Read an index written by `save`; FileNotFoundError or ValueError says what is wrong."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"index folder {folder} lacks {META_FILE}")
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if meta.get("kind") != cls.kind:
            raise ValueError(f"{folder / META_FILE} holds a {meta.get('kind')!r} index, not {cls.kind!r}")
        missing = [name for name in (INDEX_FILE, POINTS_FILE, REPORTS_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"index folder {folder} lacks {', '.join(missing)}")
        index = cls(meta.get("dim"), meta.get("curvature"))
        try:
            faiss_index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as error:
            raise ValueError(f"{folder / INDEX_FILE} is not a readable FAISS index: {error}") from error
        if not isinstance(faiss_index, faiss.IndexFlatIP) or faiss_index.d != index.dim + 1:
            raise ValueError(
                f"{folder / INDEX_FILE} is not an exact inner-product index (IndexFlatIP) of dimension "
                f"{index.dim + 1}: it is a {type(faiss_index).__name__} of dimension {faiss_index.d}"
            )
        points = _ball_points(np.load(folder / POINTS_FILE), index.dim, index.curvature, str(folder / POINTS_FILE))
        table = ReferenceReports.load(folder)
        counts = {META_FILE: meta.get("count"), INDEX_FILE: faiss_index.ntotal, POINTS_FILE: len(points),
                  REPORTS_FILE: len(table)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"index folder {folder} disagrees on the row count: {counts}")
        index._index, index._points, index._table = faiss_index, points, table
        if len(points):
            index._largest_time = float(lift_to_hyperboloid(points, index.curvature)[:, 0].max())
        return index
