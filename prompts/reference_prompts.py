"""REVTAF's reference prompts as text, and their encodings cached (section 3.4).

- GRPs (global reference prompts): the sentences of the retrieved reference reports, F_t^g (N, d)
  with N sentences at most.
- LRPs (local reference prompts): one MedKLIP triplet per entity, eq. 8-9, "effusion at left
  costophrenic: present", F_t^l (75, d). Unmentioned entities read as absent, as an image the
  entity head scores below threshold does. The position of each entity comes either from
  (a) the triplets of a report (`report_lrp_texts`), or
  (b) where only existence is known (an entity head predicts no position), the entity's most
  common position in the training reports (`position_prior`, `predicted_lrp_texts`).
  rrg's bundles use (b) in training and at inference alike, so that the texts a model learns from
  are the texts it will see; (a) is for a model that predicts positions too.
- `PromptTextCache`: every text encoded once (the LRP vocabulary and the reference reports'
  sentences), so a request looks vectors up instead of running the text encoder.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file

from prompts.report_text import split_sentences
from prompts.triplet_phrases import DEFAULT_POSITION
from prompts.triplets import (
    ABSENT,
    ENTITY_INDEX,
    POSITION_INDEX,
    PRESENT,
    Triplet,
    extract_triplets,
    triplet_text,
)
from prompts.vocabulary import MEDKLIP_ENTITIES

# --- GRPs ----------------------------------------------------------------------------------------


def grp_sentences(reports: Sequence[str], max_sentences: int) -> list[str]:
    """Sentences of the retrieved reports, nearest report first, each sentence once, at most max_sentences."""
    sentences = dict.fromkeys(s for report in reports for s in split_sentences(report))
    return list(sentences)[:max_sentences]


# --- LRPs ----------------------------------------------------------------------------------------


def position_prior_of_triplets(triplets: Iterable[Triplet]) -> dict[str, str]:
    """For every entity, its most common position among these triplets (ties: vocabulary order).

    Entities never seen take the extractor's default position, else "unspecified".
    """
    counts = Counter((t.entity, t.position) for t in triplets)
    prior = {e: DEFAULT_POSITION.get(e, "unspecified") for e in MEDKLIP_ENTITIES}
    best: dict[str, tuple[int, int]] = {}
    for (entity, position), n in counts.items():
        rank = (n, -POSITION_INDEX[position])
        if rank > best.get(entity, (0, 0)):
            best[entity], prior[entity] = rank, position
    return prior


def position_prior(reports: Iterable[str]) -> dict[str, str]:
    """For every entity, its most common position in these (training) reports."""
    return position_prior_of_triplets(t for report in reports for t in extract_triplets(report))


def lrp_texts(entity_exists: Sequence[int], entity_positions: Mapping[str, str]) -> list[str]:
    """The 75 LRP texts in MedKLIP entity order (eq. 8-9).

    entity_exists: (75,) 1 present, 0 absent, -1 unmentioned (read as absent); entity_positions:
    entity -> position, for every entity.
    """
    if len(entity_exists) != len(MEDKLIP_ENTITIES):
        raise ValueError(
            f"need one exist value per MedKLIP entity ({len(MEDKLIP_ENTITIES)}), got {len(entity_exists)}"
        )
    return [
        triplet_text(Triplet(entity, entity_positions[entity], PRESENT if int(exist) == PRESENT else ABSENT))
        for entity, exist in zip(MEDKLIP_ENTITIES, entity_exists)
    ]


def report_lrp_texts(triplets: Sequence[Triplet], prior: Mapping[str, str]) -> list[str]:
    """(a) The LRP texts of a report's triplets: an entity present anywhere is present, at the first
    position it is present at; else absent at its first absent position; unmentioned ones at the prior."""
    exists = [ABSENT] * len(MEDKLIP_ENTITIES)
    positions = dict(prior)
    for exist in (ABSENT, PRESENT):  # present last, so that it wins
        for t in reversed(triplets):  # reversed: the first one in report order is written last
            if t.exist == exist:
                exists[ENTITY_INDEX[t.entity]], positions[t.entity] = exist, t.position
    return lrp_texts(exists, positions)


def predicted_lrp_texts(
    entity_probabilities: Sequence[float], prior: Mapping[str, str], threshold: float = 0.5
) -> list[str]:
    """(b) The LRP texts of an image: the entity head's (75,) probabilities thresholded, at the prior."""
    return lrp_texts([PRESENT if float(p) >= threshold else ABSENT for p in entity_probabilities], prior)


def lrp_vocabulary(prior: Mapping[str, str], triplets: Iterable[Triplet] = ()) -> list[str]:
    """Every LRP text the model can meet: each entity at its prior position and at every position
    it has in `triplets` (the training reports'), present and absent. Hundreds, not 75 x 51 x 2."""
    places = {(e, prior[e]) for e in MEDKLIP_ENTITIES} | {(t.entity, t.position) for t in triplets}
    ordered = sorted(places, key=lambda p: (ENTITY_INDEX[p[0]], POSITION_INDEX[p[1]]))
    return [triplet_text(Triplet(e, p, exist)) for e, p in ordered for exist in (PRESENT, ABSENT)]


# --- the cache -----------------------------------------------------------------------------------


class TextEncoder(Protocol):
    """What the cache needs of an encoder (`prompts.text_encoder.SentenceEncoder` is one)."""

    name: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor: ...


class PromptCacheMiss(KeyError):
    """Texts not in the cache, and no encoder attached to encode them."""


