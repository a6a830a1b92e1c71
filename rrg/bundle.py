"""A bundle: everything a trained model needs, in one folder (DESIGN.md section 8). This module
stores and reads the parts; `rrg.model.factory` builds modules from them.

    config.json          the ModelConfig, the widths its modules were built with ("widths": see
                         `rrg.config.ModelWidths`), and what it was trained on and how
                         ("demo": true and the phantom notice for the demo model)
    llm/                 the base language model and its tokenizer, Hugging Face format
    lora/                the LoRA adapter, PEFT format
    vision/              the open_clip model: open_clip_config.json + model.safetensors (for a pretrained
                         tower the config also records its mean/std/image size and source: see
                         `save_vision`)
    modules.safetensors  the finding heads ("heads.*"), the visual prompt modules (the projector,
                         "projector.*"; with fusion the Sinkhorn branches, "grp_attention.*" and
                         "lrp_attention.*"; with clues "clues.*" and "clue_projector.*") and, for
                         hyperbolic retrieval, the LRE ("retriever.*")
    index/               the retrieval index over the reference reports (cosine or hyperbolic)
    prompts/             with fusion or clues: the encoded text prompts (rrg/model/prompt_texts.py)

Each part loads on its own, so a serving front can build prompts (vision, heads, projector,
index and the LLM's token embeddings) without loading the language model itself.

Format 3 records the widths; a bundle of format 2 (before) is read with its widths taken from the
parts that recorded them (the vision tower's open_clip config, the language model's config.json,
the prompt encodings' width), and an older one is refused with how to train it again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rrg.config import ModelConfig, ModelWidths

# 2: the finding heads carry suggestion thresholds and the prompt names the suggested findings.
# 3: config.json records the modules' widths.
BUNDLE_FORMAT = 3
READABLE_FORMATS = (2, 3)
CONFIG, LLM, LORA, VISION, MODULES, INDEX = "config.json", "llm", "lora", "vision", "modules.safetensors", "index"
PROMPTS = "prompts"  # with fusion or clues: the encoded text prompts (rrg/model/prompt_texts.py)
_OPEN_CLIP_CONFIG, _VISION_WEIGHTS = "open_clip_config.json", "model.safetensors"
# The prefixes of modules.safetensors' parts; the visual prompt's tensors are the rest.
_HEADS, _RETRIEVER = "heads", "retriever"


class BundleError(ValueError):
    """A folder that is not a complete bundle, or whose parts do not fit together."""


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


def save_vision(folder: Path, clip_config: dict[str, Any], encoder: nn.Module) -> None:
    """vision/: the open_clip config and the encoder's weights.

    clip_config is the encoder's resolved config (`VisionEncoder.clip_config`): the open_clip model config
    it was built from and, for a pretrained tower, "preprocess_cfg" (its per-channel mean and std and its
    image size) and "source" (the open_clip model, pretrained tag/repo/file and where config and weights
    came from). With the weights here, the tower is rebuilt from this alone, offline."""
    target = folder / VISION
    target.mkdir(parents=True, exist_ok=True)
    (target / _OPEN_CLIP_CONFIG).write_text(json.dumps(clip_config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, target / _VISION_WEIGHTS)


def read_vision(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """vision/'s open_clip config and weights (of a bundle, or of one still being trained). A config with
    no "preprocess_cfg" (every bundle before pretrained towers) is a random-init tower: mean 0.5, std 0.25."""
    return json.loads((folder / VISION / _OPEN_CLIP_CONFIG).read_text()), load_file(folder / VISION / _VISION_WEIGHTS)


def save_modules(folder: Path, heads: nn.Module, visual_prompt: nn.Module, enhancer: nn.Module | None = None) -> None:
    """modules.safetensors: heads.*, the visual prompt's parts and, for hyperbolic retrieval, retriever.*."""
    tensors = {f"{_HEADS}.{k}": v for k, v in heads.state_dict().items()}
    tensors |= visual_prompt.state_dict()  # projector.*, grp_attention.*, lrp_attention.*, clues.*, ...
    if enhancer is not None:
        tensors |= {f"{_RETRIEVER}.{k}": v for k, v in enhancer.state_dict().items()}
    # clone: the LRE's layers share their ball's curvature tensor, which safetensors will not store twice
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, folder / MODULES)


