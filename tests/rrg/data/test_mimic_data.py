"""`rrg data mimic` builds a data set folder from MIMIC-CXR-JPG and the MIMIC-CXR reports: it keeps the
studies it can use, says why it left out each of the others, names its labeler, and resumes a killed
build without labelling again what it had finished."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prompts.labeler import label_report
from prompts.vocabulary import CHEXBERT_LABELS
from rrg.data import dataset_build
from rrg.data.datasets import DatasetError
from rrg.data.manifest import labeler_of, read_manifest
from rrg.data.mimic_cxr import MimicBuild, build_mimic_cxr, parse_views
from tests.rrg.data.fake_mimic import (
    FINDINGS,
    FakeStudy,
    fake_studies,
    report_text,
    write_fake_mimic,
    write_mimic_tree,
)

ONLY_IMPRESSION = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  ___ with shortness of breath
 
 IMPRESSION:
 
 No acute cardiopulmonary process.
"""


def _studies() -> list[FakeStudy]:
    """Ten usable studies in three splits, and one of each kind a build must leave out."""
    usable = [
        FakeStudy("10000001", "50000001", "train", "left effusion"),
        FakeStudy("11000002", "50000002", "train", "normal"),
        FakeStudy("12000003", "50000003", "train", "cardiomegaly", views=("LATERAL", "AP")),
        FakeStudy("13000004", "50000004", "train", "pneumothorax", views=("AP", "LATERAL", "PA")),
        FakeStudy("14000005", "50000005", "train", "right effusion", in_label_file=False),
        FakeStudy("15000006", "50000006", "train", "normal"),
        FakeStudy("16000007", "50000007", "validate", "left effusion"),
        FakeStudy("17000008", "50000008", "validate", "normal"),
        FakeStudy("18000009", "50000009", "test", "cardiomegaly"),
        FakeStudy("19000010", "50000010", "test", "normal"),
    ]
    left_out = [
        FakeStudy("10000011", "50000011", "train", views=("LATERAL",)),
        FakeStudy("10000012", "50000012", "train", write_report=False),
        FakeStudy("10000013", "50000013", "train", write_images=False),
        FakeStudy("10000014", "50000014", "test", report=ONLY_IMPRESSION),
    ]
    return usable + left_out


@pytest.fixture
def mimic(tmp_path) -> tuple[Path, Path]:
    return write_mimic_tree(tmp_path / "mimic", _studies())


def _build(jpg_root, out, **options) -> dict:
    build = MimicBuild(root=jpg_root, out=out, **{"workers": 1, **options})
    return build_mimic_cxr(build, progress=False, log=lambda _: None)


def test_build_keeps_usable_studies_and_counts_each_left_out_by_reason(mimic, tmp_path):
    jpg_root, reports_root = mimic
    summary = _build(jpg_root, tmp_path / "out", reports=reports_root)
    assert summary["studies"] == {"train": 6, "val": 2, "test": 2}
    assert summary["skipped"] == {
        "no PA/AP image": 1, "report file missing": 1, "image file missing": 1, "no findings section": 1
    }
    assert summary["studies_listed"] == 14
    assert json.loads((tmp_path / "out" / "dataset.json").read_text()) == summary
    assert not (tmp_path / "out" / ".building").exists()
    records = {r["id"]: r for r in read_manifest(tmp_path / "out")}
    assert len(records) == 10 and {r["split"] for r in records.values()} == {"train", "val", "test"}
    first = records["s50000001"]
    assert first["patient_id"] == "p10000001" and first["view"] == "PA"
    assert first["report"] == first["sections"]["findings"]
    assert first["report"].startswith("There is a small left pleural effusion")
    assert first["sections"]["indication"].startswith("___ year old woman with cough")
    assert first["sections"]["impression"] == "Small left pleural effusion."
    for record in records.values():
        assert Path(record["image"]).is_absolute() and Path(record["image"]).is_file()
        assert record["image"] in record["images"] and all(Path(p).is_file() for p in record["images"])
        assert list(record["labels"]) == list(CHEXBERT_LABELS)
        assert record["triplets"] and all(set(t) == {"entity", "position", "exist"} for t in record["triplets"])
    assert summary["images"] == sum(len(r["images"]) for r in records.values()) == 11


