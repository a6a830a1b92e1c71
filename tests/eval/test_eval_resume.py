"""Kill and resume: `kill -9` during drafting loses no finished line; the rerun drafts only the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval.cli import main
from rrg.data.manifest import read_manifest

pytestmark = pytest.mark.slow


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _long_test_split(micro_data: Path, folder: Path, copies: int = 12) -> Path:
    """The micro data set with its test studies repeated under new ids (same images), so that a
    run lasts long enough for a kill to land in the middle of it on a fast machine."""
    records = read_manifest(micro_data)
    tests = [r for r in records if r["split"] == "test"]
    extra = [{**r, "id": f"{r['id']}-copy{n}"} for n in range(copies) for r in tests]
    folder.mkdir()
    for record in records:
        (folder / record["image"]).parent.mkdir(parents=True, exist_ok=True)
        (folder / record["image"]).write_bytes((micro_data / record["image"]).read_bytes())
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*records, *extra]))
    return folder


def test_kill_minus_nine_mid_run_then_rerun_completes_without_duplicates(micro_data, micro_bundle, tmp_path, capsys):
    data = _long_test_split(micro_data, tmp_path / "data")
    out = tmp_path / "out"
    predictions = out / "predictions.jsonl"
    argv = ["--bundle", str(micro_bundle), "--data", str(data), "--out", str(out),
            "--batch-size", "1", "--max-tokens", "24", "--quiet"]
    test_ids = [r["id"] for r in read_manifest(data) if r["split"] == "test"]
    process = subprocess.Popen([sys.executable, "-m", "eval.cli", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(_lines(predictions)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    before = _lines(predictions)
    assert 2 <= len(before) < len(test_ids), "the kill should land mid-run"
    finished = [json.loads(line) for line in before if line.endswith("}")]  # a torn last line may remain

    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"resuming: {len(finished)} of {len(test_ids)} predictions already" in err
    records = [json.loads(line) for line in _lines(predictions)]
    assert [r["id"] for r in records] == test_ids  # each once, in the split's order
    by_id = {r["id"]: r for r in records}
    for record in finished:  # what was finished before the kill is kept as it was
        assert by_id[record["id"]]["prediction"] == record["prediction"]
        assert by_id[record["id"]]["neighbors"] == record["neighbors"]
    assert json.loads((out / "metrics.json").read_text())["reports"] == len(test_ids)

    # A third run has nothing left to draft and scores the same.
    assert main(argv) == 0
    assert f"resuming: {len(test_ids)} of {len(test_ids)}" in capsys.readouterr().err
