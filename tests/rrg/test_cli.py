"""The `rrg` command line: label and triplet commands over JSON Lines, with clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from prompts.vocabulary import CHEXBERT_LABELS, MEDKLIP_ENTITIES, MEDKLIP_POSITIONS
from rrg.cli import main

REPORTS = [
    {"id": "s1", "report": "Small left pleural effusion. No pneumothorax."},
    {"id": "s2", "report": "The heart is normal in size. The lungs are clear."},
]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rrg_label_writes_fourteen_labels_per_report(tmp_path):
    source = _write(tmp_path / "reports.jsonl", REPORTS)
    assert main(["-q", "label", "--in", str(source), "--out", str(tmp_path / "labels.jsonl")]) == 0
    rows = _read(tmp_path / "labels.jsonl")
    assert [r["id"] for r in rows] == ["s1", "s2"]
    assert all(list(r["labels"]) == list(CHEXBERT_LABELS) for r in rows)
    assert (
        rows[0]["labels"]["Pleural Effusion"] == "positive"
        and rows[0]["labels"]["Pneumothorax"] == "negative"
    )
    assert rows[1]["labels"]["No Finding"] == "positive"


def test_rrg_triplets_writes_vocabulary_triplets(tmp_path):
    source = _write(tmp_path / "reports.jsonl", REPORTS)
    assert main(["-q", "triplets", "--in", str(source), "--out", str(tmp_path / "triplets.jsonl")]) == 0
    rows = _read(tmp_path / "triplets.jsonl")
    assert {"entity": "effusion", "position": "left_pleural", "exist": 1} in rows[0]["triplets"]
    for row in rows:
        for t in row["triplets"]:
            assert (
                t["entity"] in MEDKLIP_ENTITIES
                and t["position"] in MEDKLIP_POSITIONS
                and t["exist"] in (0, 1)
            )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "report": "x"}\n{oops\n', ":2: not valid JSON"),
        ('{"id": "a"}\n', ":1: missing field(s) report"),
        ('["a"]\n', ":1: expected a JSON object"),
    ],
)
def test_bad_input_lines_are_named_with_their_line_number(tmp_path, capsys, content, message):
    source = tmp_path / "reports.jsonl"
    source.write_text(content)
    assert main(["-q", "label", "--in", str(source), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert message in capsys.readouterr().err


def test_missing_input_file_is_a_clear_error(tmp_path, capsys):
    assert (
        main(["-q", "label", "--in", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    )
    assert "nope.jsonl" in capsys.readouterr().err


def test_console_script_streams_stdin_to_stdout():
    rrg = shutil.which("rrg")
    assert rrg, "the rrg console script is installed with the package"
    result = subprocess.run(
        [rrg, "label", "--in", "-", "--out", "-"],
        input=json.dumps(REPORTS[0]) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout)["labels"]["Pleural Effusion"] == "positive"
