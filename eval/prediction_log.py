"""The resumable predictions.jsonl of an `rrg-eval --out` folder.

Predictions are appended as each batch finishes, one write per batch, flushed and fsynced, so a
`kill -9` loses at most the batch in flight. A rerun with the same --out reads back every whole
line, cuts off a torn last line (a kill in the middle of a write), and generates only the missing
studies. run.json beside it records what made the predictions, so a rerun cannot silently mix drafts
of two bundles (or of a bundle and a baseline) in one file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from eval.scoring import PREDICTIONS

RUN = "run.json"
# What must match for a rerun to continue a run; the rest of the source (e.g. paths) may move.
RUN_IDENTITY = ("kind", "split", "bundle", "model", "max_tokens", "url")


class PredictionLog:
    """predictions.jsonl under `out`, opened for a run made by `source`; `finished` holds its records."""

    def __init__(self, out: Path, source: dict) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / PREDICTIONS
        run = out / RUN
        identity = {key: source.get(key) for key in RUN_IDENTITY}
        if run.is_file():
            previous = json.loads(run.read_text())
            if {key: previous.get(key) for key in RUN_IDENTITY} != identity:
                raise ValueError(
                    f"{out} holds predictions of another run ({json.dumps(previous)}); "
                    "use another --out, or delete that folder to start again"
                )
        elif self.path.exists():
            raise ValueError(f"{self.path} exists but {run} does not: not a folder rrg-eval made; use another --out")
        else:
            run.write_text(json.dumps(source, indent=2) + "\n")
        self.finished: dict[str, dict] = self._recover()

    def _recover(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]  # a line without its newline was torn by a kill
        if len(whole) != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(len(whole))
        records = {}
        for number, line in enumerate(whole.decode("utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number}: not valid JSON ({error.msg}); the file was edited?") from None
            records[record["id"]] = record
        return records

    def append(self, records: Iterable[dict]) -> None:
        """Add finished predictions: whole lines, durable before this returns."""
        records = list(records)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for record in records:
            self.finished[record["id"]] = record
