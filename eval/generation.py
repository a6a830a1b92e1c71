"""Predictions for `rrg-eval` on a data split: a bundle's drafts, or one of two baselines.

Every function returns prediction records `{"id", "prediction", "reference"}` (plus `neighbors`,
the ids of the retrieved training studies, when a bundle made them), ready for scoring.

- drafts: the bundle's full model, greedy decoding (`LocalDrafter`).
- `nearest` baseline: the report of the top retrieved training study, no language model; a draft
  that does not beat it has learnt nothing beyond retrieval.
- `majority` baseline: the most frequent training report for every study; on IU X-Ray that is a
  normal report, which scores well on BLEU and poorly on clinical efficacy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval.cosine_index import Neighbor
from rrg.bundle import Bundle
from rrg.data.imaging import load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter, LocalDrafter
from rrg.model.generation import SamplingSettings

BASELINES = ("majority", "nearest")


@dataclass(frozen=True)
class Study:
    """One study of a data folder: its reference report and image file."""

    id: str
    report: str
    image: Path


def read_studies(data: Path, split: str, limit: int | None = None) -> list[Study]:
    """The studies of one split of a data folder's manifest.jsonl, the first `limit` if given."""
    records = read_manifest(data)
    studies = [Study(r["id"], r["report"], data / r["image"]) for r in records if r["split"] == split]
    if not studies:
        splits = ", ".join(sorted({r["split"] for r in records})) or "none"
        raise ValueError(f"no studies in split {split!r} of {data} (its splits: {splits})")
    return studies[:limit] if limit else studies


def majority_report(data: Path) -> str:
    """The most frequent report text of the train split (whitespace-normalised; ties: smallest text)."""
    counts = Counter(" ".join(r["report"].split()) for r in read_manifest(data) if r["split"] == "train")
    if not counts:
        raise ValueError(f"no train studies in {data}: the majority baseline needs them")
    return min(counts, key=lambda text: (-counts[text], text))


def majority_predictions(data: Path, studies: Sequence[Study]) -> list[dict]:
    """Every study gets the train split's most frequent report."""
    report = majority_report(data)
    return [{"id": s.id, "prediction": report, "reference": s.report} for s in studies]


def _decode(study: Study) -> np.ndarray:
    try:
        return load_image(study.image).pixels
    except (OSError, ValueError) as error:
        # Name the study: the decoder's own message does not know which one it was reading.
        raise ValueError(f"study {study.id}: cannot read image {study.image}: {error}") from error


# A batch of decoded images in, one (prediction, neighbours) pair per image out.
BatchPredictor = Callable[[list[np.ndarray]], list[tuple[str, list[Neighbor]]]]


# Finished records, a batch at a time, as they are made (the resumable predictions.jsonl).
OnDone = Callable[[list[dict]], None]


def _predict_in_batches(
    studies: Sequence[Study], predict: BatchPredictor, batch_size: int, progress: bool, what: str,
    on_done: OnDone | None, done_before: int,
) -> list[dict]:
    records = []
    with tqdm(
        total=done_before + len(studies), initial=done_before, desc=what, unit="study", disable=not progress
    ) as bar:
        for start in range(0, len(studies), batch_size):
            batch = studies[start : start + batch_size]
            outputs = predict([_decode(s) for s in batch])
            finished = [
                {
                    "id": s.id,
                    "prediction": text,
                    "reference": s.report,
                    "neighbors": [n.id for n in neighbors],
                }
                for s, (text, neighbors) in zip(batch, outputs)
            ]
            if on_done is not None:
                on_done(finished)
            records += finished
            bar.update(len(batch))
    return records


def draft_predictions(
    bundle: Bundle,
    studies: Sequence[Study],
    batch_size: int = 8,
    max_tokens: int = 128,
    progress: bool = True,
    on_done: OnDone | None = None,
    done_before: int = 0,
) -> list[dict]:
    """The bundle's greedy drafts for the studies' images.

    on_done: called with each finished batch's records; done_before: studies an earlier run of
    the same evaluation finished (they count in the progress bar).
    """
    drafter = LocalDrafter(bundle)
    # The default temperature 0 decodes greedily, so the same bundle always gets the same scores.
    settings = SamplingSettings(max_tokens=max_tokens)

    def predict(images: list[np.ndarray]) -> list[tuple[str, list[Neighbor]]]:
        return [(d.text, d.neighbors) for d in drafter.draft(images, settings)]

    return _predict_in_batches(studies, predict, batch_size, progress, "drafting", on_done, done_before)


def nearest_predictions(
    bundle: Bundle, studies: Sequence[Study], batch_size: int = 8, progress: bool = True,
    on_done: OnDone | None = None, done_before: int = 0,
) -> list[dict]:
    """Each study gets the report of its top retrieved training study (no language model)."""
    drafter = Drafter(bundle)

    def predict(images: list[np.ndarray]) -> list[tuple[str, list[Neighbor]]]:
        return [(p.neighbors[0].report, p.neighbors) for p in drafter.plan(images)]

    return _predict_in_batches(studies, predict, batch_size, progress, "retrieving", on_done, done_before)
