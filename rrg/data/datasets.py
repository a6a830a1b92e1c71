"""Report data sets: IU X-Ray (R2Gen layout), MIMIC-CXR-JPG, and the packaged demo corpus.

Every loader returns `Study` records, one per imaging study, with the report text and the image
files it has. Loaders read from a path the user gives; nothing is downloaded.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SPLITS = ("train", "val", "test")
# MIMIC-CXR calls its validation split "validate"; R2Gen files sometimes say "valid".
_SPLIT_ALIASES = {"validate": "val", "valid": "val", "validation": "val"}


class DatasetError(ValueError):
    """A data set on disk is not in the layout its loader reads."""


@dataclass(frozen=True)
class Study:
    """One imaging study: its report and the images taken."""

    id: str
    split: str
    report: str
    image_paths: tuple[Path, ...] = ()
    patient_id: str | None = None


def _split_name(name: str) -> str:
    split = _SPLIT_ALIASES.get(name.lower(), name.lower())
    if split not in SPLITS:
        raise DatasetError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)} (or 'validate')")
    return split


# --- IU X-Ray, R2Gen layout ---------------------------------------------------------------------


def packaged_iu_annotation() -> Path:
    """The IU X-Ray annotation file shipped with rrg (reports only; CC BY-NC-ND 4.0, see its README)."""
    return Path(str(resources.files("rrg.data").joinpath("resources/iu_xray/annotation.json")))


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


def iu_xray_studies(root: str | Path, annotation: str | Path | None = None) -> list[Study]:
    """IU X-Ray as R2Gen lays it out: `root/annotation.json` and `root/images/<id>/<n>.png`."""
    root = Path(root)
    annotation_path = Path(annotation) if annotation else root / "annotation.json"
    if not annotation_path.is_file():
        raise DatasetError(f"no annotation file at {annotation_path}")
    image_root = root / "images" if (root / "images").is_dir() else root
    studies = []
    for split, entries in read_r2gen_annotation(annotation_path).items():
        for entry in entries:
            images = tuple(image_root / p for p in entry.get("image_path", []))
            missing = [str(p) for p in images if not p.is_file()]
            if missing:
                raise DatasetError(f"study {entry['id']}: image file(s) not found: {', '.join(missing[:3])}")
            studies.append(Study(entry["id"], _split_name(split), entry["report"], images))
    return studies


# --- MIMIC-CXR-JPG ------------------------------------------------------------------------------

_MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv"
_MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv"
_FRONTAL_VIEWS = ("PA", "AP")
_SECTION = re.compile(r"^\s*([A-Z][A-Z /]+):", re.MULTILINE)


def _open_csv(root: Path, name: str) -> Iterator[dict]:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rt", newline="", encoding="utf-8") as handle:
                yield from csv.DictReader(handle)
            return
    raise DatasetError(f"MIMIC-CXR-JPG file {name}(.gz) not found in {root}")


def report_sections(text: str) -> dict[str, str]:
    """A MIMIC-CXR free-text report cut into its upper-case sections (FINDINGS, IMPRESSION, ...)."""
    sections: dict[str, str] = {}
    matches = list(_SECTION.finditer(text))
    for match, following in zip(matches, [*matches[1:], None]):
        end = following.start() if following else len(text)
        body = " ".join(text[match.end() : end].split())
        if body:
            sections[match.group(1).strip()] = body
    return sections


def _mimic_report(reports_root: Path, subject_id: str, study_id: str, section: str) -> str | None:
    path = reports_root / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"
    if not path.is_file():
        return None
    sections = report_sections(path.read_text(encoding="utf-8", errors="replace"))
    if section == "both":
        parts = [sections.get("FINDINGS"), sections.get("IMPRESSION")]
        return " ".join(p for p in parts if p) or None
    return sections.get(section.upper())


def mimic_cxr_studies(
    root: str | Path,
    reports_root: str | Path | None = None,
    section: str = "findings",
    views: tuple[str, ...] = _FRONTAL_VIEWS,
) -> list[Study]:
    """MIMIC-CXR-JPG: the split and metadata CSVs in `root`, images under `root/files/pXX/pN/sM/`.

    Reports come from MIMIC-CXR's `mimic-cxr-reports` (`files/pXX/pN/sM.txt`), at `reports_root`
    (default: `root/files`, where many users unpack them). `section` is "findings" (as R2Gen and
    most RRG papers), "impression" or "both"; studies without that section are skipped.
    """
    root = Path(root)
    reports_root = Path(reports_root) if reports_root else root / "files"
    if section not in ("findings", "impression", "both"):
        raise DatasetError(f"section must be findings, impression or both, not {section!r}")
    views_by_dicom = {
        row["dicom_id"]: row.get("ViewPosition", "") for row in _open_csv(root, _MIMIC_METADATA)
    }
    images: dict[tuple[str, str], list[Path]] = {}
    splits: dict[tuple[str, str], str] = {}
    for row in _open_csv(root, _MIMIC_SPLIT):
        if views and views_by_dicom.get(row["dicom_id"]) not in views:
            continue
        key = (row["subject_id"], row["study_id"])
        subject = row["subject_id"]
        image = (
            root
            / "files"
            / f"p{subject[:2]}"
            / f"p{subject}"
            / f"s{row['study_id']}"
            / f"{row['dicom_id']}.jpg"
        )
        images.setdefault(key, []).append(image)
        splits[key] = _split_name(row["split"])
    studies = []
    for (subject, study), paths in images.items():
        report = _mimic_report(reports_root, subject, study, section)
        if report is None:
            continue
        studies.append(
            Study(f"s{study}", splits[(subject, study)], report, tuple(paths), patient_id=f"p{subject}")
        )
    if not studies:
        raise DatasetError(
            f"no MIMIC-CXR study with a {section} section and a {'/'.join(views)} image under {root}"
        )
    return studies
