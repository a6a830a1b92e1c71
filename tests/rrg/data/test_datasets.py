"""Data set loaders read the layouts users have on disk and fail with messages that say what is wrong."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from PIL import Image

from rrg.data.datasets import (
    DatasetError,
    iu_xray_studies,
    mimic_cxr_studies,
    packaged_iu_annotation,
    read_r2gen_annotation,
    report_sections,
)
from rrg.demo.data import demo_splits


def _write_png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 128).save(path)


def test_packaged_iu_annotation_is_the_r2gen_split():
    annotation = read_r2gen_annotation(packaged_iu_annotation())
    assert len(annotation["train"]) == 2069 and len(annotation["val"]) == 296
    assert packaged_iu_annotation().with_name("README.md").read_text().count("CC BY-NC-ND 4.0") >= 1


def test_demo_splits_hold_out_200_train_studies_as_val_and_use_iu_val_as_test():
    annotation = read_r2gen_annotation(packaged_iu_annotation())
    pairs = demo_splits(annotation, packaged=True, val_holdout=200)
    counts = {split: sum(s == split for s, _ in pairs) for split in ("train", "val", "test")}
    assert counts == {"train": 1869, "val": 200, "test": 296}
    ids = [entry["id"] for _, entry in pairs]
    assert len(ids) == len(set(ids))
    # The held-out set does not depend on the file's order.
    reversed_annotation = {k: list(reversed(v)) for k, v in annotation.items()}
    held_out = {e["id"] for s, e in pairs if s == "val"}
    assert held_out == {e["id"] for s, e in demo_splits(reversed_annotation, True, 200) if s == "val"}


def test_user_annotation_keeps_its_own_splits():
    annotation = {
        "train": [{"id": "a", "report": "x"}],
        "val": [{"id": "b", "report": "y"}],
        "test": [{"id": "c", "report": "z"}],
    }
    assert [(s, e["id"]) for s, e in demo_splits(annotation, packaged=False, val_holdout=200)] == [
        ("train", "a"),
        ("val", "b"),
        ("test", "c"),
    ]


def test_iu_xray_loader_reads_r2gen_folder(tmp_path):
    annotation = {
        "train": [
            {
                "id": "CXR1_IM-1",
                "report": "Normal chest.",
                "image_path": ["CXR1_IM-1/0.png", "CXR1_IM-1/1.png"],
            }
        ],
        "val": [{"id": "CXR2_IM-2", "report": "Small left effusion.", "image_path": ["CXR2_IM-2/0.png"]}],
    }
    (tmp_path / "annotation.json").write_text(json.dumps(annotation))
    for entries in annotation.values():
        for entry in entries:
            for image in entry["image_path"]:
                _write_png(tmp_path / "images" / image)
    studies = iu_xray_studies(tmp_path)
    assert [(s.id, s.split, len(s.image_paths)) for s in studies] == [
        ("CXR1_IM-1", "train", 2),
        ("CXR2_IM-2", "val", 1),
    ]
    assert all(p.is_file() for s in studies for p in s.image_paths)


def test_iu_xray_loader_names_missing_images(tmp_path):
    annotation = {"train": [{"id": "CXR1", "report": "Normal.", "image_path": ["CXR1/0.png"]}]}
    (tmp_path / "annotation.json").write_text(json.dumps(annotation))
    with pytest.raises(DatasetError, match="CXR1/0.png"):
        iu_xray_studies(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "object of splits"),
        ('{"train": [{"id": 1}]}', "'id' and 'report'"),
        ('{"holdout": []}', "unknown split"),
    ],
)
def test_bad_annotation_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "annotation.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_r2gen_annotation(path)


def _write_csv_gz(path, rows):
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough

 FINDINGS:
 
 Small left pleural effusion.  No pneumothorax.
 
 IMPRESSION:
 
 Small left effusion.
"""


def test_mimic_cxr_jpg_loader_joins_split_metadata_and_reports(tmp_path):
    _write_csv_gz(
        tmp_path / "mimic-cxr-2.0.0-split.csv.gz",
        [
            {"dicom_id": "d1", "study_id": "50000001", "subject_id": "10000032", "split": "train"},
            {"dicom_id": "d2", "study_id": "50000001", "subject_id": "10000032", "split": "train"},
            {"dicom_id": "d3", "study_id": "50000002", "subject_id": "10000033", "split": "validate"},
        ],
    )
    _write_csv_gz(
        tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz",
        [
            {"dicom_id": "d1", "ViewPosition": "PA"},
            {"dicom_id": "d2", "ViewPosition": "LATERAL"},
            {"dicom_id": "d3", "ViewPosition": "AP"},
        ],
    )
    for subject, study in [("10000032", "50000001"), ("10000033", "50000002")]:
        folder = tmp_path / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True)
        (folder / f"s{study}.txt").write_text(MIMIC_REPORT)
    studies = {s.id: s for s in mimic_cxr_studies(tmp_path)}
    assert set(studies) == {"s50000001", "s50000002"}
    first = studies["s50000001"]
    assert first.split == "train" and first.patient_id == "p10000032"
    assert [p.name for p in first.image_paths] == ["d1.jpg"]  # the lateral view is left out
    assert first.report == "Small left pleural effusion. No pneumothorax."
    assert studies["s50000002"].split == "val"
    assert mimic_cxr_studies(tmp_path, section="impression")[0].report == "Small left effusion."


def test_mimic_loader_names_the_missing_csv(tmp_path):
    with pytest.raises(DatasetError, match="mimic-cxr-2.0.0-metadata.csv"):
        mimic_cxr_studies(tmp_path)


def test_report_sections_cuts_at_upper_case_headings():
    sections = report_sections(MIMIC_REPORT)
    assert sections["FINDINGS"].startswith("Small left pleural effusion")
    assert sections["IMPRESSION"] == "Small left effusion."
