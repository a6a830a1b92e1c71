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

The bound grows with the rows' time coordinate, so rows are kept in shells of X0 ([1, 4), [4, 16),
...), one `IndexFlatIP` each with its own bound: the far shells, whose rows cannot be near, settle
after one batched scan, and only the shells near the k-th candidate are searched further.

On disk an index is a folder (the FAISS shells are rebuilt from the points on load):
    points.npy      the Poincare points in float64, for the lift and the exact re-rank
    reports.jsonl   one {"id", "report"} line per row, in index order
    index.json      {"kind": "hyperbolic", "dim": ..., "curvature": ..., "count": ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import faiss
import geoopt
import numpy as np
import torch

from retrieval.faiss_device import to_gpus
from retrieval.reference_reports import (
    META_FILE,
    REPORTS_FILE,
    Neighbor,
    ReferenceReports,
    check_dim,
    check_exclusions,
    check_k,
    finite_rows,
    read_index_meta,
    write_index_meta,
)

POINTS_FILE = "points.npy"
# float32's unit roundoff, with a factor of 4 for the casts of both operands and the summation order.
_FLOAT32_ERROR = 4 * 2.0**-24
_FLOAT64_ERROR = 4 * 2.0**-53
_SHELL_RATIO = 4.0  # rows are searched in shells of their time coordinate: [1, 4), [4, 16), ...


def ball_points(points: np.ndarray, dim: int, curvature: float, what: str) -> np.ndarray:
    """(N, dim) float64 points strictly inside the ball; ValueError otherwise."""
    points = finite_rows(points, dim, what)
    squared = curvature * np.einsum("nd,nd->n", points, points)  # |z|^2
    if (squared >= 1.0).any():
        bad = np.flatnonzero(squared >= 1.0)
        raise ValueError(
            f"{what} must lie inside the Poincare ball of radius 1/sqrt(c) = {1 / math.sqrt(curvature):g} "
            f"(rows {bad[:5].tolist()} do not)"
        )
    return np.ascontiguousarray(points)


def reproducible_geoopt():
    """A context for geoopt's maths that gives the same numbers on every call.

    geoopt's manifold functions are TorchScript. TorchScript's optimising executor compiles them
    again after a few calls, and the new graphs round differently (by ~1e-7 in float32): an LRE
    trained second in a process then differed from the same one trained first, and so did the
    references and the bundle. Unoptimised execution runs every call alike.
    """
    return torch.jit.optimized_execution(False)


def lift_to_hyperboloid(points: np.ndarray, curvature: float) -> np.ndarray:
    """(N, dim) Poincare points -> (N, dim + 1) points (X0, X1, ...) of the unit hyperboloid."""
    z = math.sqrt(curvature) * points
    squared = np.einsum("nd,nd->n", z, z)[:, None]  # (N, 1)
    denominator = 1.0 - squared
    return np.concatenate([(1.0 + squared) / denominator, 2.0 * z / denominator], axis=1)


class PoincareRows:
    """What every hyperbolic index keeps and does alike: the ball, the rows' Poincare points in float64
    for the exact re-rank, their ids and reports, the checks on queries, and the final order by
    geoopt's distance."""

    def __init__(self, dim: int, curvature: float):
        dim = check_dim(dim)
        if isinstance(curvature, bool) or not isinstance(curvature, (int, float)) or not curvature > 0:
            raise ValueError(f"curvature must be a positive number (the ball has curvature -c), got {curvature!r}")
        self.dim, self.curvature = dim, float(curvature)
        # On the CPU, as the rows: numpy arrays, measured by geoopt in float64.
        self.ball = geoopt.PoincareBall(c=torch.tensor(self.curvature, dtype=torch.float64, device="cpu"))
        self._points = np.zeros((0, self.dim))  # float64, for the re-rank
        self._table = ReferenceReports()

    def __len__(self) -> int:
        return len(self._points)

    def distances(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """geoopt's float64 distances d_c from one query (dim,) to the given rows."""
        with reproducible_geoopt():
            return self.ball.dist(torch.from_numpy(self._points[rows]), torch.from_numpy(query)).cpu().numpy()

    def _new_rows(self, points: np.ndarray, ids: list[str], reports: list[str]) -> np.ndarray:
        """`points` (N, dim) as float64 rows inside the ball, once ids and reports pair up with them."""
        shape = np.shape(points)
        self._table.check_new(ids, reports, shape[0] if len(shape) == 2 else None)
        return ball_points(points, self.dim, self.curvature, "points")

    def _queries(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[str | None] | None
    ) -> tuple[int, np.ndarray, list[str | None]]:
        """k checked, queries (Q, dim) or (dim,) as float64 rows inside the ball, one exclusion per query."""
        k = check_k(k)
        queries = np.asarray(queries)
        if queries.ndim == 1:
            queries = queries[None, :]  # (1, dim)
        queries = ball_points(queries, self.dim, self.curvature, "queries")  # (Q, dim)
        return k, queries, check_exclusions(exclude_ids, len(queries))

    def _probes(self, queries: np.ndarray) -> np.ndarray:
        """(Q, dim + 1) lifted queries with the time coordinate negated: inner product = -cosh(sqrt(c) d)."""
        probes = lift_to_hyperboloid(queries, self.curvature)
        probes[:, 0] *= -1.0
        return probes

    def _by_distance(self, query: np.ndarray, rows: np.ndarray, wanted: int) -> list[Neighbor]:
        """The `wanted` nearest of the candidate rows by geoopt's float64 distance, ties by id (near the
        boundary cosh, and so float32 scores, cannot separate close rows)."""
        kept = sorted(zip(self.distances(query, rows).tolist(), (self._table.ids[r] for r in rows), rows.tolist()))
        return [Neighbor(id=study_id, report=self._table.reports[row], distance=d) for d, study_id, row in kept[:wanted]]

    def _read_rows(self, folder: Path, meta: dict, counts: dict) -> None:
        """Load points.npy and reports.jsonl into this empty index; ValueError unless every count agrees."""
        points = ball_points(np.load(folder / POINTS_FILE), self.dim, self.curvature, str(folder / POINTS_FILE))
        table = ReferenceReports.load(folder)
        counts = {META_FILE: meta.get("count"), **counts, POINTS_FILE: len(points), REPORTS_FILE: len(table)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"index folder {folder} disagrees on the row count: {counts}")
        self._points, self._table = points, table


class _Shell:
    """The rows whose time coordinate X0 lies in one band [4^s, 4^(s+1)): their own FAISS index, so
    that the float32 error bound, which grows with X0, stays as tight as the band."""

    def __init__(self, dim: int):
        self.index = faiss.IndexFlatIP(dim + 1)
        self.rows = np.zeros(0, dtype=np.int64)  # shell row -> index row
        self.largest_time = 1.0

    def add(self, lifted: np.ndarray, rows: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(lifted, dtype=np.float32))
        self.rows = np.concatenate([self.rows, rows])
        self.largest_time = max(self.largest_time, float(lifted[:, 0].max()))

    def __len__(self) -> int:
        return self.index.ntotal


class HyperbolicIndex(PoincareRows):
    """Exact hyperbolic kNN on the Poincare ball; each row carries a study id and its report."""

    kind = "hyperbolic"

    def __init__(self, dim: int, curvature: float):
        super().__init__(dim, curvature)
        self._shells: dict[int, _Shell] = {}
        self._on_gpus = False

    def to_gpus(self) -> None:
        """Search on every visible GPU from now on, shells added later too (retrieval/faiss_device.py)."""
        for shell in self._shells.values():
            shell.index = to_gpus(shell.index)
        self._on_gpus = True

    @classmethod
    def build(
        cls, points: np.ndarray, ids: Sequence[str], reports: Sequence[str], curvature: float
    ) -> HyperbolicIndex:
        """A new index holding `points` (N, dim), the dimension read from their shape."""
        points = np.asarray(points)
        if points.ndim != 2:
            raise ValueError(f"points must have shape (N, dim), got {points.shape}")
        index = cls(points.shape[1], curvature)
        index.add(points, ids, reports)
        return index

    def add(self, points: np.ndarray, ids: Sequence[str], reports: Sequence[str]) -> None:
        """Append rows (N, dim), e.g. new reference reports, without touching the others."""
        ids, reports = list(ids), list(reports)
        points = self._new_rows(points, ids, reports)
        if not ids:
            return
        self._file(points, np.arange(len(self), len(self) + len(points)))
        self._points = np.concatenate([self._points, points])
        self._table.append(ids, reports)

    def _file(self, points: np.ndarray, rows: np.ndarray) -> None:
        """Put lifted points into the shells of their time coordinate."""
        lifted = lift_to_hyperboloid(points, self.curvature)  # (N, dim + 1)
        bands = np.floor(np.log(lifted[:, 0]) / math.log(_SHELL_RATIO)).astype(int)
        for band in np.unique(bands):
            chosen = bands == band
            if int(band) not in self._shells:
                shell = self._shells[int(band)] = _Shell(self.dim)
                if self._on_gpus:
                    shell.index = to_gpus(shell.index)
            self._shells[int(band)].add(lifted[chosen], rows[chosen])

    def search(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[str | None] | None = None
    ) -> list[list[Neighbor]]:
        """The k nearest rows to each query (Q, dim) or (dim,), nearest first, ties by id.

        A neighbour's distance is the geodesic distance d_c. exclude_ids[q]: an id left out of query
        q's results (in training, the query's own study); None leaves that query unfiltered.
        """
        k, queries, exclude_ids = self._queries(queries, k, exclude_ids)
        if len(self) == 0:
            return [[] for _ in queries]
        wanted = min(k, len(self))
        probes = self._probes(queries)  # (Q, dim + 1)
        probes32 = np.ascontiguousarray(probes, dtype=np.float32)
        first = {}  # shell -> (fetch, scores (Q, fetch), shell rows (Q, fetch)): one batched scan each
        for band, shell in self._shells.items():
            fetch = min(len(shell), 4 * (wanted + 1))
            first[band] = (fetch, *shell.index.search(probes32, fetch))
        return [
            self._nearest(queries[q], probes[q], wanted, exclude_ids[q],
                          {band: (fetch, scores[q], rows[q]) for band, (fetch, scores, rows) in first.items()})
            for q in range(len(queries))
        ]

    def _nearest(
        self, query: np.ndarray, probe: np.ndarray, wanted: int, excluded: str | None,
        fetched: dict[int, tuple[int, np.ndarray, np.ndarray]],
    ) -> list[Neighbor]:
        # |float32 score - exact score| <= bound * X0(y), since sum |q_i y_i| <= 2 X0(q) X0(y).
        bound = _FLOAT32_ERROR * (self.dim + 2) * 2.0 * -probe[0]
        error64 = bound * self._largest_time * _FLOAT64_ERROR / _FLOAT32_ERROR  # the float64 scores' bound
        probe32 = np.ascontiguousarray(probe[None, :], dtype=np.float32)
        while True:
            rows = np.concatenate([self._shells[b].rows[r[r >= 0]] for b, (_, _, r) in fetched.items()])
            rows = rows[[self._table.ids[row] != excluded for row in rows]]
            # The candidates' scores again in float64 (-cosh(sqrt(c) d), nearly exact), largest first.
            exact = lift_to_hyperboloid(self._points[rows], self.curvature) @ probe
            order = np.argsort(-exact, kind="stable")
            kth = exact[order[wanted - 1]] - error64 if len(order) >= wanted else -math.inf
            # A shell's rows not fetched scored at most its last score in float32, so at most that plus
            # its bound exactly: farther than the k-th candidate when that is below the k-th's score.
            open_shells = [
                band for band, (fetch, scores, _) in fetched.items()
                if fetch < len(self._shells[band]) and float(scores[-1]) + bound * self._shells[band].largest_time >= kth
            ]
            if not open_shells:
                break
            for band in open_shells:
                shell = self._shells[band]
                fetch = min(len(shell), 4 * fetched[band][0])
                scores, shell_rows = shell.index.search(probe32, fetch)
                fetched[band] = (fetch, scores[0], shell_rows[0])
        if not len(order):
            return []
        # geoopt's distance decides the order among the candidates that float64 cannot separate from
        # the k-th (cosh loses precision near the boundary).
        cut = exact[order[min(wanted, len(order)) - 1]]
        return self._by_distance(query, rows[exact >= cut - 2.0 * error64], wanted)

    @property
    def _largest_time(self) -> float:
        return max((shell.largest_time for shell in self._shells.values()), default=1.0)

    def save(self, folder: str | Path) -> None:
        """Write points.npy, reports.jsonl and index.json into `folder` (FAISS rebuilds on load)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / POINTS_FILE, self._points)
        self._table.save(folder)
        write_index_meta(folder, {"kind": self.kind, "dim": self.dim, "curvature": self.curvature, "count": len(self)})

    @classmethod
    def load(cls, folder: str | Path) -> HyperbolicIndex:
        """Read an index written by `save`; FileNotFoundError or ValueError says what is wrong."""
        folder = Path(folder)
        meta = read_index_meta(folder, cls.kind, (POINTS_FILE, REPORTS_FILE))
        index = cls(meta.get("dim"), meta.get("curvature"))
        index._read_rows(folder, meta, {})
        index._file(index._points, np.arange(len(index)))
        return index
