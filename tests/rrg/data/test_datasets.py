"""Data set loaders read the layouts users have on disk and fail with messages that say what is wrong."""

from __future__ import annotations

import gzip
import json

import pytest
from PIL import Image

from prompts.vocabulary import CHEXBERT_LABELS
from rrg.data.datasets import (
    DatasetError,
    iu_study_sections,
    iu_xray_studies,
    mimic_cxr_studies,
    mimic_reports_root,
    packaged_iu_annotation,
    read_iu_sections,
    read_mimic_labels,
    read_r2gen_annotation,
    report_section,
    report_sections,
)
from rrg.data.manifest import labeler_of, read_manifest
from rrg.demo.data import DemoConfig, build_demo, demo_splits
from tests.rrg.data.fake_mimic import LABEL_COLUMNS, FakeStudy, write_mimic_tree


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


def _r2gen_folder(root, annotation, write_images=True):
    (root / "annotation.json").write_text(json.dumps(annotation))
    (root / "images").mkdir(parents=True, exist_ok=True)
    if write_images:
        for entries in annotation.values():
            for entry in entries:
                for image in entry["image_path"]:
                    _write_png(root / "images" / image)
    return root


def test_iu_xray_loader_reads_r2gen_folder(tmp_path):
    annotation = {
        "train": [
            {
                "id": "CXR2384_IM-0942",
                "report": "Normal chest.",
                "image_path": ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"],
            }
        ],
        "val": [{"id": "CXR2_IM-2", "report": "Small left effusion.", "image_path": ["CXR2_IM-2/0.png"]}],
    }
    studies = iu_xray_studies(_r2gen_folder(tmp_path, annotation))
    assert [(s.id, s.split, len(s.image_paths)) for s in studies] == [
        ("CXR2384_IM-0942", "train", 2),
        ("CXR2_IM-2", "val", 1),
    ]
    assert all(p.is_absolute() and p.is_file() for s in studies for p in s.image_paths)
    # A study the shipped sections know gets its other sections from them; another keeps only its report.
    assert studies[0].sections["indication"] == "Breast cancer."
    assert studies[1].sections == {"indication": "", "comparison": "", "findings": "Small left effusion.",
                                   "impression": ""}


def test_iu_xray_loader_lists_images_as_the_annotation_does_even_when_absent(tmp_path):
    annotation = {"train": [{"id": "CXR1", "report": "Normal.", "image_path": ["CXR1/0.png"]}]}
    (study,) = iu_xray_studies(_r2gen_folder(tmp_path, annotation, write_images=False))
    assert study.image_paths == (tmp_path.absolute() / "images" / "CXR1" / "0.png",)


def test_iu_xray_loader_says_what_folder_it_needs(tmp_path):
    with pytest.raises(DatasetError, match=r"no annotation.json in .*--root must be the R2Gen iu_xray folder"):
        iu_xray_studies(tmp_path)
    (tmp_path / "annotation.json").write_text('{"train": []}')
    with pytest.raises(DatasetError, match="no images/ folder in"):
        iu_xray_studies(tmp_path)
    with pytest.raises(DatasetError, match="no folder"):
        iu_xray_studies(tmp_path / "nowhere")


def test_packaged_iu_sections_hold_every_packaged_study_and_its_findings_as_reported():
    sections = read_iu_sections()
    annotation = read_r2gen_annotation(packaged_iu_annotation())
    entries = [entry for split in annotation.values() for entry in split]
    assert len(sections) == len(entries) == 2365
    assert all(sections[e["id"]]["findings"] == e["report"] for e in entries)
    assert all(set(s) == {"indication", "comparison", "findings", "impression"} for s in sections.values())
    assert sum(bool(s["impression"]) for s in sections.values()) == 2359
    assert packaged_iu_annotation().with_name("README.md").read_text().count("sections.jsonl") >= 1


def test_iu_study_sections_take_the_report_as_findings_for_an_unknown_study():
    known = {"a": {"indication": "Cough.", "comparison": "", "findings": "Clear.", "impression": "Normal."}}
    assert iu_study_sections("a", "Clear.", known)["indication"] == "Cough."
    assert iu_study_sections("b", "Clear lungs.", known) == {
        "indication": "", "comparison": "", "findings": "Clear lungs.", "impression": ""
    }


