"""`rrg data iu` builds a data set folder from IU X-Ray in R2Gen's layout, with each study's sections from
the IU sections shipped with rrg, and says why it left out each study it could not use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from prompts.labeler import label_report
from rrg.data import dataset_build
from rrg.data.datasets import DatasetError, packaged_iu_annotation, read_iu_sections, read_r2gen_annotation
from rrg.data.iu_xray import IuBuild, build_iu_xray
from rrg.data.manifest import labeler_of, read_manifest


def _r2gen_tree(root: Path) -> Path:
    """R2Gen's iu_xray folder: six real studies of the shipped annotation (train and val), two test
    studies the shipped sections lack, one study whose images are missing and one with an empty report."""
    shipped = read_r2gen_annotation(packaged_iu_annotation())
    annotation = {
        "train": shipped["train"][:5],
        "val": shipped["val"][:2],
        "test": [
            {"id": "CXR9001_IM-9001", "report": "Small left pleural effusion.",
             "image_path": ["CXR9001_IM-9001/0.png", "CXR9001_IM-9001/1.png"]},
            {"id": "CXR9002_IM-9002", "report": "The lungs are clear.", "image_path": ["CXR9002_IM-9002/0.png"]},
            {"id": "CXR9003_IM-9003", "report": "Heart size normal.", "image_path": ["CXR9003_IM-9003/0.png"]},
            {"id": "CXR9004_IM-9004", "report": " ", "image_path": ["CXR9004_IM-9004/0.png"]},
        ],
    }
    root.mkdir(parents=True)
    (root / "annotation.json").write_text(json.dumps(annotation))
    for entries in annotation.values():
        for entry in entries:
            if entry["id"] == "CXR9003_IM-9003":
                continue
            for image in entry["image_path"]:
                (root / "images" / image).parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (32, 32), 100).save(root / "images" / image)
    return root


def _build(root, out, **options) -> dict:
    return build_iu_xray(IuBuild(root=root, out=out, **{"workers": 1, **options}), progress=False,
                         log=lambda _: None)


def test_iu_build_keeps_studies_with_images_and_reports_and_counts_the_rest(tmp_path):
    root = _r2gen_tree(tmp_path / "iu_xray")
    summary = _build(root, tmp_path / "out")
    assert summary["studies"] == {"train": 5, "val": 2, "test": 2}
    assert summary["skipped"] == {"image file missing": 1, "no findings section": 1}
    assert summary["labeler"] == labeler_of(tmp_path / "out") == "rules"
    assert summary["studies_without_sections"] == 4
    assert json.loads((tmp_path / "out" / "dataset.json").read_text()) == summary
    records = read_manifest(tmp_path / "out")
    assert len(records) == 9
    for record in records:
        assert record["image"] == str((root / "images" / record["id"] / "0.png").absolute())
        assert record["view"] == "frontal" and "patient_id" not in record
        assert all(Path(p).is_file() for p in record["images"])
        assert record["labels"] == label_report(record["report"])
    assert summary["images"] == sum(len(r["images"]) for r in records)


def test_iu_sections_come_from_the_shipped_file_and_the_report_is_the_findings(tmp_path):
    root = _r2gen_tree(tmp_path / "iu_xray")
    _build(root, tmp_path / "out")
    known = read_iu_sections()
    records = {r["id"]: r for r in read_manifest(tmp_path / "out")}
    for record in records.values():
        assert record["sections"]["findings"] == record["report"]
        if record["id"] in known:
            assert record["sections"] == known[record["id"]]
    shipped = records[read_r2gen_annotation(packaged_iu_annotation())["train"][0]["id"]]
    assert shipped["sections"]["indication"] == "Breast cancer."
    assert records["CXR9001_IM-9001"]["sections"] == {
        "indication": "", "comparison": "", "findings": "Small left pleural effusion.", "impression": ""
    }
    assert records["CXR9001_IM-9001"]["labels"]["Pleural Effusion"] == "positive"
    assert len(records["CXR9001_IM-9001"]["images"]) == 2


def test_a_wrong_iu_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"no annotation.json in .*--root must be the R2Gen iu_xray folder"):
        _build(tmp_path, tmp_path / "out")


def test_a_killed_iu_build_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
    root = _r2gen_tree(tmp_path / "iu_xray")
    _build(root, tmp_path / "clean")
    extract = dataset_build.extract_triplets
    calls = []

    def killed_at_the_fifth(report):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(report)
        return extract(report)

    monkeypatch.setattr(dataset_build, "extract_triplets", killed_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        _build(root, tmp_path / "out", chunk_size=3)
    part = tmp_path / "out" / ".building" / "part-00000.jsonl"
    written = part.stat().st_mtime_ns
    assert [p.name for p in (tmp_path / "out" / ".building").glob("part-*")] == [part.name]

    resumed = []
    monkeypatch.setattr(dataset_build, "extract_triplets", lambda report: resumed.append(report) or extract(report))
    seen_mtimes = []
    write_manifest = dataset_build.write_manifest

    def note_part_then_write(out, records):
        seen_mtimes.append(part.stat().st_mtime_ns)
        write_manifest(out, records)

    monkeypatch.setattr(dataset_build, "write_manifest", note_part_then_write)
    summary = _build(root, tmp_path / "out", chunk_size=3)
    assert seen_mtimes == [written]  # the finished chunk was not written again
    assert len(resumed) == 9 - 3 and sum(summary["studies"].values()) == 9
    assert read_manifest(tmp_path / "out") == read_manifest(tmp_path / "clean")


def test_a_pool_of_workers_builds_the_same_iu_set(tmp_path):
    root = _r2gen_tree(tmp_path / "iu_xray")
    _build(root, tmp_path / "one")
    _build(root, tmp_path / "pool", workers=2, chunk_size=2)
    assert read_manifest(tmp_path / "pool") == read_manifest(tmp_path / "one")