def test_a_study_image_is_its_first_pa_else_its_first_ap_and_laterals_are_left_out(mimic, tmp_path):
    jpg_root, reports_root = mimic
    _build(jpg_root, tmp_path / "out", reports=reports_root)
    records = {r["id"]: r for r in read_manifest(tmp_path / "out")}
    ap_only, pa_and_ap = records["s50000003"], records["s50000004"]
    assert ap_only["view"] == "AP" and len(ap_only["images"]) == 1
    assert pa_and_ap["view"] == "PA" and len(pa_and_ap["images"]) == 2
    assert pa_and_ap["image"] == pa_and_ap["images"][1]  # the PA, listed after the AP
    # --views AP,PA prefers AP; --views LATERAL keeps the lateral-only study
    _build(jpg_root, tmp_path / "ap", reports=reports_root, views=("AP", "PA"))
    assert {r["id"]: r for r in read_manifest(tmp_path / "ap")}["s50000004"]["view"] == "AP"
    lateral = _build(jpg_root, tmp_path / "lateral", reports=reports_root, views=("LATERAL",))
    lateral_only = {r["id"]: r for r in read_manifest(tmp_path / "lateral")}["s50000011"]
    assert lateral_only["view"] == "LATERAL"
    assert lateral["views"] == ["LATERAL"] and "no LATERAL image" not in lateral["skipped"]


def test_mimic_chexpert_labels_are_the_study_labels_and_named(mimic, tmp_path):
    jpg_root, reports_root = mimic
    summary = _build(jpg_root, tmp_path / "out", reports=reports_root)
    assert summary["labeler"] == labeler_of(tmp_path / "out") == "mimic-chexpert"
    assert summary["labels_file"].endswith("mimic-cxr-2.0.0-chexpert.csv.gz")
    records = {r["id"]: r for r in read_manifest(tmp_path / "out")}
    effusion = records["s50000001"]
    # the CSV's, mapped by column name (its order differs from CheXbert's); unlisted values are blank
    coded = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}
    expected = {label: coded.get(FINDINGS["left effusion"].labels.get(label), "blank") for label in CHEXBERT_LABELS}
    assert effusion["labels"] == expected
    assert effusion["labels"]["Pleural Effusion"] == "positive" and effusion["labels"]["Cardiomegaly"] == "blank"
    # not the rules labeler's reading ("Heart size is normal": Cardiomegaly negative)
    assert label_report(effusion["report"])["Cardiomegaly"] == "negative"
    # the study the CSV lacks is labelled by the rules, and counted
    missing = records["s50000005"]
    assert missing["labels"] == label_report(missing["report"])
    assert summary["labelled_by_rules"] == 1


def test_without_a_label_file_the_rules_label_every_study(tmp_path):
    jpg_root, reports_root = write_mimic_tree(tmp_path / "mimic", _studies(), label_file=None, gzipped=False)
    summary = _build(jpg_root, tmp_path / "out", reports=reports_root)
    assert summary["labeler"] == labeler_of(tmp_path / "out") == "rules"
    assert summary["labels_file"] is None and summary["labelled_by_rules"] == 10
    for record in read_manifest(tmp_path / "out"):
        assert record["labels"] == label_report(record["report"])


def test_negbio_labels_are_named_when_there_are_no_chexpert_labels(tmp_path):
    jpg_root, reports_root = write_mimic_tree(tmp_path / "mimic", _studies(), label_file="negbio")
    assert _build(jpg_root, tmp_path / "out", reports=reports_root)["labeler"] == "mimic-negbio"


def test_section_chooses_the_report_text(mimic, tmp_path):
    jpg_root, reports_root = mimic
    impression = _build(jpg_root, tmp_path / "impression", reports=reports_root, section="impression")
    assert impression["section"] == "impression"
    assert "no impression section" not in impression["skipped"] and sum(impression["studies"].values()) == 11
    records = {r["id"]: r for r in read_manifest(tmp_path / "impression")}
    assert records["s50000014"]["report"] == "No acute cardiopulmonary process."
    assert records["s50000014"]["sections"]["findings"] == ""
    both = _build(jpg_root, tmp_path / "both", reports=reports_root, section="both")
    first = {r["id"]: r for r in read_manifest(tmp_path / "both")}["s50000001"]
    assert first["report"] == f"{first['sections']['findings']} {first['sections']['impression']}"
    with pytest.raises(DatasetError, match="--section must be findings, impression or both"):
        _build(jpg_root, tmp_path / "bad", reports=reports_root, section="history")
    assert both["section"] == "both"


