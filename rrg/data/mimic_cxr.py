"""`rrg data mimic`: a data set folder from MIMIC-CXR-JPG and the MIMIC-CXR reports.

A study is kept when it has an image of the chosen views (PA, then AP, by default) on disk, a report,
and the chosen section in that report; otherwise it is counted under the reason it was left out. Its
record's `image` is its first image of the first view listed, `images` all its kept images. Its labels
are MIMIC-CXR-JPG's own (its CheXpert CSV, else its NegBio CSV) where `--root` has them; a study those
lack, and every study when there are none, is labelled by rrg's rules labeler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from prompts.labeler import RULES_LABELER_NAME
from rrg.data.dataset_build import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WORKERS,
    build_dataset,
    clear_dataset,
    studies_fingerprint,
    summary_lines,
)
from rrg.data.datasets import (
    FRONTAL_VIEWS,
    REPORT_SECTIONS,
    DatasetError,
    MimicStudy,
    mimic_cxr_studies,
    mimic_report_path,
    mimic_reports_root,
    read_mimic_labels,
    report_section,
    report_sections,
)
from rrg.data.manifest import manifest_exists

MIMIC_NOTICE = (
    "MIMIC-CXR and MIMIC-CXR-JPG are credentialed PhysioNet data (PhysioNet Credentialed Health Data "
    "License 1.5.0). This folder holds their reports: keep it where only credentialed users can read it."
)


@dataclass(frozen=True)
class MimicBuild:
    """What `rrg data mimic` builds, from where."""

    root: Path  # the MIMIC-CXR-JPG folder: files/ and the CSVs
    out: Path
    reports: Path | None = None  # the reports' folder or its files/; None: root/files
    section: str = "findings"  # findings, impression or both
    views: tuple[str, ...] = FRONTAL_VIEWS  # in order of preference for a study's `image`
    workers: int = DEFAULT_WORKERS
    chunk_size: int = DEFAULT_CHUNK_SIZE


def parse_views(text: str) -> tuple[str, ...]:
    """`--views PA,AP` as ViewPositions, in the order given (the first is preferred for `image`)."""
    views = tuple(dict.fromkeys(view.strip().upper() for view in text.split(",") if view.strip()))
    if not views:
        raise DatasetError(f"--views needs at least one ViewPosition, e.g. PA,AP (got {text!r})")
    return views


def _missing_section(section: str) -> str:
    return "no findings or impression section" if section == "both" else f"no {section} section"


def prepare_mimic_study(
    reports_root: Path, section: str, views: tuple[str, ...], job: tuple[MimicStudy, dict | None]
) -> dict | str:
    """A study's manifest record (its `labels` None when MIMIC-CXR-JPG has none for it), or why it is
    left out."""
    study, labels = job
    chosen = [image for image in study.images if image.view in views]
    if not chosen:
        return f"no {'/'.join(views)} image"
    on_disk = [image for image in chosen if image.path.is_file()]
    if not on_disk:
        return "image file missing"
    report_path = mimic_report_path(reports_root, study.subject_id, study.study_id)
    if not report_path.is_file():
        return "report file missing"
    try:
        sections = report_sections(report_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return "report file unreadable"
    report = report_section(sections, section)
    if not report:
        return _missing_section(section)
    first = min(on_disk, key=lambda image: views.index(image.view))  # stable: the first of that view
    return {
        "id": study.id,
        "split": study.split,
        "report": report,
        "image": str(first.path),
        "images": [str(image.path) for image in on_disk],
        "view": first.view,
        "patient_id": study.patient_id,
        "sections": sections,
        "labels": labels,
    }


def build_mimic_cxr(build: MimicBuild, force: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print) -> dict:
    """Build the MIMIC-CXR data set folder `build.out` and return its summary (also its dataset.json)."""
    started = time.perf_counter()
    if build.section not in REPORT_SECTIONS:
        raise DatasetError(f"--section must be findings, impression or both, not {build.section!r}")
    out = Path(build.out)
    if manifest_exists(out) and not force:
        raise DatasetError(f"{out} already holds a data set (use --force to rebuild it)")
    root = Path(build.root).absolute()
    studies = mimic_cxr_studies(root, progress=progress)
    reports_root = mimic_reports_root(root, build.reports)
    labels = read_mimic_labels(root)
    log(f"MIMIC-CXR: {len(studies):,} studies listed in {root}; reports from {reports_root}; labels: "
        + (f"{labels.path.name} ({labels.labeler})" if labels else f"none in --root, the {RULES_LABELER_NAME} labeler"))
    by_study = labels.by_study if labels else {}
    jobs = [(study, by_study.get(study.study_id)) for study in studies]
    about = {
        "dataset": "MIMIC-CXR",
        "description": "MIMIC-CXR-JPG images with the MIMIC-CXR reports, built by `rrg data mimic`",
        "notice": MIMIC_NOTICE,
        "source": {"root": str(root), "reports": str(reports_root)},
        "section": build.section,
        "views": list(build.views),
        "labeler": labels.labeler if labels else RULES_LABELER_NAME,
        "labels_file": str(labels.path) if labels else None,
        "studies_listed": len(studies),
    }
    plan = {
        "source": about["source"],
        "section": build.section,
        "views": list(build.views),
        "labels_file": about["labels_file"],
        "study_ids": studies_fingerprint([study.study_id for study in studies]),
    }
    if force:
        clear_dataset(out)
    out.mkdir(parents=True, exist_ok=True)
    prepare = partial(prepare_mimic_study, reports_root, build.section, tuple(build.views))
    summary = build_dataset(out, jobs, prepare, about, plan, workers=build.workers,
                            chunk_size=build.chunk_size, progress=progress, log=log, started=started)
    for line in summary_lines(summary, out):
        log(line)
    return summary

