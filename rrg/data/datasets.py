"""Report data sets on disk: IU X-Ray (the R2Gen layout, and the report sections shipped with rrg) and
MIMIC-CXR-JPG (its CSVs and images, with the MIMIC-CXR reports), and the sections of a report.

Loaders read from a path the user gives; nothing is downloaded. They return what the data set lists;
checking that each listed file is there, labelling, and counting what is left out and why is the work
of the manifest builders (`rrg.data.mimic_cxr`, `rrg.data.iu_xray`).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from prompts.vocabulary import CHEXBERT_LABELS
from rrg.data.jsonl import JsonlError, read_jsonl

SPLITS = ("train", "val", "test")
# MIMIC-CXR calls its validation split "validate"; R2Gen files sometimes say "valid".
_SPLIT_ALIASES = {"validate": "val", "valid": "val", "validation": "val"}
# The four parts of a chest X-ray report that rrg keeps apart (each "" when a report has none).
SECTION_NAMES = ("indication", "comparison", "findings", "impression")
REPORT_SECTIONS = ("findings", "impression", "both")  # what a data set's `report` can be


class DatasetError(ValueError):
    """A data set on disk is not in the layout its loader reads."""


@dataclass(frozen=True)
class Study:
    """One imaging study: its report, the images taken, and its report's sections."""

    id: str
    split: str
    report: str
    image_paths: tuple[Path, ...] = ()
    patient_id: str | None = None
    sections: dict[str, str] = field(default_factory=dict)


def _split_name(name: str) -> str:
    split = _SPLIT_ALIASES.get(name.lower(), name.lower())
    if split not in SPLITS:
        raise DatasetError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)} (or 'validate')")
    return split


def empty_sections() -> dict[str, str]:
    """The four report sections, all absent."""
    return dict.fromkeys(SECTION_NAMES, "")


# --- IU X-Ray, R2Gen layout ---------------------------------------------------------------------


def packaged_iu_annotation() -> Path:
    """The IU X-Ray annotation file shipped with rrg (reports only; CC BY-NC-ND 4.0, see its README)."""
    return Path(str(resources.files("rrg.data").joinpath("resources/iu_xray/annotation.json")))


def packaged_iu_sections() -> Path:
    """The IU X-Ray report sections shipped with rrg: one line per study of the R2Gen train and val splits."""
    return Path(str(resources.files("rrg.data").joinpath("resources/iu_xray/sections.jsonl")))


def read_r2gen_annotation(path: str | Path) -> dict[str, list[dict]]:
    """An R2Gen `annotation.json`: `{split: [{"id", "report", "image_path": [...]}, ...]}`."""
    path = Path(path)
    try:
        annotation = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(annotation, dict) or not annotation:
        raise DatasetError(f'{path}: expected an object of splits, e.g. {{"train": [...], "val": [...]}}')
    for split, entries in annotation.items():
        _split_name(split)
        if not isinstance(entries, list):
            raise DatasetError(f"{path}: split {split!r} must be a list of studies")
        for i, entry in enumerate(entries):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("id"), str)
                or not isinstance(entry.get("report"), str)
            ):
                raise DatasetError(f"{path}: {split}[{i}] needs string fields 'id' and 'report'")
    return annotation


@cache
def _packaged_sections() -> dict[str, dict[str, str]]:
    return read_iu_sections(packaged_iu_sections())


