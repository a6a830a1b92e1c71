"""Training across ranks, side by side in one run, on the demo data with the small `test-micro` model:

  ranks        samples/s of each stage's optimizer steps with 1 rank (`rrg train`) and with 2 gloo ranks
               (`torchrun --nproc_per_node 2 -m rrg train`), from each run's logs/metrics.jsonl. On a
               2-core machine the two ranks share the cores, so the ratio shows DistributedDataParallel's
               overhead (gradient all-reduce, the batch split in two), not a speed-up.
  setup cache  a demo-tiny run (its 128-px ViT, one epoch per stage) killed mid-drafting, resumed twice
               from copies of the same folder: with the drafting stage's setup cache (.train/drafting-setup: the frozen tower's patch tokens, logits and
               references) and without it (deleted, so the resumed run encodes every study again); the
               seconds from the start of `rrg train` until its first resumed drafting step.

    uv run python bench/training_scale.py [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rrg.demo.bundle import ensure_demo_data

TRAIN = [sys.executable, "-m", "rrg", "-q", "train", "--config", "test-micro"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rrg", "-q",
            "train", "--config", "test-micro"]


def _settings(epochs: int) -> list[str]:
    return ["--set", f"training.vision_epochs={epochs}", "--set", f"training.lm_epochs={epochs}",
            "--set", f"training.draft_epochs={epochs}", "--set", f"training.retriever_epochs={epochs}",
            "--set", "training.checkpoint_every=20"]


def _demo(command: list[str]) -> list[str]:
    """The command with the demo's own config instead of test-micro's."""
    return [part if part != "test-micro" else "demo-tiny" for part in command]


def _samples_per_s(bundle: Path) -> dict[str, float]:
    """Each stage's samples/s: its studies over the summed seconds of its steps (rank 0's log)."""
    rows = [json.loads(line) for line in (bundle / "logs" / "metrics.jsonl").read_text().splitlines()]
    stages: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "train" and row["stage"] in ("vision", "language", "drafting"):
            stages.setdefault(row["stage"], []).append(row["samples_per_s"])
    # Every step of a stage trains the same global batch, so the harmonic mean is samples over seconds.
    return {stage: float(len(rates) / np.sum(1.0 / np.array(rates))) for stage, rates in stages.items()}


def _kill_tree(marker: str) -> None:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def _seconds_to_resume(command: list[str]) -> float:
    """Seconds from the start of a resumed run until it logs its first resumed drafting step."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    seconds = None
    for line in process.stderr:
        if "drafting: resuming at step" in line and seconds is None:
            seconds = time.perf_counter() - started
    process.wait()
    if process.returncode != 0 or seconds is None:
        raise SystemExit(f"the resumed run failed (exit {process.returncode})")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each trained stage")
    args = parser.parse_args()
    data = ensure_demo_data(log=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rates = {}
        for ranks, command in ((1, TRAIN), (2, TORCHRUN)):
            out = folder / f"ranks{ranks}"
            subprocess.run([*command, "--data", str(data), "--out", str(out), *_settings(args.epochs)], check=True)
            rates[ranks] = _samples_per_s(out)

        killed = folder / "killed"
        process = subprocess.Popen([*_demo(TRAIN), "--data", str(data), "--out", str(killed), *_settings(args.epochs)])
        while not (killed / ".train" / "drafting.pt").is_file():
            if process.poll() is not None:
                raise SystemExit("training ended before a drafting checkpoint")
            time.sleep(0.05)
        _kill_tree(str(killed))
        process.wait()
        copies = {}
        for name in ("with", "without"):
            copies[name] = folder / f"resume-{name}"
            shutil.copytree(killed, copies[name])
        shutil.rmtree(copies["without"] / ".train" / "drafting-setup")
        verbose = [c for c in _demo(TRAIN) if c != "-q"]  # the resumed run's log says when it resumes
        resume = {name: _seconds_to_resume([*verbose, "--data", str(data), "--out", str(path), *_settings(args.epochs)])
                  for name, path in copies.items()}

    print(f"`test-micro` on the demo data ({args.epochs} epoch(s) per stage), {os.cpu_count()} cores, gloo")
    print("| stage | 1 rank samples/s | 2 ranks samples/s | 2 ranks / 1 rank |")
    print("|---|---:|---:|---:|")
    for stage in rates[1]:
        one, two = rates[1][stage], rates[2][stage]
        print(f"| {stage} | {one:.1f} | {two:.1f} | {two / one:.2f} |")
    print("On this machine both ranks share the same cores: the ratio is DDP's overhead, not a speed-up.")
    print()
    print(f"demo-tiny killed mid-drafting ({args.epochs} epoch(s) per stage), resumed from copies of the same folder")
    print("| drafting resumed | seconds to the first resumed step |")
    print("|---|---:|")
    print(f"| with the setup cache | {resume['with']:.1f} |")
    print(f"| without it (every study encoded again) | {resume['without']:.1f} |")
    print(f"| ratio without / with | {resume['without'] / resume['with']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
