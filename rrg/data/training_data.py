"""Training data from a data set folder's `manifest.jsonl` (the demo set, or any set in its format):
images decoded once into a tensor, and the finding targets of each study."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prompts.labeler import label_report
from prompts.triplets import Triplet, dense_triplets
from prompts.vocabulary import CHEXBERT_LABELS
from retrieval.metrics import status_vectors
from rrg.data.imaging import load_image, to_model_input
from rrg.data.manifest import read_manifest


@dataclass
class StudySet:
    """The studies of one split, ready for training."""

    ids: list[str]
    reports: list[str]
    images: torch.Tensor  # (N, 1, S, S) float32 in [0, 1]
    label_targets: torch.Tensor  # (N, 14) 1.0 where the report's label is positive
    entity_targets: torch.Tensor  # (N, 75) MedKLIP exist: 1, 0, or -1 unmentioned
    label_status: np.ndarray  # (N, 56) one-hot status (blank, positive, negative, uncertain) of the 14 labels

    def __len__(self) -> int:
        return len(self.ids)


def load_split(folder: str | Path, split: str, image_size: int, progress: bool = True) -> StudySet:
    """One split of a manifest folder, with images fitted to `image_size`."""
    folder = Path(folder)
    records = [r for r in read_manifest(folder) if r["split"] == split]
    if not records:
        raise ValueError(f"{folder / 'manifest.jsonl'} has no studies in split {split!r}")
    images = np.stack(
        [
            to_model_input(load_image(folder / r["image"]), image_size)
            for r in tqdm(records, desc=f"reading {split} images", unit="image", disable=not progress)
        ]
    )
    labels = [[float(r["labels"].get(name) == "positive") for name in CHEXBERT_LABELS] for r in records]
    entities = [dense_triplets([Triplet(**t) for t in r["triplets"]])[0] for r in records]
    return StudySet(
        ids=[r["id"] for r in records],
        reports=[r["report"] for r in records],
        images=torch.from_numpy(images)[:, None],
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
