"""Checkpoints that let `rrg train` resume after a kill.

Training runs in stages; the bundle's `.train/` folder records which stages are done
(`state.json`) and, for the stage under way, the step it reached with the weights, optimizer and
random state (`<stage>.pt`, saved every few steps). Every write goes to a temporary file first
and is renamed into place, so a kill at any moment leaves the last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrg.paths import write_atomically

FOLDER = ".train"


# Where and how fast a run goes, not what it learns: a run may resume on another machine, another device
# or another number of ranks (the batch sizes are global; `training.accumulate` shapes micro-batches only).
RUNTIME_FIELDS = ("device", "threads", "loader_workers", "eval_every", "eval_studies", "accumulate")


def config_fingerprint(config: dict[str, Any], data: str) -> str:
    """What a resumed run must share with the run it continues."""
    training = {k: v for k, v in config.get("training", {}).items() if k not in RUNTIME_FIELDS}
    config = {**config, "training": training}
    return hashlib.sha256(json.dumps({"config": config, "data": data}, sort_keys=True).encode()).hexdigest()[:16]


class Checkpoints:
    """The training state of one bundle folder."""

    def __init__(self, bundle: Path, fingerprint: str, writes: bool = True):
        """`writes`: this process keeps the files (rank 0 of a distributed run; the others only read)."""
        self.folder = bundle / FOLDER
        self.writes = writes
        if writes:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.state_path = self.folder / "state.json"
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else None
        if state is not None and state["fingerprint"] != fingerprint:
            raise ValueError(
                f"{bundle} holds an unfinished training run with another config or data set; "
                "use another --out, or --force to start again"
            )
        self.state = state or {"fingerprint": fingerprint, "done": {}}
        self._save_state()

    @property
    def resuming(self) -> bool:
        return bool(self.state["done"]) or any(self.folder.glob("*.pt"))

    def _save_state(self) -> None:
        if not self.writes:
            return
        write_atomically(self.state_path, lambda p: p.write_text(json.dumps(self.state, indent=2) + "\n"))

    def done(self, stage: str) -> dict | None:
        """The summary of a finished stage, or None."""
        return self.state["done"].get(stage)

    def finish(self, stage: str, summary: dict) -> None:
        self.state["done"][stage] = summary
        self._save_state()
        if self.writes:
            (self.folder / f"{stage}.pt").unlink(missing_ok=True)

    def save_step(self, stage: str, step: int, modules: dict[str, torch.nn.Module], optimizer, extra: dict) -> None:
        if not self.writes:
            return
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        payload = {
            "step": step,
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "optimizer": optimizer.state_dict(),
            "extra": extra,
            "rng": rng,
        }
        write_atomically(self.folder / f"{stage}.pt", lambda p: torch.save(payload, p))

    def load_step(self, stage: str, modules: dict[str, torch.nn.Module], optimizer) -> tuple[int, dict]:
        """Restore a stage's last checkpoint into `modules` and `optimizer`; (0, {}) if there is none."""
        path = self.folder / f"{stage}.pt"
        if not path.is_file():
            return 0, {}
        payload = torch.load(path, weights_only=False, map_location="cpu")  # the optimizer moves its state
        for name, module in modules.items():
            module.load_state_dict(payload["modules"][name])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"]["torch"])
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            states = payload["rng"]["cuda"]
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
        np.random.set_state(payload["rng"]["numpy"])
        random.setstate(payload["rng"]["python"])
        return payload["step"], payload["extra"]

    def remove(self) -> None:
        """Training is over: the bundle needs none of this."""
        if self.writes:
            shutil.rmtree(self.folder, ignore_errors=True)


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch, the same on every run (so a resumed run skips what was done)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def batch_at(step: int, count: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the batch a global step trains on (the last short batch of an epoch is dropped)."""
    per_epoch = max(1, count // batch_size)
    epoch, position = divmod(step, per_epoch)
    return epoch_order(count, seed, epoch)[position * batch_size : (position + 1) * batch_size]


GROUP_WINDOW = 50  # batches of an epoch's shuffled order sorted by length together


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """The batches of one epoch, in the order they train; the same on every run and any number of ranks.

    Without `lengths`, the epoch's shuffled order cut into batches (`batch_at`). With them (token counts
    of each study's sequence), grouped by length as fairseq and Hugging Face's Trainer group: each window of
    GROUP_WINDOW batches of the shuffled order is sorted by length and cut into batches, and the batches
    are shuffled; a batch then pads to a length near its own, not to the longest report of the set.
    """
    per_epoch = steps_per_epoch(count, batch_size)
    order = epoch_order(count, seed, epoch)
    if lengths is None:
        return [order[i * batch_size : (i + 1) * batch_size] for i in range(per_epoch)]
    order = order[: per_epoch * batch_size]
    batches = []
    for start in range(0, len(order), GROUP_WINDOW * batch_size):
        window = order[start : start + GROUP_WINDOW * batch_size]
        window = window[np.argsort(np.asarray(lengths)[window], kind="stable")]
        batches += [window[i : i + batch_size] for i in range(0, len(window), batch_size)]
    return [batches[i] for i in np.random.default_rng([seed, epoch, 1]).permutation(len(batches))]


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimizer steps in one epoch."""
    return max(1, count // batch_size)
