"""The image side: an open_clip vision transformer, and heads that read findings off its embedding.

The encoder is built from an open_clip model config (rrg/model/configs/open_clip/<name>.json)
kept as a dict, so a bundle carries its own config and never depends on open_clip's registry.
The text tower is built too and saved with it: MedFuse-CLIP pre-training (retrieval issue)
trains both towers of this same model.

`rrg-vit-tiny` (demo-tiny) is sized for 2 CPU cores: 128x128 input, 16-pixel patches (8x8 = 64
patch tokens), 6 layers of width 192, 2.9 M parameters: about 115 images/s forward and backward
on 2 cores, so one epoch over the 1,869 demo training phantoms takes ~16 s, and the 5-10 pixel
nodules of a 256-pixel phantom are still 2-5 pixels at 128.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import open_clip
import torch
from torch import nn

from prompts.vocabulary import CHEXBERT_LABELS, MEDKLIP_ENTITIES

# Grayscale radiographs in [0, 1]: centre and scale them, then repeat to the 3 channels a ViT takes.
_PIXEL_MEAN, _PIXEL_STD = 0.5, 0.25


def open_clip_config(name: str) -> dict[str, Any]:
    """A vision-language model config shipped in rrg/model/configs/open_clip/."""
    path = resources.files("rrg.model").joinpath(f"configs/open_clip/{name}.json")
    if not path.is_file():
        raise ValueError(f"no open_clip config {name!r} in rrg/model/configs/open_clip/")
    return json.loads(path.read_text())


@contextmanager
def _quiet_open_clip():
    # open_clip warns "No pretrained weights loaded" at the root logger for every model it builds.
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


@dataclass
class VisionOutput:
    """What the encoder sees in a batch of images."""

    pooled: torch.Tensor  # (B, E) the image embedding
    tokens: torch.Tensor  # (B, N, W) patch tokens, N = (image_size / patch_size)^2


class VisionEncoder(nn.Module):
    """open_clip's vision transformer over grayscale radiographs, returning patch tokens too."""

    def __init__(self, clip_config: dict[str, Any]):
        super().__init__()
        self.clip_config = clip_config
        vision_cfg = dict(clip_config["vision_cfg"], output_tokens=True)
        with _quiet_open_clip():
            self.clip = open_clip.CLIP(
                embed_dim=clip_config["embed_dim"], vision_cfg=vision_cfg, text_cfg=clip_config["text_cfg"]
            )
        self.image_size = vision_cfg["image_size"]
        self.token_width = vision_cfg["width"]
        self.embed_dim = clip_config["embed_dim"]
        self.grid = self.image_size // vision_cfg["patch_size"]

    def forward(self, images: torch.Tensor) -> VisionOutput:
        """images: (B, 1, H, W) or (B, H, W) in [0, 1]."""
        if images.dim() == 3:
            images = images[:, None]
        x = ((images - _PIXEL_MEAN) / _PIXEL_STD).expand(-1, 3, -1, -1)  # (B, 3, H, W)
        pooled, tokens = self.clip.visual(x)  # (B, E), (B, N, W)
        return VisionOutput(pooled=pooled, tokens=tokens)


@torch.no_grad()
def encode_images(encoder: VisionEncoder, images: torch.Tensor, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled embeddings (N, E) and patch tokens (N, P, W) of many images, a batch at a time."""
    outputs = [encoder(images[i : i + batch]) for i in range(0, len(images), batch)]
    return torch.cat([o.pooled for o in outputs]), torch.cat([o.tokens for o in outputs])


class FindingHeads(nn.Module):
    """Multi-label heads on the image embedding: the 14 CheXbert labels and the 75 MedKLIP entities."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.labels = nn.Linear(embed_dim, len(CHEXBERT_LABELS))
        self.entities = nn.Linear(embed_dim, len(MEDKLIP_ENTITIES))
        # Per label: the probability above which the label is suggested to the language model,
        # tuned on the validation split after training (rrg/model/suggested_findings.py); 1.0 = never.
        self.register_buffer("thresholds", torch.ones(len(CHEXBERT_LABELS)))

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 14) and (B, 75)."""
        return self.labels(pooled), self.entities(pooled)
