"""Exact cosine kNN over image embeddings: retrieval v1 for the generator (FAISS `IndexFlatIP`).

Rows are L2-normalised on the way in, so the inner product FAISS maximises is the cosine similarity;
a neighbour's distance is `1 - cosine similarity` (0 for the same direction, 2 for the opposite one).
The hyperbolic index serves the same interface (`kind`, `build`, `add`, `search`, `save`, `load`).

On disk an index is a folder:
    index.faiss     the FAISS index (`faiss.write_index`)
    reports.jsonl   one {"id", "report"} line per row, in index order
    index.json      {"kind": "cosine", "dim": ..., "count": ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from retrieval.faiss_device import on_cpu, to_gpus
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

INDEX_FILE = "index.faiss"
__all__ = ["CosineIndex", "Neighbor"]


def _unit_rows(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """(N, dim) float32 rows of unit length; ValueError on a wrong shape, NaN/inf or a zero row."""
    vectors = finite_rows(vectors, dim, what)  # float64: a float32 norm of large entries overflows to inf
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms[:, 0] == 0)
        raise ValueError(f"{what} contain zero vectors, which have no direction (rows {bad[:5].tolist()})")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


class CosineIndex:
    """Exact inner-product search over unit rows; each row carries a study id and its report."""

    kind = "cosine"

    def __init__(self, dim: int):
        self.dim = check_dim(dim)
        self._index = faiss.IndexFlatIP(self.dim)
        self._table = ReferenceReports()

    @classmethod
    def build(cls, embeddings: np.ndarray, ids: Sequence[str], reports: Sequence[str]) -> CosineIndex:
        """A new index holding `embeddings` (N, dim), the dimension read from their shape."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must have shape (N, dim), got {embeddings.shape}")
        index = cls(embeddings.shape[1])
        index.add(embeddings, ids, reports)
        return index

    def __len__(self) -> int:
        return self._index.ntotal

    def to_gpus(self) -> None:
        """Search on every visible GPU from now on (retrieval/faiss_device.py)."""
        self._index = to_gpus(self._index)

    def add(self, embeddings: np.ndarray, ids: Sequence[str], reports: Sequence[str]) -> None:
        """Append rows (N, dim); each id must be new to the index."""
        ids, reports = list(ids), list(reports)
        shape = np.shape(embeddings)
        self._table.check_new(ids, reports, shape[0] if len(shape) == 2 else None)
        rows = _unit_rows(embeddings, self.dim, "embeddings")  # (N, dim)
        if not ids:
            return
        self._index.add(rows)
        self._table.append(ids, reports)

    def search(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[str | None] | None = None
    ) -> list[list[Neighbor]]:
        """The k nearest rows to each query (Q, dim) or (dim,), nearest first, ties by id.

        exclude_ids[q]: an id left out of query q's results (in training, the query's own study,
        so that a study is not its own reference); None leaves that query unfiltered.
        """
        k = check_k(k)
        queries = np.asarray(queries)
        if queries.ndim == 1:
            queries = queries[None, :]  # (1, dim)
        queries = _unit_rows(queries, self.dim, "queries")  # (Q, dim)
        exclude_ids = check_exclusions(exclude_ids, len(queries))
        if len(self) == 0:
            return [[] for _ in queries]

        wanted = min(k, len(self))
        # One row past the k kept (two when one may be excluded) shows whether a tie runs over the cut.
        fetch = min(len(self), wanted + 1 + any(e is not None for e in exclude_ids))
        similarities, rows = self._index.search(queries, fetch)  # (Q, fetch) each
        return [
            self._nearest(query, wanted, excluded, similarities[q], rows[q], fetch)
            for q, (query, excluded) in enumerate(zip(queries, exclude_ids))
        ]

    def _nearest(
        self,
        query: np.ndarray,
        wanted: int,
        excluded: str | None,
        similarities: np.ndarray,
        rows: np.ndarray,
        fetch: int,
    ) -> list[Neighbor]:
        while True:
            candidates = sorted(
                (
                    (-float(similarity), self._table.ids[row], int(row))
                    for similarity, row in zip(similarities, rows)
                    if row >= 0 and self._table.ids[row] != excluded
                ),
            )
            kept = candidates[:wanted]
            # The order by (similarity, id) is settled once every row not fetched is strictly farther
            # than the last one kept; FAISS breaks ties by insertion order, not by id.
            settled = fetch == len(self) or -float(similarities[-1]) > kept[-1][0]
            if settled:
                break
            fetch = min(len(self), 2 * fetch)
            similarities, rows = self._index.search(query[None, :], fetch)
            similarities, rows = similarities[0], rows[0]
        return [
            Neighbor(
                id=study_id, report=self._table.reports[row], distance=float(np.clip(1.0 + negative, 0.0, 2.0))
            )
            for negative, study_id, row in kept
        ]

    def save(self, folder: str | Path) -> None:
        """Write index.faiss, reports.jsonl and index.json into `folder` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(on_cpu(self._index), str(folder / INDEX_FILE))
        self._table.save(folder)
        write_index_meta(folder, {"kind": self.kind, "dim": self.dim, "count": len(self)})

    @classmethod
    def load(cls, folder: str | Path) -> CosineIndex:
        """Read an index written by `save`; FileNotFoundError or ValueError says what is wrong."""
        folder = Path(folder)
        meta = read_index_meta(folder, cls.kind, (INDEX_FILE, REPORTS_FILE))
        dim = meta.get("dim")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"{folder / META_FILE} gives no positive integer dim ({dim!r})")
        index = cls(dim)
        try:
            faiss_index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as error:
            raise ValueError(f"{folder / INDEX_FILE} is not a readable FAISS index: {error}") from error
        if not isinstance(faiss_index, faiss.IndexFlatIP) or faiss_index.d != index.dim:
            raise ValueError(
                f"{folder / INDEX_FILE} is not an exact inner-product index (IndexFlatIP) of dimension "
                f"{index.dim}: it is a {type(faiss_index).__name__} of dimension {faiss_index.d}"
            )
        table = ReferenceReports.load(folder)
        counts = {META_FILE: meta.get("count"), INDEX_FILE: faiss_index.ntotal, REPORTS_FILE: len(table)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"index folder {folder} disagrees on the row count: {counts}")
        index._index, index._table = faiss_index, table
        return index