def write_config(folder: Path, config: ModelConfig, widths: dict[str, int | None], **facts: Any) -> None:
    """config.json: the model config, the bundle format, the modules' widths and facts about training."""
    data = {**config.to_dict(), "format": BUNDLE_FORMAT, "widths": widths, **facts}
    (folder / CONFIG).write_text(json.dumps(data, indent=2) + "\n")


@dataclass
class Bundle:
    """A bundle folder, its config and widths; its parts are read on demand."""

    path: Path
    config: ModelConfig
    facts: dict[str, Any]
    widths_recorded: dict[str, int | None] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Check the folder holds every part and read its config."""
        path = Path(path)
        missing = [name for name in (CONFIG, LLM, LORA, VISION, MODULES, INDEX) if not (path / name).exists()]
        if missing:
            raise BundleError(f"{path} is not a complete rrg bundle: missing {', '.join(missing)}")
        data = json.loads((path / CONFIG).read_text())
        if data.get("format", 1) not in READABLE_FORMATS:
            raise OutdatedBundleError(
                f"{path} is a bundle of format {data.get('format', 1)}; this rrg reads formats "
                f"{', '.join(map(str, READABLE_FORMATS))} (since format 2 its prompts name the suggested findings): "
                "train it again with `rrg train --force`"
            )
        fields = set(ModelConfig.__dataclass_fields__)
        config = ModelConfig.from_dict({k: v for k, v in data.items() if k in fields})
        if config.uses_text_prompts and not (path / PROMPTS).is_dir():
            raise BundleError(f"{path} is not a complete rrg bundle: its config fuses text prompts but {PROMPTS}/ is missing")
        facts = {k: v for k, v in data.items() if k not in fields and k != "widths"}
        return cls(path, config, facts, data.get("widths"))

    @property
    def llm_path(self) -> Path:
        return self.path / LLM

    @property
    def lora_path(self) -> Path:
        return self.path / LORA

    def lora_name(self) -> str:
        """The adapter's name as engines and /v1/models show it."""
        return f"{self.config.name}-lora"

    def vision_config(self) -> dict[str, Any]:
        """The open_clip config the vision tower was built from."""
        return read_vision(self.path)[0]

    def vision_tensors(self) -> dict[str, torch.Tensor]:
        return read_vision(self.path)[1]

    @cached_property
    def _modules(self) -> dict[str, torch.Tensor]:
        return load_file(self.path / MODULES)

    def module_tensors(self, part: str | None) -> dict[str, torch.Tensor]:
        """The tensors of one part of modules.safetensors, without its prefix: "heads", "retriever", or
        None for the visual prompt's (the rest)."""
        if part is None:
            return {k: v for k, v in self._modules.items() if not k.startswith((f"{_HEADS}.", f"{_RETRIEVER}."))}
        prefix = f"{part}."
        return {k[len(prefix):]: v for k, v in self._modules.items() if k.startswith(prefix)}

    @cached_property
    def widths(self) -> ModelWidths:
        """The widths the bundle's modules were built with."""
        if self.widths_recorded is not None:
            return ModelWidths.from_dict(self.widths_recorded)
        # Format 2 recorded each width in the part it belongs to, not in config.json.
        vision = self.vision_config()
        llm = json.loads((self.llm_path / "config.json").read_text())
        text = None
        if self.config.uses_text_prompts:
            text = json.loads((self.path / PROMPTS / "prompt_texts.json").read_text())["dim"]
        return ModelWidths(vision["embed_dim"], vision["vision_cfg"]["width"], llm["hidden_size"], text)
