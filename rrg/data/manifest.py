"""A data set's manifest: `manifest.jsonl`, one study per line, written last (a finished set has one).

Each record: `id`, `split`, `report`, `image` (relative to the set's folder), `labels` (CheXbert's 14,
by the labeler the set names), `triplets` (MedKLIP's). `rrg data demo` writes it; training, index
building and `rrg-eval` read it.
"""

from __future__ import annotations

import json
from pathlib import Path

from rrg.paths import write_atomically

MANIFEST = "manifest.jsonl"


def labeler_of(folder: str | Path) -> str:
    """The name of the labeler that labelled a data set's studies (its `demo.json` says), or "unknown"."""
    about = Path(folder) / "demo.json"
    if about.is_file():
        return json.loads(about.read_text()).get("labeler", "unknown")
    return "unknown"


def write_manifest(out: Path, records: list[dict]) -> None:
    """Write the records as `out/manifest.jsonl`, all at once (a kill never leaves half a manifest)."""
    def write(partial: Path) -> None:
        with partial.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    write_atomically(out / MANIFEST, write)


def read_manifest(out: str | Path) -> list[dict]:
    """The records of a data set folder."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no data set at {out} (no {MANIFEST}): build one first, e.g. `rrg data demo --out {out}`")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