def test_iu_sections_file_errors_name_the_line(tmp_path):
    path = tmp_path / "sections.jsonl"
    path.write_text('{"id": "a", "findings": "x"}\n{broken\n')
    with pytest.raises(DatasetError, match=r"sections.jsonl:2: not valid JSON"):
        read_iu_sections(path)

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


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:
 
 Small left pleural effusion.  No pneumothorax.
 
 IMPRESSION:
 
 Small left effusion.
"""


def test_report_sections_cut_a_mimic_report_into_four_sections():
    assert report_sections(MIMIC_REPORT) == {
        "indication": "___ with cough",
        "comparison": "___",
        "findings": "Small left pleural effusion. No pneumothorax.",
        "impression": "Small left effusion.",
    }


@pytest.mark.parametrize(
    ("heading", "section"),
    [
        ("HISTORY", "indication"),
        ("CLINICAL HISTORY", "indication"),
        ("REASON FOR EXAMINATION", "indication"),
        ("CLINICAL INFORMATION", "indication"),
        ("COMPARISONS", "comparison"),
        ("COMPARISON EXAM", "comparison"),
        ("FINDING", "findings"),
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),
        ("IMPRESSON", "impression"),
        ("CONCLUSION", "impression"),
    ],
)
def test_report_sections_map_the_headings_radiologists_write(heading, section):
    sections = report_sections(f"                FINAL REPORT\n {heading}:  Some words here.\n")
    assert sections[section] == "Some words here."
    assert sum(bool(text) for text in sections.values()) == 1


def test_findings_and_impression_heading_is_both_and_both_takes_it_once():
    sections = report_sections(" INDICATION:  Fever.\n \n FINDINGS AND IMPRESSION:\n Lungs are clear.\n")
    assert sections["findings"] == sections["impression"] == "Lungs are clear."
    assert report_section(sections, "both") == "Lungs are clear."
    separate = report_sections(MIMIC_REPORT)
    assert report_section(separate, "both") == "Small left pleural effusion. No pneumothorax. Small left effusion."
    assert report_section(separate, "impression") == "Small left effusion."


def test_headings_rrg_does_not_keep_end_the_section_before_them():
    text = (" CHEST, PA LATERAL:\n \n INDICATION:  Chest pain.\n \n FINDINGS:\n Heart normal.\n \n"
            " NOTIFICATION:  The findings were discussed with Dr. ___ at 10:00.\n")
    sections = report_sections(text)
    # the empty title heading is no section; NOTIFICATION (not kept) stops the findings
    assert sections == {"indication": "Chest pain.", "comparison": "", "findings": "Heart normal.", "impression": ""}


def test_a_section_written_twice_is_joined_and_history_is_indication():
    text = " HISTORY:  Cough.\n INDICATION:  Eval for pneumonia.\n FINDINGS:  Clear.\n"
    assert report_sections(text)["indication"] == "Cough. Eval for pneumonia."


def test_a_report_without_headings_has_no_sections():
    assert report_sections("Lungs are clear. No effusion.") == {
        "indication": "", "comparison": "", "findings": "", "impression": ""
    }
    with pytest.raises(DatasetError, match="findings, impression or both"):
        report_section(report_sections(""), "summary")


def test_mimic_cxr_studies_join_the_split_and_metadata_csvs(tmp_path):
    studies = [
        FakeStudy("10000032", "50000001", "train", views=("PA", "LATERAL")),
        FakeStudy("11000033", "50000002", "validate", views=("AP",), write_images=False),
    ]
    jpg_root, _ = write_mimic_tree(tmp_path, studies)
    first, second = mimic_cxr_studies(jpg_root)
    assert (first.id, first.patient_id, first.split) == ("s50000001", "p10000032", "train")
    assert [image.view for image in first.images] == ["PA", "LATERAL"]
    assert first.images[0].path.parent == jpg_root / "files" / "p10" / "p10000032" / "s50000001"
    assert first.images[0].path.is_file()
    # listed whether or not the file is there; "validate" is val
    assert second.split == "val" and not second.images[0].path.is_file()


def test_mimic_loader_names_the_missing_csv(tmp_path):
    message = r"no mimic-cxr-2.0.0-split.csv\(.gz\) in .*: --root must be the MIMIC-CXR-JPG folder"
    with pytest.raises(DatasetError, match=message):
        mimic_cxr_studies(tmp_path)
    jpg_root, _ = write_mimic_tree(tmp_path, [FakeStudy("10000032", "50000001", "train")], gzipped=False)
    (jpg_root / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(DatasetError, match=r"no mimic-cxr-2.0.0-metadata.csv\(.gz\)"):
        mimic_cxr_studies(jpg_root)


def test_mimic_loader_names_a_missing_column(tmp_path):
    jpg_root, _ = write_mimic_tree(tmp_path, [FakeStudy("10000032", "50000001", "train")])
    with gzip.open(jpg_root / "mimic-cxr-2.0.0-split.csv.gz", "wt") as handle:
        handle.write("dicom_id,study_id,split\nd1,50000001,train\n")
    with pytest.raises(DatasetError, match="no column.*subject_id"):
        mimic_cxr_studies(jpg_root)


def test_mimic_reports_root_is_the_unpacked_folder_or_its_files(tmp_path):
    jpg_root, reports_root = write_mimic_tree(tmp_path, [FakeStudy("10000032", "50000001", "train")])
    assert mimic_reports_root(jpg_root, reports_root) == reports_root / "files"
    assert mimic_reports_root(jpg_root, reports_root / "files") == reports_root / "files"
    with pytest.raises(DatasetError, match=r"no MIMIC-CXR reports \(pXX/pSUBJECT/sSTUDY.txt\) in .* --reports must be the folder"):
        mimic_reports_root(jpg_root, tmp_path)
    with pytest.raises(DatasetError, match="no reports folder"):
        mimic_reports_root(jpg_root, tmp_path / "nowhere")


def test_mimic_labels_are_read_by_column_name(tmp_path):
    study = FakeStudy("10000032", "50000001", "train", finding="left effusion")
    jpg_root, _ = write_mimic_tree(tmp_path, [study])
    labels = read_mimic_labels(jpg_root)
    assert labels.labeler == "mimic-chexpert" and labels.path.name == "mimic-cxr-2.0.0-chexpert.csv.gz"
    status = labels.by_study["50000001"]
    assert list(status) == list(CHEXBERT_LABELS)
    assert (status["Pleural Effusion"], status["Atelectasis"], status["Pneumothorax"]) == (
        "positive", "positive", "negative")
    assert status["Cardiomegaly"] == "blank"


def test_mimic_negbio_labels_are_used_when_there_are_no_chexpert_labels(tmp_path):
    jpg_root, _ = write_mimic_tree(tmp_path, [FakeStudy("10000032", "50000001", "train")], label_file="negbio")
    assert read_mimic_labels(jpg_root).labeler == "mimic-negbio"
    other, _ = write_mimic_tree(tmp_path / "none", [FakeStudy("10000032", "50000001", "train")], label_file=None)
    assert read_mimic_labels(other) is None


def test_a_bad_label_value_names_the_file_and_line(tmp_path):
    jpg_root, _ = write_mimic_tree(tmp_path, [FakeStudy("10000032", "50000001", "train")], gzipped=False)
    path = jpg_root / "mimic-cxr-2.0.0-chexpert.csv"
    values = ["2.0" if column == "Edema" else "" for column in LABEL_COLUMNS]
    path.write_text(path.read_text() + ",".join(["10000033", "50000002", *values]) + "\n")
    with pytest.raises(DatasetError, match=r"chexpert.csv:3: label value '2.0'"):
        read_mimic_labels(jpg_root)


def test_demo_records_carry_the_iu_sections_by_id(tmp_path):
    shipped = read_r2gen_annotation(packaged_iu_annotation())["train"][:2]
    unknown = {"id": "CXR9999_IM-9999", "report": "Small right pleural effusion.", "image_path": []}
    (tmp_path / "annotation.json").write_text(json.dumps({"train": shipped, "test": [unknown]}))
    build_demo(DemoConfig(out=tmp_path / "demo", annotation=tmp_path / "annotation.json", image_size=32, workers=1),
               progress=False)
    records = {r["id"]: r for r in read_manifest(tmp_path / "demo")}
    known = read_iu_sections()
    assert records[shipped[0]["id"]]["sections"] == known[shipped[0]["id"]]
    assert records[shipped[0]["id"]]["sections"]["indication"] == "Breast cancer."
    assert records["CXR9999_IM-9999"]["sections"] == {
        "indication": "", "comparison": "", "findings": "Small right pleural effusion.", "impression": ""
    }
    assert labeler_of(tmp_path / "demo") == "rules"  # from demo.json, when there is no dataset.json