class PromptTextCache:
    """Prompt texts -> unit vectors (n, d) from one text encoder, encoded once each."""

    _TEXTS_FILE, _VECTORS_FILE = "prompt_texts.json", "prompt_vectors.safetensors"

    def __init__(self, encoder_name: str, dim: int, encoder: TextEncoder | None = None):
        self.encoder_name, self.dim = encoder_name, dim
        self._index: dict[str, int] = {}
        self._vectors = torch.empty(0, dim, device="cpu")  # (n, d), on the CPU whatever the encoder's
        self._lock = threading.Lock()  # a server may look up from several threads
        self.encoder: TextEncoder | None = None
        if encoder is not None:
            self.attach(encoder)

    @classmethod
    def build(cls, encoder: TextEncoder, texts: Iterable[str], batch_size: int = 64) -> PromptTextCache:
        """A cache of these texts (LRP vocabulary, reference report sentences), encoder attached."""
        cache = cls(encoder.name, encoder.dim, encoder)
        cache.add(texts, batch_size)
        return cache

    def attach(self, encoder: TextEncoder) -> None:
        """Use this encoder for misses; it must be the one the cache was built with."""
        if (encoder.name, encoder.dim) != (self.encoder_name, self.dim):
            raise ValueError(
                f"prompt cache holds vectors of encoder {self.encoder_name!r} (d={self.dim}), not of "
                f"{encoder.name!r} (d={encoder.dim}): vectors of two encoders cannot be mixed; "
                "rebuild the cache"
            )
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self._index)

    @property
    def device(self) -> torch.device:
        """Where the vectors live (the CPU, whatever the encoder's device)."""
        return self._vectors.device

    def __contains__(self, text: str) -> bool:
        return text in self._index

    @property
    def texts(self) -> list[str]:
        """The cached texts, in row order."""
        with self._lock:
            return list(self._index)

    def add(self, texts: Iterable[str], batch_size: int = 64) -> None:
        """Encode and keep the texts not cached yet."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._index]
            if not missing:
                return
            if self.encoder is None:
                raise PromptCacheMiss(
                    f"{len(missing)} prompt text(s) not in the cache and no text encoder attached "
                    f"(first: {missing[0]!r}); attach encoder {self.encoder_name!r} or rebuild the cache"
                )
            vectors = self.encoder.encode(missing, batch_size=batch_size).to("cpu", torch.float32)  # (m, d)
            first_row = len(self._index)
            # Rows before keys: a lookup in another thread never finds a key without its row.
            self._vectors = torch.cat([self._vectors, vectors])
            self._index.update({t: first_row + i for i, t in enumerate(missing)})

    def lookup(self, texts: Sequence[str]) -> torch.Tensor:
        """Vectors (n, d) on the CPU, in order; misses are encoded and kept if an encoder is attached."""
        if any(t not in self._index for t in texts):
            self.add(texts)
        vectors = self._vectors
        rows = torch.tensor([self._index[t] for t in texts], dtype=torch.long, device=vectors.device)
        return vectors.index_select(0, rows)  # (n, d)

    def state_dict(self) -> dict:
        """Encoder name and width, texts in row order, and their vectors (n, d)."""
        with self._lock:
            texts, vectors = list(self._index), self._vectors
        return {"encoder_name": self.encoder_name, "dim": self.dim, "texts": texts, "vectors": vectors}

    @classmethod
    def from_state_dict(cls, state: Mapping, encoder: TextEncoder | None = None) -> PromptTextCache:
        vectors, texts = state["vectors"], list(state["texts"])
        if vectors.shape != (len(texts), state["dim"]) or len(set(texts)) != len(texts):
            raise ValueError(
                f"inconsistent prompt cache: {len(texts)} texts ({len(set(texts))} distinct), "
                f"vectors of shape {tuple(vectors.shape)}, dim {state['dim']}"
            )
        cache = cls(state["encoder_name"], int(state["dim"]), encoder)
        cache._index = {t: i for i, t in enumerate(texts)}
        cache._vectors = vectors.to("cpu", torch.float32).contiguous()
        return cache

    def save(self, folder: str | Path) -> None:
        """Write the texts and encoder (JSON) and the vectors (safetensors) into a folder, for a bundle."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        save_file({"vectors": state.pop("vectors").contiguous()}, str(folder / self._VECTORS_FILE))
        (folder / self._TEXTS_FILE).write_text(json.dumps(state, ensure_ascii=False))

    @classmethod
    def load(cls, folder: str | Path, encoder: TextEncoder | None = None) -> PromptTextCache:
        folder = Path(folder)
        state = json.loads((folder / cls._TEXTS_FILE).read_text())
        state["vectors"] = load_file(str(folder / cls._VECTORS_FILE))["vectors"]
        return cls.from_state_dict(state, encoder)


def pad_prompts(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-sample prompts (n_i, d) into (B, P, d), P = max n_i, with mask (B, P) True on real prompts.

    A sample with no prompt gets an all-False mask row: attention over it must be guarded by the caller.
    """
    if not rows:
        raise ValueError("pad_prompts needs at least one row")
    dims = {r.shape[-1] for r in rows}
    if len(dims) != 1 or any(r.dim() != 2 for r in rows):
        raise ValueError(
            f"prompt rows must be (n_i, d) with one d, got shapes {[tuple(r.shape) for r in rows]}"
        )
    longest = max(r.shape[0] for r in rows)
    padded = rows[0].new_zeros(len(rows), longest, dims.pop())  # (B, P, d)
    mask = torch.zeros(len(rows), longest, dtype=torch.bool, device=rows[0].device)  # (B, P)
    for b, r in enumerate(rows):
        padded[b, : r.shape[0]] = r
        mask[b, : r.shape[0]] = True
    return padded, mask