def read_iu_sections(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """IU X-Ray report sections by study id, `{id: {"indication", "comparison", "findings", "impression"}}`,
    from a `sections.jsonl` (default: the one shipped with rrg)."""
    if path is None:
        return dict(_packaged_sections())
    by_id = {}
    try:
        for entry in read_jsonl(path, required=("id",)):
            if not isinstance(entry["id"], str):
                raise DatasetError(f"{path}: study id {entry['id']!r} is not a string")
            by_id[entry["id"]] = {name: str(entry.get(name) or "") for name in SECTION_NAMES}
    except JsonlError as error:
        raise DatasetError(str(error)) from None
    return by_id


def iu_study_sections(study_id: str, report: str, known: dict[str, dict[str, str]]) -> dict[str, str]:
    """An IU study's four sections: from `known` (by id) where it has the study, else the report alone
    as its findings (an R2Gen annotation's `report` is the findings section)."""
    if study_id in known:
        return dict(known[study_id])
    return {**empty_sections(), "findings": report}


def iu_xray_studies(root: str | Path, annotation: str | Path | None = None) -> list[Study]:
    """IU X-Ray as R2Gen lays it out: `root/annotation.json` and `root/images/<id>/<n>.png`.

    Image paths are those the annotation lists, absolute, whether or not each file is there; sections
    come from the sections shipped with rrg (the report as findings for a study they lack).
    """
    root = Path(root).absolute()
    layout = "--root must be the R2Gen iu_xray folder (it holds annotation.json and images/)"
    if not root.is_dir():
        raise DatasetError(f"no folder {root}: {layout}")
    annotation_path = Path(annotation) if annotation else root / "annotation.json"
    if not annotation_path.is_file():
        raise DatasetError(f"no {annotation_path.name} in {annotation_path.parent}: {layout}")
    if not (root / "images").is_dir():
        raise DatasetError(f"no images/ folder in {root}: {layout}")
    known = read_iu_sections()
    studies = []
    for split, entries in read_r2gen_annotation(annotation_path).items():
        for entry in entries:
            images = tuple(root / "images" / p for p in entry.get("image_path", []))
            sections = iu_study_sections(entry["id"], entry["report"], known)
            studies.append(Study(entry["id"], _split_name(split), entry["report"], images, sections=sections))
    return studies


# --- Report sections ----------------------------------------------------------------------------

# A heading starts a line, is upper case and ends with a colon: " FINDINGS:", " CLINICAL HISTORY:".
# "FINAL REPORT" (no colon) and the text before the first heading are the preamble, kept by no section.
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z ()/,&'-]*?)[ \t]*:", re.MULTILINE)
# Headings as MIMIC-CXR's radiologists wrote them (with the misspellings seen in the corpus), by the
# section they start. MIMIC-CXR's own `section_parser` groups them alike; HISTORY is the indication.
_HEADINGS = {
    "indication": (
        "indication", "indications", "clinical indication", "reason for examination", "reason for exam",
        "history", "clinical history", "clinical information", "patient history", "pfi", "idication",
    ),
    "comparison": (
        "comparison", "comparisons", "comparison exam", "comparison film", "comparison study",
        "reference exam", "comparision", "comparsion", "comparrison", "comparisions",
    ),
    "findings": (
        "findings", "finding", "reference findings", "findngs", "findins", "findnings", "finidngs",
        "findgings", "findindgs",
    ),
    "impression": (
        "impression", "impressions", "conclusion", "conclusions", "impresion", "impresson", "impession",
        "imprression", "imoression", "impressoin", "imprssion", "imperssion", "mpression",
    ),
    "findings and impression": (
        "findings and impression", "findings/impression", "findings / impression", "findings/ impression",
        "impression and findings", "findings and impressions",
    ),
}
_SECTION_OF_HEADING = {heading: section for section, headings in _HEADINGS.items() for heading in headings}
# A heading naming the views taken ("PA AND LATERAL VIEWS OF THE CHEST:") opens the findings.
_VIEWS_HEADING = re.compile(
    r"chest|portable|pa and lat|lateral and pa|ap and lat|lateral and ap|frontal and|two views|"
    r"frontal view|pa view|ap view|one view|lateral view|frontal upright|frontal semi-upright"
)


def _sections_of_heading(heading: str) -> tuple[str, ...]:
    """The sections a heading starts: none (EXAMINATION, TECHNIQUE, NOTIFICATION...), one, or both findings
    and impression (FINDINGS AND IMPRESSION)."""
    name = " ".join(heading.lower().split())
    section = _SECTION_OF_HEADING.get(name)
    if section is None:
        if "impression" in name:
            section = "findings and impression" if "finding" in name else "impression"
        elif "finding" in name:
            section = "findings"
        elif "comparison" in name:
            section = "comparison"
        elif "indication" in name or "history" in name:
            section = "indication"
        elif _VIEWS_HEADING.search(name):
            section = "findings"
    if section == "findings and impression":
        return ("findings", "impression")
    return (section,) if section else ()


def report_sections(text: str) -> dict[str, str]:
    """A free-text report (MIMIC-CXR's upper-case headings) cut into its indication, comparison,
    findings and impression; each "" when the report has none.

    A section's text is all that follows its heading up to the next heading, its whitespace collapsed
    (de-identification markers, "___", kept). HISTORY and CLINICAL HISTORY are the indication; a
    FINDINGS AND IMPRESSION section is both the findings and the impression; a section written twice
    is joined; headings rrg does not keep (EXAMINATION, TECHNIQUE, NOTIFICATION...) end the one before.
    """
    sections = empty_sections()
    headings = list(_HEADING.finditer(text))
    for heading, following in zip(headings, [*headings[1:], None]):
        body = " ".join(text[heading.end() : following.start() if following else len(text)].split())
        if not body:
            continue
        for section in _sections_of_heading(heading.group(1)):
            sections[section] = f"{sections[section]} {body}".strip()
    return sections


def report_section(sections: dict[str, str], section: str) -> str:
    """The text a data set takes as a study's report: its findings, its impression, or both (the
    findings then the impression, once when they are the same text); "" when the report lacks it."""
    if section not in REPORT_SECTIONS:
        raise DatasetError(f"section must be findings, impression or both, not {section!r}")
    if section != "both":
        return sections[section]
    parts = [sections["findings"], sections["impression"]]
    if parts[0] == parts[1]:
        parts = parts[:1]
    return " ".join(part for part in parts if part)


# --- MIMIC-CXR-JPG ------------------------------------------------------------------------------

MIMIC_SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
MIMIC_METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
# The labels MIMIC-CXR-JPG ships, in the order rrg prefers them, with the labeler name each is known by.
MIMIC_LABEL_CSVS = (("mimic-cxr-2.0.0-chexpert.csv", "mimic-chexpert"), ("mimic-cxr-2.0.0-negbio.csv", "mimic-negbio"))
FRONTAL_VIEWS = ("PA", "AP")
_MIMIC_ROOT = "--root must be the MIMIC-CXR-JPG folder (it holds files/ and the CSVs)"
_MIMIC_REPORTS = (
    "--reports must be the folder mimic-cxr-reports.zip unpacks into (it holds files/), or that files/ folder"
)
# MIMIC-CXR-JPG's label coding: 1.0 positive, 0.0 negative, -1.0 uncertain, empty: not mentioned.
_LABEL_CODES = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}


