"""The demo data set: real IU X-Ray reports, each paired with a synthetic phantom radiograph.

No real chest X-ray images are available here, so every report is labelled (CheXbert's 14
labels, by the rules labeler), its MedKLIP triplets are extracted, and a phantom
radiograph is rendered that shows what the report says where it says it. It makes the whole
pipeline trainable on a CPU and gives tests a ground truth; it is a demo and a test bed, and
every file it writes says so.

Output folder: `images/<id>.png`, `manifest.jsonl` (`id`, `split`, `report`, `image`, `labels`,
`triplets`, `sections`: the study's indication, comparison, findings and impression from the IU
sections shipped with rrg, or the report alone as findings for a study they lack), `gallery.png` (a
captioned grid for a person to look at), `demo.json` (what it is, where the reports come from,
counts) and `README.md`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from prompts.labeler import RULES_LABELER_NAME, label_report
from prompts.triplets import extract_triplets
from rrg.data.datasets import (
    iu_study_sections,
    packaged_iu_annotation,
    read_iu_sections,
    read_r2gen_annotation,
)
from rrg.data.image_cache import CACHE_FOLDER
from rrg.data.manifest import MANIFEST, write_manifest
from rrg.demo.gallery import render_gallery
from rrg.demo.phantom import render_report_phantom
from rrg.demo.phantom.findings import PHANTOM_VERSION
from rrg.paths import write_atomically

PHANTOM_NOTICE = (
    "SYNTHETIC DEMO DATA: every image is a phantom radiograph rendered by rrg from the findings its "
    "report states; none is an image of a patient. Models trained on it are demonstrations, not for "
    "clinical use."
)
IU_ATTRIBUTION = (
    "Reports: IU X-Ray (Open-i), Indiana University / U.S. National Library of Medicine; "
    "Demner-Fushman et al., JAMIA 23(2), 2016; R2Gen split (Chen et al., EMNLP 2020). CC BY-NC-ND 4.0."
)


@dataclass(frozen=True)
class DemoConfig:
    """How the demo set is built."""

    out: Path
    annotation: Path | None = None  # None: the IU X-Ray reports shipped with rrg
    image_size: int = 256
    val_holdout: int = 200  # IU train studies held out as `val` (packaged corpus only)
    workers: int = max(1, min(4, os.cpu_count() or 1))


def demo_exists(out: str | Path) -> bool:
    """Whether a finished demo set of this rrg's phantoms is at `out` (the manifest is written last; a set
    whose demo.json states another phantom version was drawn by an older rrg and is built again)."""
    out = Path(out)
    if not (out / MANIFEST).is_file() or not (out / "demo.json").is_file():
        return False
    try:
        return json.loads((out / "demo.json").read_text()).get("phantom_version") == PHANTOM_VERSION
    except json.JSONDecodeError:
        return False


def _holdout_rank(study_id: str) -> str:
    # A stable order independent of the file's order and of Python's salted hash().
    return hashlib.sha256(study_id.encode()).hexdigest()


def demo_splits(
    annotation: dict[str, list[dict]], packaged: bool, val_holdout: int
) -> list[tuple[str, dict]]:
    """(split, entry) pairs. The packaged IU corpus has only train and val: hold `val_holdout` of
    train out as `val` and use IU val as `test`. Any other file keeps its own splits."""
    if not packaged:
        return [(split, entry) for split, entries in annotation.items() for entry in entries]
    held_out = {
        e["id"] for e in sorted(annotation["train"], key=lambda e: _holdout_rank(e["id"]))[:val_holdout]
    }
    pairs = [("val" if e["id"] in held_out else "train", e) for e in annotation["train"]]
    return pairs + [("test", e) for e in annotation.get("val", [])]


def _render_one(job: tuple[str, dict, list[dict], int, str]) -> str:
    study_id, labels, triplets, size, path = job
    pixels = render_report_phantom(study_id, labels, triplets, size=size)
    # a killed build never leaves a half-written image
    write_atomically(path, lambda partial: Image.fromarray(pixels).save(partial, format="PNG"))
    return study_id


def build_demo(config: DemoConfig, progress: bool = True) -> dict:
    """Build the demo set into `config.out` and return its summary (also saved as demo.json)."""
    started = time.perf_counter()
    out = Path(config.out)
    # A rebuild draws new images: until its manifest is written last, the folder is not a finished set,
    # and an image cache of the old images must not be read as theirs.
    (out / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(out / CACHE_FOLDER, ignore_errors=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    packaged = config.annotation is None
    annotation_path = packaged_iu_annotation() if packaged else Path(config.annotation)
    pairs = demo_splits(read_r2gen_annotation(annotation_path), packaged, config.val_holdout)

    known_sections = read_iu_sections()
    records = []
    for split, entry in tqdm(pairs, desc="labelling reports", unit="report", disable=not progress):
        triplets = [t.to_dict() for t in extract_triplets(entry["report"])]
        records.append(
            {
                "id": entry["id"],
                "split": split,
                "report": entry["report"],
                "image": f"images/{entry['id']}.png",
                "labels": label_report(entry["report"]),
                "triplets": triplets,
                "sections": iu_study_sections(entry["id"], entry["report"], known_sections),
            }
        )

    jobs = [(r["id"], r["labels"], r["triplets"], config.image_size, str(out / r["image"])) for r in records]
    with ProcessPoolExecutor(max_workers=config.workers) as pool:
        rendered = pool.map(_render_one, jobs, chunksize=16)
        for _ in tqdm(
            rendered, total=len(jobs), desc="rendering phantoms", unit="image", disable=not progress
        ):
            pass

    render_gallery(out, records).save(out / "gallery.png")
    summary = {
        "demo": True,
        "notice": PHANTOM_NOTICE,
        "phantom_version": PHANTOM_VERSION,
        "reports_source": IU_ATTRIBUTION if packaged else f"R2Gen-format annotation {annotation_path.name}",
        "labeler": RULES_LABELER_NAME,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "studies": dict(Counter(r["split"] for r in records)),
        "positive_labels": dict(
            Counter(k for r in records for k, v in r["labels"].items() if v == "positive")
        ),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    if packaged:
        shutil.copyfile(annotation_path.with_name("README.md"), out / "REPORTS_LICENCE.md")
    (out / "README.md").write_text(
        f"# rrg demo data set\n\n{PHANTOM_NOTICE}\n\n{summary['reports_source']}\n"
    )
    write_manifest(out, records)
    return summary
