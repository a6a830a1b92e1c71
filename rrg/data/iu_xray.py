"""`rrg data iu`: a data set folder from IU X-Ray in R2Gen's layout (`annotation.json` and `images/`).

R2Gen's report is the findings section; the study's other sections (indication, comparison,
impression) come from the IU sections shipped with rrg, which hold the R2Gen train and val studies
(a test study keeps only its findings). A study is kept when its report is not empty and its first
image, taken as the frontal view, is on disk; its labels are the rules labeler's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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
    DatasetError,
    Study,
    iu_xray_studies,
    packaged_iu_sections,
    read_iu_sections,
)
from rrg.data.manifest import manifest_exists

IU_NOTICE = (
    "IU X-Ray (Open-i), Indiana University / U.S. National Library of Medicine; Demner-Fushman et al., "
    "JAMIA 23(2), 2016; R2Gen split (Chen et al., EMNLP 2020). CC BY-NC-ND 4.0: attribution, "
    "non-commercial use only."
)
# R2Gen lists a study's images in Open-i's order, frontal first; the view is not recorded.
FIRST_IMAGE_VIEW = "frontal"


@dataclass(frozen=True)
class IuBuild:
    """What `rrg data iu` builds, from where."""

    root: Path  # R2Gen's iu_xray folder: annotation.json and images/
    out: Path
    workers: int = DEFAULT_WORKERS
    chunk_size: int = DEFAULT_CHUNK_SIZE


def prepare_iu_study(study: Study) -> dict | str:
    """A study's manifest record (labels still to be made), or why it is left out."""
    if not study.report.strip():
        return "no findings section"
    if not study.image_paths:
        return "no image listed"
    if not study.image_paths[0].is_file():
        return "image file missing"
    return {
        "id": study.id,
        "split": study.split,
        "report": study.report,
        "image": str(study.image_paths[0]),
        "images": [str(path) for path in study.image_paths if path.is_file()],
        "view": FIRST_IMAGE_VIEW,
        "sections": dict(study.sections),
        "labels": None,
    }


def build_iu_xray(build: IuBuild, force: bool = False, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """Build the IU X-Ray data set folder `build.out` and return its summary (also its dataset.json)."""
    started = time.perf_counter()
    out = Path(build.out)
    if manifest_exists(out) and not force:
        raise DatasetError(f"{out} already holds a data set (use --force to rebuild it)")
    root = Path(build.root).absolute()
    studies = iu_xray_studies(root)
    known = read_iu_sections()
    without_sections = sum(study.id not in known for study in studies)
    log(f"IU X-Ray: {len(studies):,} studies listed in {root / 'annotation.json'}; "
        f"{len(studies) - without_sections:,} with the sections shipped with rrg")
    about = {
        "dataset": "IU X-Ray",
        "description": "IU X-Ray in R2Gen's layout, built by `rrg data iu`",
        "notice": IU_NOTICE,
        "source": {"root": str(root), "sections": str(packaged_iu_sections())},
        "section": "findings",
        "views": [FIRST_IMAGE_VIEW],
        "labeler": RULES_LABELER_NAME,
        "labels_file": None,
        "studies_listed": len(studies),
        "studies_without_sections": without_sections,
    }
    plan = {"source": about["source"], "study_ids": studies_fingerprint([study.id for study in studies])}
    if force:
        clear_dataset(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = build_dataset(out, studies, prepare_iu_study, about, plan, workers=build.workers,
                            chunk_size=build.chunk_size, progress=progress, log=log, started=started)
    for line in summary_lines(summary, out):
        log(line)
    return summary
