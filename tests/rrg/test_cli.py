"""The `rrg` command line: label and triplet commands over JSON Lines, the data set builders, with clear
errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from prompts.vocabulary import CHEXBERT_LABELS, MEDKLIP_ENTITIES, MEDKLIP_POSITIONS
from rrg.cli import main
from rrg.data.datasets import packaged_iu_annotation, read_r2gen_annotation
from rrg.data.manifest import labeler_of, read_manifest
from tests.rrg.data.fake_mimic import write_fake_mimic

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


def test_rrg_data_mimic_writes_a_readable_manifest_and_keeps_a_finished_set(tmp_path, capsys):
    jpg_root, reports_root = write_fake_mimic(tmp_path / "mimic", {"train": 6, "validate": 2, "test": 2})
    out = tmp_path / "set"
    args = ["data", "mimic", "--root", str(jpg_root), "--reports", str(reports_root), "--out", str(out),
            "--workers", "1"]
    assert main(args) == 0
    messages = capsys.readouterr().err
    assert "MIMIC-CXR: kept 10 studies (train 6, val 2, test 2), 10 images; labels by mimic-chexpert" in messages
    assert len(read_manifest(out)) == 10 and labeler_of(out) == "mimic-chexpert"
    written = (out / "manifest.jsonl").stat().st_mtime_ns
    assert main(args) == 0
    assert "already built" in capsys.readouterr().err
    assert (out / "manifest.jsonl").stat().st_mtime_ns == written
    assert main(["-q", *args, "--force", "--section", "impression", "--views", "AP,PA"]) == 0
    assert all(r["report"] == r["sections"]["impression"] for r in read_manifest(out))
    assert json.loads((out / "dataset.json").read_text())["views"] == ["AP", "PA"]


def test_rrg_data_mimic_names_a_wrong_root_in_one_line_and_exits_2(tmp_path, capsys):
    assert main(["-q", "data", "mimic", "--root", str(tmp_path), "--out", str(tmp_path / "set")]) == 2
    error = capsys.readouterr().err
    assert error == (f"rrg data: error: no mimic-cxr-2.0.0-split.csv(.gz) in {tmp_path}: --root must be the "
                     "MIMIC-CXR-JPG folder (it holds files/ and the CSVs)\n")
    with pytest.raises(SystemExit):  # argparse refuses a section it does not know
        main(["data", "mimic", "--root", str(tmp_path), "--out", str(tmp_path / "set"), "--section", "history"])


def test_rrg_data_iu_console_script_builds_a_set_and_names_a_wrong_root(tmp_path):
    rrg = str(Path(sys.executable).with_name("rrg"))
    root = tmp_path / "iu_xray"
    entries = read_r2gen_annotation(packaged_iu_annotation())["train"][:3]
    (root / "images").mkdir(parents=True)
    (root / "annotation.json").write_text(json.dumps({"train": entries[:2], "test": entries[2:]}))
    for entry in entries:
        for image in entry["image_path"]:
            (root / "images" / image).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (16, 16), 90).save(root / "images" / image)
    built = subprocess.run([rrg, "data", "iu", "--root", str(root), "--out", str(tmp_path / "set")],
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    assert "IU X-Ray: kept 3 studies (train 2, test 1)" in built.stderr
    records = read_manifest(tmp_path / "set")
    assert [r["split"] for r in records] == ["train", "train", "test"]
    assert all(r["sections"]["findings"] == r["report"] for r in records)
    wrong = subprocess.run([rrg, "data", "iu", "--root", str(tmp_path), "--out", str(tmp_path / "other")],
                           capture_output=True, text=True, timeout=120, check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"rrg data: error: no annotation.json in {tmp_path}: --root must be the R2Gen iu_xray folder (it holds "
        "annotation.json and images/)"
    )
