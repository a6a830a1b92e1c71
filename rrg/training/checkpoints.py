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


def config_fingerprint(config: dict[str, Any], data: str) -> str:
    """What a resumed run must share with the run it continues."""
    return hashlib.sha256(json.dumps({"config": config, "data": data}, sort_keys=True).encode()).hexdigest()[:16]


class Checkpoints:
    """The training state of one bundle folder."""

    def __init__(self, bundle: Path, fingerprint: str):
        self.folder = bundle / FOLDER
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
        write_atomically(self.state_path, lambda p: p.write_text(json.dumps(self.state, indent=2) + "\n"))

    def done(self, stage: str) -> dict | None:
        """The summary of a finished stage, or None."""
        return self.state["done"].get(stage)

    def finish(self, stage: str, summary: dict) -> None:
        self.state["done"][stage] = summary
        self._save_state()
        (self.folder / f"{stage}.pt").unlink(missing_ok=True)

    def save_step(self, stage: str, step: int, modules: dict[str, torch.nn.Module], optimizer, extra: dict) -> None:
        payload = {
            "step": step,
            "modules": {name: module.state_dict() for name, module in modules.items()},
            "optimizer": optimizer.state_dict(),
            "extra": extra,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }
        write_atomically(self.folder / f"{stage}.pt", lambda p: torch.save(payload, p))

    def load_step(self, stage: str, modules: dict[str, torch.nn.Module], optimizer) -> tuple[int, dict]:
        """Restore a stage's last checkpoint into `modules` and `optimizer`; (0, {}) if there is none."""
        path = self.folder / f"{stage}.pt"
        if not path.is_file():
            return 0, {}
        payload = torch.load(path, weights_only=False)
        for name, module in modules.items():
            module.load_state_dict(payload["modules"][name])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"]["torch"])
        np.random.set_state(payload["rng"]["numpy"])
        random.setstate(payload["rng"]["python"])
        return payload["step"], payload["extra"]

    def remove(self) -> None:
        """Training is over: the bundle needs none of this."""
        shutil.rmtree(self.folder, ignore_errors=True)


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch, the same on every run (so a resumed run skips what was done)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def batch_at(step: int, count: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the batch a global step trains on (the last short batch of an epoch is dropped)."""
    per_epoch = max(1, count // batch_size)
    epoch, position = divmod(step, per_epoch)
    return epoch_order(count, seed, epoch)[position * batch_size : (position + 1) * batch_size]


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimizer steps in one epoch."""
    return max(1, count // batch_size)
