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

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

INDEX_FILE, REPORTS_FILE, META_FILE = "index.faiss", "reports.jsonl", "index.json"


@dataclass(frozen=True)
class Neighbor:
    id: str  # the reference study's id
    report: str  # its report text
    distance: float  # cosine distance = 1 - cosine similarity (smaller is closer), in [0, 2]


def _unit_rows(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """(N, dim) float32 rows of unit length; ValueError on a wrong shape, NaN/inf or a zero row."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.number) or np.issubdtype(vectors.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real numbers, got dtype {vectors.dtype}")
    # Normalise in float64: a float32 norm of large entries overflows to inf.
    vectors = vectors.astype(np.float64)
    if not np.isfinite(vectors).all():
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        raise ValueError(f"{what} contain NaN or inf (rows {bad[:5].tolist()})")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms[:, 0] == 0)
        raise ValueError(f"{what} contain zero vectors, which have no direction (rows {bad[:5].tolist()})")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


class CosineIndex:
    """Exact inner-product search over unit rows; each row carries a study id and its report."""

    kind = "cosine"

    def __init__(self, dim: int):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self._index = faiss.IndexFlatIP(self.dim)
        self._ids: list[str] = []
        self._reports: list[str] = []
        self._row_of: dict[str, int] = {}

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

    def add(self, embeddings: np.ndarray, ids: Sequence[str], reports: Sequence[str]) -> None:
        """Append rows (N, dim); each id must be new to the index."""
        ids, reports = list(ids), list(reports)
        if len(ids) != len(reports):
            raise ValueError(f"got {len(ids)} ids but {len(reports)} reports")
        if len(np.shape(embeddings)) == 2 and np.shape(embeddings)[0] != len(ids):
            raise ValueError(f"got {np.shape(embeddings)[0]} embeddings but {len(ids)} ids")
        rows = _unit_rows(embeddings, self.dim, "embeddings")  # (N, dim)
        for name, values in (("ids", ids), ("reports", reports)):
            wrong = [value for value in values if not isinstance(value, str)]
            if wrong:
                raise ValueError(f"{name} must be strings, got {type(wrong[0]).__name__} ({wrong[0]!r})")
        repeated = sorted(study_id for study_id, count in Counter(ids).items() if count > 1)
        if repeated:
            raise ValueError(f"duplicate ids in this batch: {repeated[:5]}")
        present = [i for i in ids if i in self._row_of]
        if present:
            raise ValueError(f"ids already in the index: {present[:5]}")
        if not ids:
            return
        self._index.add(rows)
        for study_id, report in zip(ids, reports):
            self._row_of[study_id] = len(self._ids)
            self._ids.append(study_id)
            self._reports.append(report)

    def search(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[str | None] | None = None
    ) -> list[list[Neighbor]]:
        """The k nearest rows to each query (Q, dim) or (dim,), nearest first, ties by id.

        exclude_ids[q]: an id left out of query q's results (in training, the query's own study,
        so that a study is not its own reference); None leaves that query unfiltered.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        queries = np.asarray(queries)
        if queries.ndim == 1:
            queries = queries[None, :]  # (1, dim)
        queries = _unit_rows(queries, self.dim, "queries")  # (Q, dim)
        if exclude_ids is None:
            exclude_ids = [None] * len(queries)
        elif isinstance(exclude_ids, str):
            raise ValueError("exclude_ids must hold one id (or None) per query, not be one string")
        exclude_ids = list(exclude_ids)
        if len(exclude_ids) != len(queries):
            raise ValueError(f"got {len(exclude_ids)} exclude_ids for {len(queries)} queries")
        if len(self) == 0:
            return [[] for _ in queries]

        wanted = min(int(k), len(self))
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
                    (-float(similarity), self._ids[row], int(row))
                    for similarity, row in zip(similarities, rows)
                    if row >= 0 and self._ids[row] != excluded
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
                id=study_id, report=self._reports[row], distance=float(np.clip(1.0 + negative, 0.0, 2.0))
            )
            for negative, study_id, row in kept
        ]

    def save(self, folder: str | Path) -> None:
        """Write index.faiss, reports.jsonl and index.json into `folder` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(folder / INDEX_FILE))
        lines = (
            json.dumps({"id": study_id, "report": report}, ensure_ascii=False) + "\n"
            for study_id, report in zip(self._ids, self._reports)
        )
        (folder / REPORTS_FILE).write_text("".join(lines), encoding="utf-8")
        meta = {"kind": self.kind, "dim": self.dim, "count": len(self)}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> CosineIndex:
        """Read an index written by `save`; FileNotFoundError or ValueError says what is wrong."""
        folder = Path(folder)
        missing = [name for name in (META_FILE, INDEX_FILE, REPORTS_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"index folder {folder} lacks {', '.join(missing)}")
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if meta.get("kind") != cls.kind:
            raise ValueError(f"{folder / META_FILE} holds a {meta.get('kind')!r} index, not {cls.kind!r}")
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
        with open(folder / REPORTS_FILE, encoding="utf-8") as lines:
            entries = [json.loads(line) for line in lines if line.strip()]
        counts = {META_FILE: meta.get("count"), INDEX_FILE: faiss_index.ntotal, REPORTS_FILE: len(entries)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"index folder {folder} disagrees on the row count: {counts}")
        index._index = faiss_index
        if not all(
            isinstance(entry, dict)
            and isinstance(entry.get("id"), str)
            and isinstance(entry.get("report"), str)
            for entry in entries
        ):
            raise ValueError(f"{folder / REPORTS_FILE}: every line needs a string id and a string report")
        index._ids = [entry["id"] for entry in entries]
        index._reports = [entry["report"] for entry in entries]
        index._row_of = {study_id: row for row, study_id in enumerate(index._ids)}
        if len(index._row_of) != len(index._ids):
            raise ValueError(f"{folder / REPORTS_FILE} repeats ids")
        return index