def test_reports_may_be_the_unpacked_folder_its_files_or_under_root(mimic, tmp_path):
    jpg_root, reports_root = mimic
    _build(jpg_root, tmp_path / "a", reports=reports_root)
    _build(jpg_root, tmp_path / "b", reports=reports_root / "files")
    assert read_manifest(tmp_path / "a") == read_manifest(tmp_path / "b")
    # by default the reports are looked for beside the images, in ROOT/files
    shutil.copytree(reports_root / "files", jpg_root / "files", dirs_exist_ok=True)
    _build(jpg_root, tmp_path / "c")
    assert read_manifest(tmp_path / "c") == read_manifest(tmp_path / "a")


def test_a_wrong_root_or_reports_folder_is_named(mimic, tmp_path):
    jpg_root, reports_root = mimic
    message = (r"no mimic-cxr-2.0.0-split.csv\(.gz\) in .*mimic-cxr-reports: --root must be the MIMIC-CXR-JPG "
               r"folder \(it holds files/ and the CSVs\)")
    with pytest.raises(DatasetError, match=message):
        _build(reports_root, tmp_path / "out", reports=reports_root)
    with pytest.raises(DatasetError, match=r"no MIMIC-CXR reports \(pXX/pSUBJECT/sSTUDY.txt\) in .* --reports must be"):
        _build(jpg_root, tmp_path / "out", reports=jpg_root)  # files/ there holds images, not reports
    assert not (tmp_path / "out").exists()


def test_a_build_that_can_keep_no_study_says_why_and_writes_nothing(tmp_path):
    studies = [FakeStudy("10000001", "50000001", "train", views=("LATERAL",)),
               FakeStudy("10000002", "50000002", "test", write_report=False)]
    jpg_root, reports_root = write_mimic_tree(tmp_path / "mimic", studies)
    message = r"none of the 2 studies listed could be kept \(no PA/AP image: 1, report file missing: 1\)"
    with pytest.raises(DatasetError, match=message):
        _build(jpg_root, tmp_path / "out", reports=reports_root)
    assert list((tmp_path / "out").iterdir()) == []


def test_views_option_reads_view_positions():
    assert parse_views("pa, AP") == ("PA", "AP")
    with pytest.raises(DatasetError, match="--views needs at least one"):
        parse_views(" , ")


def test_a_finished_set_is_rebuilt_only_with_force(mimic, tmp_path):
    jpg_root, reports_root = mimic
    _build(jpg_root, tmp_path / "out", reports=reports_root)
    with pytest.raises(DatasetError, match="already holds a data set"):
        _build(jpg_root, tmp_path / "out", reports=reports_root)
    build = MimicBuild(root=jpg_root, out=tmp_path / "out", reports=reports_root, section="impression", workers=1)
    summary = build_mimic_cxr(build, force=True, progress=False, log=lambda _: None)
    assert summary["section"] == "impression" and len(read_manifest(tmp_path / "out")) == 11


class _Interrupt:
    """extract_triplets, counted, and (if `after` is set) a kill at the call after that many."""

    def __init__(self, extract, after=None):
        self.extract, self.after, self.calls = extract, after, 0

    def __call__(self, report):
        if self.after is not None and self.calls == self.after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.extract(report)


