"""A bundle: everything a trained model needs, in one folder (DESIGN.md section 8).

    config.json          the ModelConfig, plus what it was trained on and how ("demo": true and
                         the phantom notice for the demo model)
    llm/                 the base language model and its tokenizer, Hugging Face format
    lora/                the LoRA adapter, PEFT format
    vision/              the open_clip model: open_clip_config.json + model.safetensors
    modules.safetensors  the finding heads ("heads.*"), the visual prompt modules (the projector,
                         "projector.*"; with fusion the Sinkhorn branches, "grp_attention.*" and
                         "lrp_attention.*"; with clues "clues.*" and "clue_projector.*") and, for
                         hyperbolic retrieval, the LRE ("retriever.*")
    index/               the retrieval index over the reference reports (cosine or hyperbolic)
    prompts/             with fusion or clues: the encoded text prompts (rrg/model/prompt_texts.py)

Each part loads on its own, so a serving front can build prompts (vision, heads, projector,
index and the LLM's token embeddings) without loading the language model itself.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from prompts.vocabulary import MEDKLIP_ENTITIES
from retrieval.index_files import index_kind, open_index
from retrieval.lre import RetrievalEnhancer
from rrg.config import ModelConfig, RetrievalConfig
from rrg.model.generator import load_llm, torch_dtype, with_merged_lora
from rrg.model.prompt import PromptEmbedder
from rrg.model.prompt_texts import PROMPTS, PromptTextEncodings, uses_text_prompts
from rrg.model.references import ReferenceRetriever
from rrg.model.vision import FindingHeads, VisionEncoder
from rrg.model.visual_prompt import VisualPrompt

# 2: the finding heads carry suggestion thresholds and the prompt names the suggested findings.
BUNDLE_FORMAT = 2
CONFIG, LLM, LORA, VISION, MODULES, INDEX = "config.json", "llm", "lora", "vision", "modules.safetensors", "index"
_EMBED_KEY = "model.embed_tokens.weight"
_TEXT_INPUTS = ("attention.phi_k.weight", "clues.clue_proj.weight")


class BundleError(ValueError):
    """A folder that is not a complete bundle."""


class OutdatedBundleError(BundleError):
    """A complete bundle written by an older rrg, in a format this one does not read."""


def replace_part(target: Path, write: Callable[[Path], None]) -> None:
    """Write a bundle part into a fresh folder, then swap it in (a kill never leaves half a part)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def save_vision(folder: Path, encoder: VisionEncoder) -> None:
    """vision/: the open_clip config and weights."""
    target = folder / VISION
    target.mkdir(parents=True, exist_ok=True)
    (target / "open_clip_config.json").write_text(json.dumps(encoder.clip_config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, target / "model.safetensors")


def save_modules(
    folder: Path, heads: FindingHeads, visual_prompt: VisualPrompt, enhancer: RetrievalEnhancer | None = None
) -> None:
    """modules.safetensors: heads.*, the visual prompt's parts and, for hyperbolic retrieval, retriever.*."""
    tensors = {f"heads.{k}": v for k, v in heads.state_dict().items()}
    tensors |= visual_prompt.state_dict()  # projector.*, grp_attention.*, lrp_attention.*, clues.*, ...
    if enhancer is not None:
        tensors |= {f"retriever.{k}": v for k, v in enhancer.state_dict().items()}
    # clone: the LRE's layers share their ball's curvature tensor, which safetensors will not store twice
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, folder / MODULES)


def new_enhancer(retrieval: RetrievalConfig) -> RetrievalEnhancer:
    """The LRE a config describes: the 75 MedKLIP entity logits in, points of the ball out."""
    return RetrievalEnhancer(len(MEDKLIP_ENTITIES), retrieval.hidden, retrieval.dim, retrieval.curvature)


def write_config(folder: Path, config: ModelConfig, **facts: Any) -> None:
    """config.json: the model config, the bundle format, and facts about its training."""
    data = {**config.to_dict(), "format": BUNDLE_FORMAT, **facts}
    (folder / CONFIG).write_text(json.dumps(data, indent=2) + "\n")


