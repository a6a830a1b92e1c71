"""`rrg index build`: (re)build a bundle's reference index from any set of studies, no retraining.

The studies come as JSON Lines of {"id", "report", "image"} (a data set's manifest.jsonl is one;
`--split` keeps one of its splits), with each image path relative to the file's folder. Both
retrieval kinds compare images, so each reference report comes with its image: the bundle's own
encoder embeds it (and, for hyperbolic retrieval, its finding heads and LRE place it on the ball).
`add=True` appends the studies to the bundle's index instead of replacing it (new ids only). A
bundle that fuses text prompts also gets the new reports' sentences encoded into its prompts/.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rrg.bundle import INDEX, PROMPTS, Bundle, replace_part
from rrg.data.deidentified import without_markers
from rrg.data.image_cache import studies_images
from rrg.data.imaging import decode_side, load_image, to_model_input
from rrg.data.jsonl import read_jsonl
from rrg.data.manifest import MANIFEST
from rrg.model import factory
from rrg.model.references import ReferenceRetriever


def read_reference_studies(path: Path, split: str | None = None) -> list[dict]:
    """The {"id", "report", "image"} records of a JSON Lines file, of one split if asked (each with its
    `row` in the file)."""
    records = [{**r, "row": row} for row, r in enumerate(read_jsonl(path, required=("id", "report", "image")))]
    if split is not None:
        records = [r for r in records if r.get("split") == split]
    if not records:
        raise ValueError(f"{path} holds no studies{f' in split {split!r}' if split else ''}")
    for record in records:
        if not all(isinstance(record[key], str) for key in ("id", "report", "image")):
            raise ValueError(f"{path}: study {record['id']!r}: id, report and image must be strings")
    return records


@torch.no_grad()
def embed_studies(bundle: Bundle, records: list[dict], folder: Path, progress: bool = True, batch: int = 64, manifest: bool = False):
    """(pooled (N, E), entity logits (N, 75)) of the studies' images, by the bundle's encoder and heads.

    manifest: the records are a data set's `manifest.jsonl`, whose images come from its image cache
    (`rrg.data.image_cache`, built if missing); those of any other reference file are decoded here, the
    same way.
    """
    encoder = factory.load_vision(bundle)
    heads = factory.load_heads(bundle)
    size = bundle.config.vision.image_size
    studies = [(r["row"], r["id"], r["image"]) for r in records]
    cached = studies_images(folder, size, studies, progress) if manifest else None
    pooled, entity_logits = [], []
    for start in tqdm(range(0, len(records), batch), desc="embedding references", unit="batch", disable=not progress):
        if cached is not None:
            pixels = cached[start : start + batch]
        else:
            pixels = torch.from_numpy(np.stack([_model_input(folder, r, size) for r in records[start : start + batch]]))[:, None]
        seen = encoder(pixels)
        pooled.append(seen.pooled)
        entity_logits.append(heads(seen.pooled)[1])
    return torch.cat(pooled), torch.cat(entity_logits)


def _model_input(folder: Path, record: dict, size: int) -> np.ndarray:
    try:
        return to_model_input(load_image(folder / record["image"], longest_side=decode_side(size)), size)
    except (OSError, ValueError) as error:
        raise ValueError(f"study {record['id']}: cannot read image {record['image']}: {error}") from error


def build_bundle_index(
    bundle_path: Path, reports: Path, split: str | None = None, add: bool = False, progress: bool = True,
    log: Callable[[str], None] = print,
) -> int:
    """Write the bundle's index over the studies of `reports` (or add them to it); the row count."""
    bundle = Bundle.open(bundle_path)
    records = read_reference_studies(reports, split)
    pooled, entity_logits = embed_studies(bundle, records, reports.parent, progress, manifest=reports.name == MANIFEST)
    ids, texts = [r["id"] for r in records], [without_markers(r["report"]) for r in records]
    retriever = factory.load_retriever(bundle)
    if add:
        retriever.index.add(retriever.embed(pooled, entity_logits), ids, texts)
    else:
        retriever = ReferenceRetriever.build(pooled, entity_logits, ids, texts, retriever.enhancer)
    replace_part(bundle.path / INDEX, retriever.index.save)
    prompt_texts = factory.load_prompt_texts(bundle)
    if prompt_texts is not None:  # encode the new references' sentences once, here, not per request
        prompt_texts.add_reports(texts)
        replace_part(bundle.path / PROMPTS, prompt_texts.save)
    log(f"{bundle.path / INDEX}: {retriever.kind} index of {len(retriever.index)} reference studies "
        f"({'added' if add else 'indexed'} {len(records)} from {reports})")
    return len(retriever.index)
