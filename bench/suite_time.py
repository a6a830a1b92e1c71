"""`make test` time: the whole suite in a fresh clone of this repository's HEAD, as CI runs it.

CI (.ci/run) runs `make test` on a clean clone with a 90-minute limit; this prints the time and its
share of that limit.

    uv run python bench/suite_time.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CI_LIMIT_SECONDS = 90 * 60


def main() -> int:
    repository = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as folder:
        clone = Path(folder) / "rrg"
        subprocess.run(["git", "clone", "-q", str(repository), str(clone)], check=True)
        started = time.perf_counter()
        run = subprocess.run(["make", "test"], cwd=clone, env={**os.environ, "CI": "true"},
                             capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    counts = re.findall(r"=+ (.*(?:passed|failed).*) in [\d.]+s", run.stdout)
    print("`make test` in a fresh clone of HEAD (install included)")
    print("| what | value |")
    print("|---|---:|")
    print(f"| wall time | {seconds:.0f} s ({seconds / 60:.1f} min) |")
    print(f"| share of CI's 90-minute limit | {seconds / CI_LIMIT_SECONDS:.2f} |")
    print(f"| pytest says | {counts[-1] if counts else 'no summary line'} |")
    print(f"| exit status | {run.returncode} |")
    failed = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    for line in failed:
        print(f"\n{line}")
    if run.returncode:
        print("\n```\n" + run.stdout[-6000:] + "\n```")  # the tail, to see why
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
