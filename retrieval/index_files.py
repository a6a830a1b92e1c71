"""Open an index folder of any kind: its `index.json` names the kind, which names the class."""

from __future__ import annotations

import json
from pathlib import Path

from retrieval.cosine_index import CosineIndex
from retrieval.faiss_device import DEVICES
from retrieval.hyperbolic_index import HyperbolicIndex
from retrieval.hyperbolic_ivf import HyperbolicIVFIndex
from retrieval.reference_reports import META_FILE

INDEX_KINDS = {cls.kind: cls for cls in (CosineIndex, HyperbolicIndex, HyperbolicIVFIndex)}


def index_kind(folder: str | Path) -> str:
    """The kind an index folder holds; FileNotFoundError or ValueError says what is wrong."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"index folder {folder} lacks {META_FILE}")
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path} is not a JSON object naming the index kind") from error
    if kind not in INDEX_KINDS:
        raise ValueError(f"{path} names index kind {kind!r}; known kinds: {', '.join(INDEX_KINDS)}")
    return kind


def open_index(folder: str | Path, device: str = "cpu") -> CosineIndex | HyperbolicIndex | HyperbolicIVFIndex:
    """The index saved in `folder`, of whichever kind it is, searching on `device` ("cpu" or "gpu")."""
    if device not in DEVICES:
        raise ValueError(f"index device must be one of {', '.join(DEVICES)}, got {device!r}")
    index = INDEX_KINDS[index_kind(folder)].load(folder)
    if device == "gpu":
        index.to_gpus()
    return index
