"""Report labeler and triplet extractor throughput on one core, against the 1,000 reports/s target.

Runs each side by side in one process pinned to one core (machines here are shared and noisy),
and the `rrg label` command end to end (JSON Lines in and out) for the same corpus.

    uv run python bench/labeler.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prompts.labeler import label_report
from prompts.triplets import extract_triplets
from rrg.data.datasets import packaged_iu_annotation, read_r2gen_annotation

TARGET = 1000.0


def _rate(function, reports, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for report in reports:
            function(report)
        best = min(best, time.perf_counter() - started)
    return len(reports) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    annotation = read_r2gen_annotation(packaged_iu_annotation())
    entries = [e for split in annotation.values() for e in split]
    reports = [e["report"] for e in entries]

    rows = [
        ("label_report (in process)", _rate(label_report, reports, args.repeat)),
        ("extract_triplets (in process)", _rate(extract_triplets, reports, args.repeat)),
    ]
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "reports.jsonl"
        source.write_text("".join(json.dumps({"id": e["id"], "report": e["report"]}) + "\n" for e in entries))
        command = [
            sys.executable,
            "-m",
            "rrg.cli",
            "-q",
            "label",
            "--in",
            str(source),
            "--out",
            str(Path(folder) / "o"),
        ]
        started = time.perf_counter()
        subprocess.run(["taskset", "-c", "0", *command] if _has_taskset() else command, check=True)
        rows.append(("rrg label CLI (process start + I/O)", len(entries) / (time.perf_counter() - started)))

    print(f"IU X-Ray corpus: {len(reports)} reports, one core, best of {args.repeat}")
    print(f"| what | reports/s | x target ({TARGET:.0f}/s) |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / TARGET:.2f} |")


def _has_taskset() -> bool:
    return shutil.which("taskset") is not None


if __name__ == "__main__":
    main()
