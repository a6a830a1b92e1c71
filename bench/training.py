"""Demo bundle training time: `rrg train` of demo-tiny from scratch on the demo data, stage by stage.

Trains into a temporary folder (the cached demo bundle is not touched) and prints each stage's
seconds and its share of the whole, read from the new bundle's config.json.

    uv run python bench/training.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rrg.demo.bundle import ensure_demo_data


def main() -> int:
    data = ensure_demo_data(log=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "bundle"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rrg.cli", "-q", "train", "--data", str(data), "--out", str(bundle),
                        "--config", "demo-tiny"], check=True)
        wall = time.perf_counter() - started
        summary = json.loads((bundle / "config.json").read_text())["training_summary"]
    stages = {name: float(stage.get("seconds", 0.0)) for name, stage in summary.items()}
    total = sum(stages.values())
    print("Demo bundle (demo-tiny) trained from scratch on the demo data")
    print("| stage | seconds | share |")
    print("|---|---:|---:|")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.1f} | {seconds / total:.2f} |")
    print(f"| all stages | {total:.1f} | 1.00 |")
    print(f"`rrg train` wall time, process start and bundle writing included: {wall:.1f} s "
          f"({wall / 60:.1f} min; stages are {total / wall:.2f} of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