@dataclass(frozen=True)
class MimicImage:
    """One MIMIC-CXR-JPG image and its view (the metadata's ViewPosition: PA, AP, LATERAL, LL...)."""

    path: Path
    view: str


@dataclass(frozen=True)
class MimicStudy:
    """One MIMIC-CXR study as the split and metadata CSVs list it: every image, in the split CSV's order."""

    subject_id: str
    study_id: str
    split: str
    images: tuple[MimicImage, ...]

    @property
    def id(self) -> str:
        return f"s{self.study_id}"

    @property
    def patient_id(self) -> str:
        return f"p{self.subject_id}"


@dataclass(frozen=True)
class MimicLabels:
    """The labels MIMIC-CXR-JPG ships for its studies, by study id, and the labeler that made them."""

    labeler: str
    path: Path
    by_study: dict[str, dict[str, str]]


def find_mimic_csv(root: Path, name: str) -> Path | None:
    """`root/name`, or its gzipped copy `root/name.gz` (as PhysioNet ships it); None if neither is there."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path} has no column(s) {', '.join(missing)}: is it the MIMIC-CXR-JPG file?")
        yield from reader


def _required_mimic_csv(root: Path, name: str) -> Path:
    path = find_mimic_csv(root, name)
    if path is None:
        raise DatasetError(f"no {name}(.gz) in {root}: {_MIMIC_ROOT}")
    return path


def mimic_image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """Where MIMIC-CXR-JPG keeps an image: `root/files/pXX/pSUBJECT/sSTUDY/DICOM.jpg`."""
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def mimic_report_path(reports_root: Path, subject_id: str, study_id: str) -> Path:
    """Where the MIMIC-CXR reports keep a study's report: `files/pXX/pSUBJECT/sSTUDY.txt`."""
    return reports_root / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"


