"""A data set's manifest: `manifest.jsonl`, one study per line, written last (a finished set has one).

Each record: `id`, `split`, `report`, `image` (relative to the set's folder, or absolute), `labels`
(CheXbert's 14, by the labeler the set names), `triplets` (MedKLIP's), `sections` (the report's
indication, comparison, findings and impression; "" where it has none). The real data sets
(`rrg data mimic`, `rrg data iu`) add `images` (every kept image of the study), `view` (of `image`) and,
where known, `patient_id`. `rrg data demo`, `rrg data mimic` and `rrg data iu` write it; training,
index building and `rrg-eval` read it. Beside it, `dataset.json` (`demo.json` for the demo) says what
the set is and which labeler labelled it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from rrg.paths import write_atomically

MANIFEST = "manifest.jsonl"
DATASET_SUMMARY = "dataset.json"
DEMO_SUMMARY = "demo.json"


def labeler_of(folder: str | Path) -> str:
    """The name of the labeler that labelled a data set's studies (its `dataset.json`, or the demo's
    `demo.json`, says), or "unknown"."""
    for name in (DATASET_SUMMARY, DEMO_SUMMARY):
        about = Path(folder) / name
        if about.is_file():
            return json.loads(about.read_text()).get("labeler", "unknown")
    return "unknown"


def is_phantom(folder: str | Path) -> bool:
    """Whether a data set's images are synthetic phantoms (the demo set's `demo.json` says so)."""
    about = Path(folder) / DEMO_SUMMARY
    return about.is_file() and bool(json.loads(about.read_text()).get("demo", False))


def manifest_exists(folder: str | Path) -> bool:
    """Whether a finished data set is at `folder` (its manifest is written last)."""
    return (Path(folder) / MANIFEST).is_file()


def write_manifest(out: Path, records: Iterable[dict]) -> None:
    """Write the records as `out/manifest.jsonl`, all at once (a kill never leaves half a manifest).
    The records may come from a generator: they are written as they come, never all held at once."""
    def write(partial: Path) -> None:
        with partial.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    write_atomically(Path(out) / MANIFEST, write)


def read_manifest(out: str | Path) -> list[dict]:
    """The records of a data set folder."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no data set at {out} (no {MANIFEST}): build one first, e.g. `rrg data demo --out {out}`")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