@dataclass
class Bundle:
    """A bundle folder and its config; parts are loaded on demand."""

    path: Path
    config: ModelConfig
    facts: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Check the folder holds every part and read its config."""
        path = Path(path)
        missing = [name for name in (CONFIG, LLM, LORA, VISION, MODULES, INDEX) if not (path / name).exists()]
        if missing:
            raise BundleError(f"{path} is not a complete rrg bundle: missing {', '.join(missing)}")
        data = json.loads((path / CONFIG).read_text())
        if data.get("format", 1) != BUNDLE_FORMAT:
            raise OutdatedBundleError(
                f"{path} is a bundle of format {data.get('format', 1)}; this rrg reads format {BUNDLE_FORMAT} "
                "(its prompts name the suggested findings): train it again with `rrg train --force`"
            )
        fields = set(ModelConfig.__dataclass_fields__)
        config = ModelConfig.from_dict({k: v for k, v in data.items() if k in fields})
        if uses_text_prompts(config) and not (path / PROMPTS).is_dir():
            raise BundleError(f"{path} is not a complete rrg bundle: its config fuses text prompts but {PROMPTS}/ is missing")
        return cls(path, config, {k: v for k, v in data.items() if k not in fields})

    @property
    def llm_path(self) -> Path:
        return self.path / LLM

    @property
    def lora_path(self) -> Path:
        return self.path / LORA

    def load_vision(self) -> VisionEncoder:
        clip_config = json.loads((self.path / VISION / "open_clip_config.json").read_text())
        encoder = VisionEncoder(clip_config)
        encoder.load_state_dict(load_file(self.path / VISION / "model.safetensors"))
        return encoder.eval()

    def load_heads(self, encoder: VisionEncoder, tensors: dict | None = None) -> FindingHeads:
        """The finding heads alone; tensors: modules.safetensors when already read."""
        tensors = load_file(self.path / MODULES) if tensors is None else tensors
        heads = FindingHeads(encoder.embed_dim)
        heads.load_state_dict({k[len("heads.") :]: v for k, v in tensors.items() if k.startswith("heads.")})
        return heads.eval()

    def load_modules(self, encoder: VisionEncoder) -> tuple[FindingHeads, VisualPrompt]:
        """The finding heads and the visual prompt modules."""
        tensors = load_file(self.path / MODULES)
        heads = self.load_heads(encoder, tensors)
        hidden = tensors["projector.mlp.2.weight"].shape[0]
        # the prompt encodings' width, read off the layers that take them
        text_dim = next((v.shape[1] for k, v in tensors.items() if k.endswith(_TEXT_INPUTS)), None)
        visual_prompt = VisualPrompt(self.config, encoder.token_width, hidden, text_dim)
        visual_prompt.load_state_dict(
            {k: v for k, v in tensors.items() if not k.startswith(("heads.", "retriever."))}
        )
        return heads, visual_prompt.eval()

    def load_prompt_texts(self) -> PromptTextEncodings | None:
        """The encoded text prompts, for a model that fuses them (else None)."""
        return PromptTextEncodings.load(self.path / PROMPTS, self.config) if uses_text_prompts(self.config) else None

    def load_retriever(self) -> ReferenceRetriever:
        """The index and, for hyperbolic retrieval, the LRE that embeds queries for it."""
        kind = self.config.retrieval.kind
        if index_kind(self.path / INDEX) != kind:
            raise BundleError(f"{self.path / INDEX} holds a {index_kind(self.path / INDEX)} index, but the config says {kind}")
        index = open_index(self.path / INDEX, self.config.retrieval.device)
        if kind == "cosine":
            return ReferenceRetriever(index)
        enhancer = new_enhancer(self.config.retrieval)
        tensors = load_file(self.path / MODULES)
        enhancer.load_state_dict({k[len("retriever.") :]: v for k, v in tensors.items() if k.startswith("retriever.")})
        return ReferenceRetriever(index, enhancer.eval())

    def load_tokenizer(self) -> PreTrainedTokenizerFast:
        return AutoTokenizer.from_pretrained(str(self.llm_path))

    def load_token_embedding(self) -> nn.Embedding:
        """The language model's input embedding matrix alone, read from its safetensors files."""
        for shard in sorted(self.llm_path.glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                if _EMBED_KEY in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                    return nn.Embedding.from_pretrained(handle.get_tensor(_EMBED_KEY), freeze=True)
        raise BundleError(f"no {_EMBED_KEY} in {self.llm_path}/*.safetensors")

    def load_prompt_embedder(self) -> PromptEmbedder:
        return PromptEmbedder(self.load_tokenizer(), self.load_token_embedding(), self.config.prompt)

    def load_generator(self) -> nn.Module:
        """The language model with the bundle's LoRA adapter merged into its weights, for transformers
        generation."""
        base = load_llm(self.llm_path, self.config.generator.dtype)
        return with_merged_lora(base, self.lora_path).to(torch_dtype(self.config.generator.dtype))

    def write_merged_llm(self, folder: str | Path) -> Path:
        """The language model with the adapter merged in, saved in Hugging Face format with the tokenizer
        into `folder`: for an engine that serves the bundle without LoRA."""
        folder = Path(folder)
        self.load_generator().save_pretrained(folder)
        for source in self.llm_path.iterdir():  # the tokenizer and anything else save_pretrained does not write
            if source.is_file() and not source.name.endswith(".safetensors") and not (folder / source.name).exists():
                shutil.copy2(source, folder / source.name)
        return folder

    def lora_name(self) -> str:
        """The adapter's name as engines and /v1/models show it."""
        return f"{self.config.name}-lora"