def mimic_reports_root(root: str | Path, reports: str | Path | None = None) -> Path:
    """The `files/` folder of the MIMIC-CXR reports: `reports/files` or `reports` itself (default:
    `root/files`, where many users unpack the reports beside the images)."""
    folder = Path(reports).absolute() if reports else Path(root).absolute() / "files"
    if (folder / "files").is_dir():
        folder = folder / "files"
    if not folder.is_dir():
        raise DatasetError(f"no reports folder {folder}: {_MIMIC_REPORTS}")
    # stops at the first report; only a folder without any is read through
    if next(folder.glob("p[0-9][0-9]/p*/s*.txt"), None) is None:
        raise DatasetError(f"no MIMIC-CXR reports (pXX/pSUBJECT/sSTUDY.txt) in {folder}: {_MIMIC_REPORTS}")
    return folder


def mimic_cxr_studies(root: str | Path, progress: bool = False) -> list[MimicStudy]:
    """The studies of MIMIC-CXR-JPG: its split CSV joined with its metadata CSV's ViewPosition, in the
    split CSV's order; image paths absolute, whether or not each file is there."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatasetError(f"no folder {root}: {_MIMIC_ROOT}")
    split_csv = _required_mimic_csv(root, MIMIC_SPLIT_CSV)
    metadata_csv = _required_mimic_csv(root, MIMIC_METADATA_CSV)
    if not (root / "files").is_dir():
        raise DatasetError(f"no files/ folder in {root}: {_MIMIC_ROOT}")
    metadata = _csv_rows(metadata_csv, ("dicom_id", "ViewPosition"))
    views = {
        row["dicom_id"]: row["ViewPosition"] or ""
        for row in tqdm(metadata, desc="reading image views", unit=" images", disable=not progress)
    }
    studies: dict[str, tuple[str, str, list[MimicImage]]] = {}
    rows = _csv_rows(split_csv, ("dicom_id", "study_id", "subject_id", "split"))
    for row in tqdm(rows, desc="reading the split", unit=" images", disable=not progress):
        subject, study = row["subject_id"], row["study_id"]
        _, _, images = studies.setdefault(study, (subject, _split_name(row["split"]), []))
        image = mimic_image_path(root, subject, study, row["dicom_id"])
        images.append(MimicImage(image, views.get(row["dicom_id"], "")))
    return [MimicStudy(subject, study, split, tuple(images)) for study, (subject, split, images) in studies.items()]


def _label_status(value: str, path: Path, line: int) -> str:
    if not value.strip():
        return "blank"
    try:
        return _LABEL_CODES[float(value)]
    except (ValueError, KeyError):
        raise DatasetError(f"{path}:{line}: label value {value!r} is not 1.0, 0.0, -1.0 or empty") from None


def read_mimic_labels(root: str | Path) -> MimicLabels | None:
    """The study labels MIMIC-CXR-JPG ships in `root`: its CheXpert labels, else its NegBio labels
    (the 14 CheXbert labels by column name), or None when it has neither."""
    root = Path(root).absolute()
    for name, labeler in MIMIC_LABEL_CSVS:
        path = find_mimic_csv(root, name)
        if path is None:
            continue
        by_study = {}
        for line, row in enumerate(_csv_rows(path, ("study_id", *CHEXBERT_LABELS)), start=2):
            by_study[row["study_id"]] = {
                label: _label_status(row[label] or "", path, line) for label in CHEXBERT_LABELS
            }
        return MimicLabels(labeler, path, by_study)
    return None
