"""The study ids and report texts an index returns, row by row, and the argument checks that every
index kind shares.

On disk: `reports.jsonl`, one {"id", "report"} line per row, in index order, and `index.json`,
the index's kind and sizes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPORTS_FILE, META_FILE = "reports.jsonl", "index.json"


@dataclass(frozen=True)
class Neighbor:
    id: str  # the reference study's id
    report: str  # its report text
    distance: float  # the index kind's distance: smaller is closer


def write_index_meta(folder: Path, meta: dict) -> None:
    """index.json: {"kind", "dim", "count", ...} of the index saved in `folder`."""
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read_index_meta(folder: Path, kind: str, files: Sequence[str]) -> dict:
    """The index.json of a folder holding a `kind` index and its `files`; FileNotFoundError or
    ValueError says what is wrong (a folder of another kind is named as such, whatever it lacks)."""
    if not (folder / META_FILE).is_file():
        raise FileNotFoundError(f"index folder {folder} lacks {META_FILE}")
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("kind") != kind:
        raise ValueError(f"{folder / META_FILE} holds a {meta.get('kind')!r} index, not {kind!r}")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"index folder {folder} lacks {', '.join(missing)}")
    return meta


def positive_int(value: object, name: str) -> int:
    """An int > 0 (numpy ints too, bools not); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_dim(dim: object) -> int:
    return positive_int(dim, "dim")


def finite_rows(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """(N, dim) float64 rows of real, finite numbers; ValueError on a wrong shape, dtype or NaN/inf."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.number) or np.issubdtype(vectors.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real numbers, got dtype {vectors.dtype}")
    vectors = vectors.astype(np.float64)
    if not np.isfinite(vectors).all():
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        raise ValueError(f"{what} contain NaN or inf (rows {bad[:5].tolist()})")
    return vectors


def check_k(k: object) -> int:
    return positive_int(k, "k")


def check_exclusions(exclude_ids: Sequence[str | None] | None, queries: int) -> list[str | None]:
    """One excluded id (or None) per query."""
    if exclude_ids is None:
        return [None] * queries
    if isinstance(exclude_ids, str):
        raise ValueError("exclude_ids must hold one id (or None) per query, not be one string")  # noqa: TRY004
    exclude_ids = list(exclude_ids)
    if len(exclude_ids) != queries:
        raise ValueError(f"got {len(exclude_ids)} exclude_ids for {queries} queries")
    return exclude_ids


class ReferenceReports:
    """Row -> (study id, report), with ids unique across the index."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.reports: list[str] = []
        self.row_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def check_new(self, ids: Sequence[str], reports: Sequence[str], rows: int | None) -> None:
        """ValueError unless `ids` and `reports` pair up with `rows` embeddings and every id is new."""
        if len(ids) != len(reports):
            raise ValueError(f"got {len(ids)} ids but {len(reports)} reports")
        if rows is not None and rows != len(ids):
            raise ValueError(f"got {rows} embeddings but {len(ids)} ids")
        for name, values in (("ids", ids), ("reports", reports)):
            wrong = [value for value in values if not isinstance(value, str)]
            if wrong:
                raise ValueError(f"{name} must be strings, got {type(wrong[0]).__name__} ({wrong[0]!r})")
        repeated = sorted(study_id for study_id, count in Counter(ids).items() if count > 1)
        if repeated:
            raise ValueError(f"duplicate ids in this batch: {repeated[:5]}")
        present = [i for i in ids if i in self.row_of]
        if present:
            raise ValueError(f"ids already in the index: {present[:5]}")

    def append(self, ids: Sequence[str], reports: Sequence[str]) -> None:
        for study_id, report in zip(ids, reports):
            self.row_of[study_id] = len(self.ids)
            self.ids.append(study_id)
            self.reports.append(report)

    def save(self, folder: Path) -> None:
        lines = (
            json.dumps({"id": study_id, "report": report}, ensure_ascii=False) + "\n"
            for study_id, report in zip(self.ids, self.reports)
        )
        (folder / REPORTS_FILE).write_text("".join(lines), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> ReferenceReports:
        with open(folder / REPORTS_FILE, encoding="utf-8") as lines:
            entries = [json.loads(line) for line in lines if line.strip()]
        if not all(
            isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("report"), str)
            for entry in entries
        ):
            raise ValueError(f"{folder / REPORTS_FILE}: every line needs a string id and a string report")
        table = cls()
        table.ids = [entry["id"] for entry in entries]
        table.reports = [entry["report"] for entry in entries]
        table.row_of = {study_id: row for row, study_id in enumerate(table.ids)}
        if len(table.row_of) != len(table.ids):
            raise ValueError(f"{folder / REPORTS_FILE} repeats ids")
        return table