def test_a_killed_build_resumes_without_labelling_finished_chunks_again(mimic, tmp_path, monkeypatch):
    jpg_root, reports_root = mimic
    clean = _build(jpg_root, tmp_path / "clean", reports=reports_root, chunk_size=4)
    out = tmp_path / "out"
    killer = _Interrupt(dataset_build.extract_triplets, after=6)
    monkeypatch.setattr(dataset_build, "extract_triplets", killer)
    with pytest.raises(KeyboardInterrupt):
        _build(jpg_root, out, reports=reports_root, chunk_size=4)
    # killed in the second chunk: the first is kept, whole; no manifest
    parts = sorted((out / ".building").glob("part-*.jsonl"))
    assert [p.name for p in parts] == ["part-00000.jsonl"]
    assert not (out / "manifest.jsonl").exists() and not list((out / ".building").glob("*.partial"))
    finished = [json.loads(line) for line in parts[0].read_text().splitlines()[1:]]
    # mark the finished chunk: a resumed build that relabelled it would lose the mark
    finished[0]["labels"]["Edema"] = "uncertain"
    header = parts[0].read_text().splitlines()[0]
    parts[0].write_text("\n".join([header, *(json.dumps(r) for r in finished)]) + "\n")

    counter = _Interrupt(killer.extract)
    monkeypatch.setattr(dataset_build, "extract_triplets", counter)
    messages = []
    summary = build_mimic_cxr(MimicBuild(root=jpg_root, out=out, reports=reports_root, workers=1, chunk_size=4),
                              progress=False, log=messages.append)
    assert any(m.startswith("resuming: 1 of 4 chunks already labelled") for m in messages)
    assert counter.calls == 10 - len(finished)  # only the studies of unfinished chunks
    records = read_manifest(out)
    assert records[0]["labels"]["Edema"] == "uncertain"
    records[0]["labels"]["Edema"] = "blank"
    assert records == read_manifest(tmp_path / "clean")
    assert {k: v for k, v in summary.items() if k != "build_seconds"} == {
        k: v for k, v in clean.items() if k != "build_seconds"}
    assert not (out / ".building").exists()


def test_an_unfinished_build_of_other_options_starts_over(mimic, tmp_path, monkeypatch):
    jpg_root, reports_root = mimic
    monkeypatch.setattr(dataset_build, "extract_triplets", _Interrupt(dataset_build.extract_triplets, after=5))
    with pytest.raises(KeyboardInterrupt):
        _build(jpg_root, tmp_path / "out", reports=reports_root, chunk_size=4)
    monkeypatch.undo()
    messages = []
    build = MimicBuild(root=jpg_root, out=tmp_path / "out", reports=reports_root, section="impression",
                       workers=1, chunk_size=4)
    summary = build_mimic_cxr(build, progress=False, log=messages.append)
    assert any("starting over" in m for m in messages) and not any("resuming" in m for m in messages)
    assert sum(summary["studies"].values()) == 11
    assert all(r["report"] == r["sections"]["impression"] for r in read_manifest(tmp_path / "out"))


def test_a_pool_of_workers_builds_the_same_set(mimic, tmp_path):
    jpg_root, reports_root = mimic
    one = _build(jpg_root, tmp_path / "one", reports=reports_root)
    pooled = _build(jpg_root, tmp_path / "pool", reports=reports_root, workers=2, chunk_size=3)
    assert read_manifest(tmp_path / "pool") == read_manifest(tmp_path / "one")
    assert pooled["studies"] == one["studies"] and pooled["skipped"] == one["skipped"]


def test_the_fake_tree_of_56_studies_builds_in_seconds_with_images_that_show_the_findings(tmp_path):
    started = time.perf_counter()
    jpg_root, reports_root = write_fake_mimic(tmp_path / "mimic", {"train": 40, "validate": 8, "test": 8})
    summary = _build(jpg_root, tmp_path / "out", reports=reports_root, workers=2)
    seconds = time.perf_counter() - started
    assert summary["studies"] == {"train": 40, "val": 8, "test": 8} and summary["skipped"] == {}
    assert seconds < 10, f"the fake MIMIC tree took {seconds:.1f} s to write and build"
    records = read_manifest(tmp_path / "out")
    effusion_side = {"left effusion": [], "normal": []}
    for record, study in zip(records, fake_studies({"train": 40, "validate": 8, "test": 8})):
        assert record["report"] in " ".join(report_text(study).split())
        if study.finding in effusion_side:
            pixels = np.asarray(Image.open(record["image"]), dtype=np.float32)
            height, width = pixels.shape
            # the patient's left lung base is on the image's right
            effusion_side[study.finding].append(pixels[int(0.65 * height) : int(0.78 * height),
                                                       int(0.6 * width) : int(0.8 * width)].mean())
    assert min(effusion_side["left effusion"]) > max(effusion_side["normal"]) + 30
    positive = [r["labels"]["Pleural Effusion"] == "positive" for r in records]
    assert sum(positive) == summary["positive_labels"]["Pleural Effusion"] > 0
