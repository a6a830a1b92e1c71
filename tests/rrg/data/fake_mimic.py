"""A small MIMIC-CXR-JPG tree and MIMIC-CXR reports folder, in the real formats, for tests.

`write_fake_mimic(root, {"train": 40, "validate": 8, "test": 8})` writes, under `root`:

    mimic-cxr-jpg/      mimic-cxr-2.0.0-split.csv.gz, mimic-cxr-2.0.0-metadata.csv.gz,
                        mimic-cxr-2.0.0-chexpert.csv.gz (the real column names and orders),
                        files/pXX/pSUBJECT/sSTUDY/DICOM.jpg (a PA and a lateral image per study)
    mimic-cxr-reports/  files/pXX/pSUBJECT/sSTUDY.txt (FINAL REPORT, EXAMINATION, INDICATION,
                        TECHNIQUE, COMPARISON, FINDINGS, IMPRESSION; "___" where MIMIC de-identified)

and returns the two folders. Each study shows one finding, and its grey JPEG shows it too, a little
(a brighter lower zone on the side of an effusion, a wider heart, a dark apex without lung markings
for a pneumothorax), so a model trained on the tree has something true to learn. `write_mimic_tree`
writes any list of `FakeStudy`, for tests of studies a builder must leave out.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
# MIMIC-CXR-JPG's label files order their columns alphabetically, not in CheXbert's head order.
LABEL_COLUMNS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}


@dataclass(frozen=True)
class FakeFinding:
    """What a fake study's report says, and the labels MIMIC-CXR-JPG's CheXpert file gives it."""

    findings: str
    impression: str
    labels: dict[str, float]  # label -> 1.0, 0.0 or -1.0; unlisted labels are blank


FINDINGS = {
    "normal": FakeFinding(
        "The lungs are clear. The cardiomediastinal silhouette is within normal limits. No pleural "
        "effusion or pneumothorax is seen.",
        "No acute cardiopulmonary process.",
        {"No Finding": 1.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
    ),
    "left effusion": FakeFinding(
        "There is a small left pleural effusion with adjacent atelectasis. The right lung is clear. "
        "Heart size is normal. No pneumothorax.",
        "Small left pleural effusion.",
        {"Pleural Effusion": 1.0, "Atelectasis": 1.0, "Pneumothorax": 0.0},
    ),
    "right effusion": FakeFinding(
        "Moderate right pleural effusion is present. The left lung is clear. No pneumothorax. Heart size "
        "is normal.",
        "Moderate right pleural effusion.",
        {"Pleural Effusion": 1.0, "Pneumothorax": 0.0},
    ),
    "cardiomegaly": FakeFinding(
        "The heart is moderately enlarged, as on ___. The lungs are clear. No pleural effusion or pneumothorax.",
        "Moderate cardiomegaly without acute process.",
        {"Cardiomegaly": 1.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
    ),
    "pneumothorax": FakeFinding(
        "There is a small right apical pneumothorax. No pleural effusion. The heart is normal in size. "
        "Findings were discussed with Dr. ___ by telephone at ___.",
        "Small right apical pneumothorax.",
        {"Pneumothorax": 1.0, "Pleural Effusion": 0.0},
    ),
}


@dataclass(frozen=True)
class FakeStudy:
    """One study of the fake tree, and which of its files to leave out."""

    subject_id: str  # 8 digits, 10000000-19999999
    study_id: str  # 8 digits
    split: str  # as the split CSV writes it: train, validate or test
    finding: str = "normal"  # a key of FINDINGS
    views: tuple[str, ...] = ("PA", "LATERAL")  # one image per view, in this order
    report: str | None = None  # None: the report written from `finding`
    write_report: bool = True
    write_images: bool = True
    in_label_file: bool = True


def dicom_id(study: FakeStudy, number: int) -> str:
    """A DICOM id shaped like MIMIC-CXR's (five groups of eight hex digits)."""
    digest = hashlib.sha1(f"{study.study_id}/{number}".encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def report_text(study: FakeStudy) -> str:
    """The study's report as MIMIC-CXR writes its reports."""
    finding = FINDINGS[study.finding]
    findings = textwrap.fill(finding.findings, 70, initial_indent=" ", subsequent_indent=" ")
    impression = textwrap.fill(finding.impression, 70, initial_indent=" ", subsequent_indent=" ")
    return (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___ year old woman with cough  // evaluate for pneumonia\n \n"
        " TECHNIQUE:  Chest PA and lateral\n \n"
        " COMPARISON:  ___\n \n"
        f" FINDINGS:\n \n{findings}\n \n"
        f" IMPRESSION:\n \n{impression}\n"
    )


def radiograph(finding: str, view: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A grey picture shaped like a chest film, showing the finding a little (image left is the
    patient's right)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    pixels = np.full((height, width), 0.55, np.float32)
    if view in ("LATERAL", "LL"):
        pixels -= 0.3 * (((u - 0.5) / 0.3) ** 2 + ((v - 0.5) / 0.38) ** 2 < 1)
    else:
        right_lung, left_lung = ((((u - centre) / 0.16) ** 2 + ((v - 0.48) / 0.32) ** 2 < 1) for centre in (0.3, 0.7))
        pixels -= 0.3 * (right_lung | left_lung)
        heart = 0.17 if finding == "cardiomegaly" else 0.11
        pixels += 0.35 * (((u - 0.53) / heart) ** 2 + ((v - 0.62) / 0.13) ** 2 < 1)
        base = v > 0.62  # fluid fills the lung's base
        if finding == "left effusion":
            pixels += 0.25 * (base & left_lung)
        if finding == "right effusion":
            pixels += 0.25 * (base & right_lung)
        if finding == "pneumothorax":
            pixels -= 0.2 * (((u - 0.3) / 0.12) ** 2 + ((v - 0.25) / 0.1) ** 2 < 1)
    pixels += rng.normal(0, 0.03, pixels.shape).astype(np.float32)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_mimic_tree(
    root: Path,
    studies: list[FakeStudy],
    image_size: tuple[int, int] = (300, 250),
    seed: int = 0,
    label_file: str | None = "chexpert",
    gzipped: bool = True,
) -> tuple[Path, Path]:
    """Write the studies as MIMIC-CXR-JPG (`root/mimic-cxr-jpg`) and the MIMIC-CXR reports
    (`root/mimic-cxr-reports`); returns those two folders.

    Args:
        label_file: "chexpert" or "negbio" (the label CSV to write), or None for none.
        gzipped: write the CSVs as `.csv.gz` (as PhysioNet ships them) or plain `.csv`.
    """
    jpg_root, reports_root = root / "mimic-cxr-jpg", root / "mimic-cxr-reports"
    (jpg_root / "files").mkdir(parents=True, exist_ok=True)
    (reports_root / "files").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split_rows, metadata_rows, label_rows = [], [], []
    for study in studies:
        for number, view in enumerate(study.views):
            image_id = dicom_id(study, number)
            split_rows.append(dict(zip(SPLIT_COLUMNS, (image_id, study.study_id, study.subject_id, study.split))))
            metadata_rows.append({
                "dicom_id": image_id, "subject_id": study.subject_id, "study_id": study.study_id,
                "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                "Rows": image_size[1], "Columns": image_size[0], "StudyDate": 21800506,
                "StudyTime": f"{213014 + number}.531", "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                "ViewCodeSequence_CodeMeaning": _VIEW_MEANING.get(view, ""),
                "PatientOrientationCodeSequence_CodeMeaning": "Erect",
            })
            if study.write_images:
                folder = jpg_root / "files" / f"p{study.subject_id[:2]}" / f"p{study.subject_id}" / f"s{study.study_id}"
                folder.mkdir(parents=True, exist_ok=True)
                radiograph(study.finding, view, image_size, rng).save(folder / f"{image_id}.jpg", quality=90)
        if study.write_report:
            folder = reports_root / "files" / f"p{study.subject_id[:2]}" / f"p{study.subject_id}"
            folder.mkdir(parents=True, exist_ok=True)
            text = report_text(study) if study.report is None else study.report
            (folder / f"s{study.study_id}.txt").write_text(text, encoding="utf-8")
        if study.in_label_file:
            labels = FINDINGS[study.finding].labels
            label_rows.append({"subject_id": study.subject_id, "study_id": study.study_id,
                               **{label: labels.get(label, "") for label in LABEL_COLUMNS}})
    suffix = ".csv.gz" if gzipped else ".csv"
    _write_csv(jpg_root / f"mimic-cxr-2.0.0-split{suffix}", SPLIT_COLUMNS, split_rows)
    _write_csv(jpg_root / f"mimic-cxr-2.0.0-metadata{suffix}", METADATA_COLUMNS, metadata_rows)
    if label_file:
        _write_csv(jpg_root / f"mimic-cxr-2.0.0-{label_file}{suffix}", ("subject_id", "study_id", *LABEL_COLUMNS),
                   label_rows)
    return jpg_root, reports_root


def fake_studies(studies_per_split: dict[str, int], seed: int = 0) -> list[FakeStudy]:
    """Studies for each split ("val" is written "validate", as MIMIC-CXR does), each with one finding,
    the findings taken in turn; one study per patient, patients spread over p10 ... p19."""
    names = list(FINDINGS)
    studies = []
    for split, count in studies_per_split.items():
        for _ in range(count):
            number = len(studies)
            studies.append(FakeStudy(
                subject_id=f"{10 + number % 10}{number:06d}",
                study_id=f"{50000000 + 7919 * number + seed}",
                split="validate" if split == "val" else split,
                finding=names[number % len(names)],
            ))
    return studies


def write_fake_mimic(
    root: Path, studies_per_split: dict[str, int], image_size: tuple[int, int] = (300, 250), seed: int = 0
) -> tuple[Path, Path]:
    """A fake MIMIC-CXR-JPG tree and reports folder under `root` with that many studies per split (each a
    PA and a lateral image, a report, CheXpert labels); returns (jpg_root, reports_root)."""
    return write_mimic_tree(Path(root), fake_studies(studies_per_split, seed), image_size, seed)
