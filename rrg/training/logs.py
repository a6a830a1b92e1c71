"""What a person reads while `rrg train` runs, written by rank 0 under the bundle's `logs/`:

    logs/metrics.jsonl          one JSON object per optimizer step and per validation pass
    logs/tensorboard/<stage>/   TensorBoard event files (`tensorboard --logdir BUNDLE/logs/tensorboard`)

Each row names its stage and step: the loss and each of its terms, the learning rate, samples/s and
tokens/s, and on CUDA the peak memory. A resumed stage first drops the rows a killed run wrote past the
checkpoint it resumes from, and TensorBoard purges the same steps, so no step is logged twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from rrg.paths import write_atomically

FOLDER = "logs"


class TrainingLogs:
    """metrics.jsonl and TensorBoard event files of one training run (rank 0 writes; the others do nothing)."""

    def __init__(self, bundle: Path, enabled: bool = True):
        self.folder = Path(bundle) / FOLDER
        self.enabled = enabled
        self.metrics = self.folder / "metrics.jsonl"
        self._writers: dict[str, object] = {}
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)

    def start(self, stage: str, step: int) -> None:
        """A stage starts (or resumes) after `step` steps: forget what an earlier run logged past it."""
        if not self.enabled:
            return
        if self.metrics.is_file():
            kept = [line for line in self.metrics.read_text().splitlines()
                    if line.strip() and not _past(json.loads(line), stage, step)]
            write_atomically(self.metrics, lambda p: p.write_text("".join(f"{line}\n" for line in kept)))
        self._writer(stage, purge_step=step + 1)

    def write(self, stage: str, step: int, values: dict[str, float], kind: str = "train") -> None:
        """One row after `step` steps of a stage: the values of a training step (kind "train") or of a
        validation pass ("val")."""
        if not self.enabled:
            return
        row = {"stage": stage, "step": step, "kind": kind, **values}
        with self.metrics.open("a") as file:
            file.write(json.dumps(row) + "\n")
        writer = self._writer(stage)
        for name, value in values.items():
            if isinstance(value, (int, float)):
                writer.add_scalar(f"{kind}/{name}", value, step)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, stage: str, purge_step: int | None = None):
        if stage not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[stage] = SummaryWriter(str(self.folder / "tensorboard" / stage), purge_step=purge_step or None)
        return self._writers[stage]


def _past(row: dict, stage: str, step: int) -> bool:
    return row.get("stage") == stage and row.get("step", -1) > step
