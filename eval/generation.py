"""Predictions for `rrg-eval` on a data split: a bundle's drafts, or one of two baselines.

Every function returns prediction records `{"id", "prediction", "reference"}` (plus `neighbors`,
the ids of the retrieved training studies, when a bundle made them), ready for scoring.

- drafts: the bundle's full model, greedy decoding (`LocalDrafter`), on the images of the data set's
  image cache at the bundle's size (`rrg.data.image_cache`: decoded once, the same pixels the server
  makes of the same file).
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
from rrg.data.image_cache import CachedImages, studies_images
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter, LocalDrafter
from rrg.model.generation import SamplingSettings

BASELINES = ("majority", "nearest")


@dataclass(frozen=True)
class Study:
    """One study of a data folder: its reference report and image file, and its row in the manifest."""

    id: str
    report: str
    image: Path
    data: Path
    row: int


def read_studies(data: Path, split: str, limit: int | None = None) -> list[Study]:
    """The studies of one split of a data folder's manifest.jsonl, the first `limit` if given."""
    records = read_manifest(data)
    studies = [Study(r["id"], r["report"], data / r["image"], data, row) for row, r in enumerate(records)
               if r["split"] == split]
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


def study_images(studies: Sequence[Study], size: int, progress: bool = True) -> CachedImages | None:
    """The studies' images at `size` pixels from their data set's image cache (built if missing); a
    ValueError names the first study whose image cannot be read."""
    if not studies:
        return None
    return studies_images(studies[0].data, size, [(s.row, s.id, str(s.image)) for s in studies], progress)


# A batch of decoded images in, one (prediction, neighbours) pair per image out.
BatchPredictor = Callable[[list[np.ndarray]], list[tuple[str, list[Neighbor]]]]


# Finished records, a batch at a time, as they are made (the resumable predictions.jsonl).
OnDone = Callable[[list[dict]], None]


def _predict_in_batches(
    studies: Sequence[Study], images: CachedImages, predict: BatchPredictor, batch_size: int, progress: bool,
    what: str, on_done: OnDone | None, done_before: int,
) -> list[dict]:
    records = []
    with tqdm(
        total=done_before + len(studies), initial=done_before, desc=what, unit="study", disable=not progress
    ) as bar:
        for start in range(0, len(studies), batch_size):
            batch = studies[start : start + batch_size]
            outputs = predict(list(images[start : start + len(batch)][:, 0].numpy()))
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

    images = study_images(studies, bundle.config.vision.image_size, progress)
    return _predict_in_batches(studies, images, predict, batch_size, progress, "drafting", on_done, done_before)


def nearest_predictions(
    bundle: Bundle, studies: Sequence[Study], batch_size: int = 8, progress: bool = True,
    on_done: OnDone | None = None, done_before: int = 0,
) -> list[dict]:
    """Each study gets the report of its top retrieved training study (no language model)."""
    drafter = Drafter(bundle)

    def predict(images: list[np.ndarray]) -> list[tuple[str, list[Neighbor]]]:
        return [(p.neighbors[0].report, p.neighbors) for p in drafter.plan(images)]

    images = study_images(studies, bundle.config.vision.image_size, progress)
    return _predict_in_batches(studies, images, predict, batch_size, progress, "retrieving", on_done, done_before)
