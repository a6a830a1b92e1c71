"""Training data from a data set folder's `manifest.jsonl` (the demo set, MIMIC-CXR, IU X-Ray): the
images from the set's image cache (decoded once, `rrg.data.image_cache`), and each study's report and
finding targets. Studies whose image cannot be read are left out, and the log says how many."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prompts.labeler import label_report
from prompts.triplets import Triplet, dense_triplets
from prompts.vocabulary import CHEXBERT_LABELS
from retrieval.metrics import status_vectors
from rrg.data.deidentified import without_markers
from rrg.data.image_cache import DEFAULT_WORKERS, CachedImages, build_image_cache
from rrg.data.manifest import read_manifest


@dataclass
class StudySet:
    """The studies of one split, ready for training."""

    ids: list[str]
    reports: list[str]
    images: CachedImages  # images[i] (1, S, S), images[batch] (B, 1, S, S): float32 in [0, 1]
    label_targets: torch.Tensor  # (N, 14) 1.0 where the report's label is positive
    entity_targets: torch.Tensor  # (N, 75) MedKLIP exist: 1, 0, or -1 unmentioned
    label_status: np.ndarray  # (N, 56) one-hot status (blank, positive, negative, uncertain) of the 14 labels

    def __len__(self) -> int:
        return len(self.ids)


def load_split(
    folder: str | Path, split: str, image_size: int, progress: bool = True, workers: int = DEFAULT_WORKERS,
    log: Callable[[str], None] = print,
) -> StudySet:
    """One split of a manifest folder, its images fitted to `image_size` (cached on first use)."""
    folder = Path(folder)
    cache = build_image_cache(folder, image_size, workers, progress, log)
    skipped = CachedImages.skipped(cache)
    rows, records, unreadable = [], [], 0
    for row, record in enumerate(read_manifest(folder)):
        if record["split"] != split:
            continue
        if row in skipped:
            unreadable += 1
            continue
        rows.append(row)
        records.append(record)
    if unreadable:
        log(f"{split}: {unreadable} studies left out, their images unreadable (see {cache / 'cache.json'})")
    if not records:
        raise ValueError(f"{folder / 'manifest.jsonl'} has no studies with a readable image in split {split!r}")
    labels = [[float(r["labels"].get(name) == "positive") for name in CHEXBERT_LABELS] for r in records]
    entities = [dense_triplets([Triplet(**t) for t in r["triplets"]])[0] for r in records]
    return StudySet(
        ids=[r["id"] for r in records],
        reports=[without_markers(r["report"]) for r in records],  # no model ever learns "XXXX" or "___"
        images=CachedImages(cache, rows),
        label_targets=torch.tensor(labels),
        entity_targets=torch.from_numpy(np.stack(entities).astype(np.int64)),
        label_status=status_vectors([r["labels"] for r in records]),
    )


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def findings_first(report: str) -> str:
    """The report with its sentences that state a finding (a positive label other than No Finding)
    moved to the front, otherwise in their order and words (by the rules labeler).

    The demo trains its small language model on reports in this order, so that a draft commits to
    the suggested findings in its first words instead of reaching them, rarely, after the normal
    sentences that open most reports.
    """
    sentences = [s for s in _SENTENCE_BREAK.split(report.strip()) if s]
    finding = [any(v == "positive" for k, v in label_report(s).items() if k != "No Finding") for s in sentences]
    return " ".join([s for s, f in zip(sentences, finding) if f] + [s for s, f in zip(sentences, finding) if not f])
