"""The image side: an open_clip image tower (a ViT, or a timm trunk such as BiomedCLIP's), and heads
that read findings off its embedding.

The encoder is built from an open_clip model config kept as a dict, so a bundle carries its own config
and never depends on open_clip's registry or a model hub. `rrg.model.towers.resolve_tower` finds that
config and the weights from `rrg.config.VisionConfig`: `open_clip_model` (a config shipped in
rrg/model/configs/open_clip/, an open_clip registry name, or "hf-hub:org/name") and `pretrained` (None:
random weights, grey normalised as mean 0.5, std 0.25; else an open_clip tag, an "hf-hub:org/name"
repo, a checkpoint file or a folder in the hub's layout, with the tower's own mean/std). It stores the
open_clip config actually used plus "preprocess_cfg" (mean, std, image size) and "source"; the bundle's
vision/ part keeps that dict with the weights, so serving rebuilds the tower offline.

The text tower is built and saved with the image tower when it is open_clip's own transformer:
MedFuse-CLIP pre-training (rrg/training/contrastive.py) trains both towers of the same model. A
Hugging Face text tower (BiomedCLIP's PubMedBERT) is not kept: building it needs the hub.

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
import open_clip.model
import torch
from torch import nn

from prompts.vocabulary import CHEXBERT_LABELS, MEDKLIP_ENTITIES

# Grayscale radiographs in [0, 1] for a tower trained here from random weights: centre and scale them,
# then repeat to the 3 channels a ViT takes. A pretrained tower gets its own per-channel mean and std.
_PIXEL_MEAN, _PIXEL_STD = 0.5, 0.25
# What rrg adds to the open_clip model config it stores; the rest is open_clip's, passed to its classes.
PREPROCESS, SOURCE = "preprocess_cfg", "source"


def open_clip_config(name: str) -> dict[str, Any]:
    """A vision-language model config shipped in rrg/model/configs/open_clip/."""
    path = resources.files("rrg.model").joinpath(f"configs/open_clip/{name}.json")
    if not path.is_file():
        raise ValueError(f"no open_clip config {name!r} in rrg/model/configs/open_clip/")
    return json.loads(path.read_text())


def square_side(size: Any, what: str) -> int:
    """The side of a square size (an int or a pair), or an error saying `what` is not square."""
    sides = (size, size) if isinstance(size, int) else tuple(size)
    if len(sides) != 2 or sides[0] != sides[1]:
        raise ValueError(f"{what}: only square images are supported, not {size!r}")
    return int(sides[0])


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
    tokens: torch.Tensor  # (B, N, W) patch tokens, N = grid^2 = (image_size / patch_size)^2


class ImageTower(nn.Module):
    """The image tower of an open_clip model whose text tower is not kept (a Hugging Face text model,
    or CoCa's decoder): `visual`, named as in the CLIP it comes from (visual.*)."""

    def __init__(self, embed_dim: int, vision_cfg: dict[str, Any], quick_gelu: bool = False):
        super().__init__()
        # open_clip's own builder of a CLIP's image tower (ViT, timm trunk), without the text side.
        self.visual = open_clip.model._build_vision_tower(embed_dim, vision_cfg, quick_gelu)

    def encode_text(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise ValueError(
            "this vision tower keeps no text tower (its open_clip text tower is a Hugging Face model): "
            "MedFuse-CLIP pre-training (training.clip_epochs > 0) needs an open_clip text transformer"
        )


class VisionEncoder(nn.Module):
    """An open_clip image tower over grayscale radiographs, returning the pooled embedding and the patch
    tokens of one forward pass: open_clip's ViT (`output_tokens`) or a timm trunk (its last features
    without the class/register tokens, pooled by timm and open_clip's head as open_clip does).

    Attributes other modules read: `embed_dim` (E, pooled), `token_width` (W), `grid` (tokens per side)
    and `image_size` (pixels per side).
    """

    def __init__(self, clip_config: dict[str, Any]):
        super().__init__()
        self.clip_config = clip_config
        model = {k: v for k, v in clip_config.items() if k not in (PREPROCESS, SOURCE)}
        custom_text = bool(model.pop("custom_text", False))
        vision_cfg = dict(model.pop("vision_cfg"), output_tokens=True)
        self.timm = bool(vision_cfg.get("timm_model_name"))
        if not self.timm and isinstance(vision_cfg.get("layers"), list | tuple):
            raise ValueError("open_clip ResNet image towers give no patch tokens: use a ViT or a timm tower")
        if not self.timm and (vision_cfg.get("attentional_pool") or vision_cfg.get("pool_type", "tok") not in ("tok", "avg")):
            raise ValueError("an open_clip ViT with attentional or no pooling gives no patch tokens on a grid")
        with _quiet_open_clip():
            if has_open_clip_text_tower(clip_config):
                clip_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
                self.clip = clip_class(vision_cfg=vision_cfg, **model)
            else:
                self.clip = ImageTower(model["embed_dim"], vision_cfg, model.get("quick_gelu", False))
        self.embed_dim = model["embed_dim"]
        visual = self.clip.visual
        if self.timm:
            self.image_size = square_side(vision_cfg.get("image_size", 224), "the tower's image_size")
            self.token_width, self.grid, self._prefix_tokens = _timm_geometry(visual.trunk, self.image_size)
        else:
            self.image_size = square_side(visual.image_size, "the tower's image_size")
            self.token_width = visual.transformer.width
            self.grid = square_side(visual.grid_size, "the tower's patch grid")
        preprocess = clip_config.get(PREPROCESS)
        mean = std = None
        if preprocess:  # a pretrained tower: its per-channel statistics (random towers keep 0.5 / 0.25)
            mean = torch.tensor(preprocess["mean"], dtype=torch.float32).view(1, 3, 1, 1)  # cpu: a buffer
            std = torch.tensor(preprocess["std"], dtype=torch.float32).view(1, 3, 1, 1)  # cpu: a buffer
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def has_text_tower(self) -> bool:
        """Whether the CLIP's text tower is kept (open_clip's own transformer)."""
        return not isinstance(self.clip, ImageTower)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) grey in [0, 1] -> (B, 3, H, W) normalised as the tower was trained."""
        if self.pixel_mean is None:
            return ((images - _PIXEL_MEAN) / _PIXEL_STD).expand(-1, 3, -1, -1)
        return (images.expand(-1, 3, -1, -1) - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor) -> VisionOutput:
        """images: (B, 1, H, W) or (B, H, W) in [0, 1]."""
        if images.dim() == 3:
            images = images[:, None]
        x = self.pixels(images)  # (B, 3, H, W)
        if not self.timm:
            pooled, tokens = self.clip.visual(x)  # (B, E), (B, N, W)
            return VisionOutput(pooled=pooled, tokens=tokens)
        visual = self.clip.visual
        features = visual.trunk.forward_features(x)  # (B, prefix + N, W), or (B, W, g, g) for a conv trunk
        pooled = visual.head(visual.trunk.forward_head(features))  # what open_clip's TimmModel returns
        if features.dim() == 4:
            tokens = features.flatten(2).transpose(1, 2)
        else:
            tokens = features[:, self._prefix_tokens :]
        return VisionOutput(pooled=pooled, tokens=tokens)


def has_open_clip_text_tower(clip_config: dict[str, Any]) -> bool:
    """Whether the config's text tower is open_clip's own transformer (built offline from the config)."""
    return "hf_model_name" not in clip_config.get("text_cfg", {}) and "multimodal_cfg" not in clip_config


def _timm_geometry(trunk: nn.Module, image_size: int) -> tuple[int, int, int]:
    """(token width, grid side, prefix tokens) of a timm trunk at this image size."""
    patch_embed = getattr(trunk, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "grid_size", None) is not None:
        if tuple(patch_embed.img_size) != (image_size, image_size):
            raise ValueError(
                f"the timm trunk takes {tuple(patch_embed.img_size)} images but its open_clip config says {image_size}"
            )
        grid = square_side(patch_embed.grid_size, "the timm trunk's patch grid")
    else:
        grid = image_size // trunk.feature_info[-1]["reduction"]
    return int(trunk.num_features), grid, int(getattr(trunk, "num_prefix_tokens", 0))


def tower_blocks(encoder: VisionEncoder) -> tuple[nn.ModuleList, list[nn.Module | nn.Parameter]]:
    """The image tower's transformer blocks, and what follows them: its final norm and projection
    (ViT: ln_post and proj; timm: the trunk's norm, fc_norm, attention pool and head, and open_clip's head)."""
    visual = encoder.clip.visual
    if not encoder.timm:
        after = [visual.ln_post, visual.proj, visual.attn_pool]
        return visual.transformer.resblocks, [m for m in after if m is not None]
    trunk = visual.trunk
    blocks = getattr(trunk, "blocks", None)
    if blocks is None:
        raise ValueError(f"the timm trunk {type(trunk).__name__} has no transformer blocks (trunk.blocks) to unfreeze")
    after = [getattr(trunk, name, None) for name in ("norm", "fc_norm", "attn_pool", "head")] + [visual.head]
    return blocks, [m for m in after if m is not None]


def freeze_tower(encoder: VisionEncoder, unfreeze_last_blocks: int = 0) -> None:
    """Freeze the image tower (`vision.freeze`): no gradient for its parameters, except, when
    unfreeze_last_blocks > 0, its last N transformer blocks and its final norm and projection
    (`tower_blocks`). The text tower, kept for MedFuse-CLIP pre-training, is left as it is."""
    visual = encoder.clip.visual
    for parameter in visual.parameters():
        parameter.requires_grad_(False)
    if not unfreeze_last_blocks:
        return
    blocks, after = tower_blocks(encoder)
    if unfreeze_last_blocks > len(blocks):
        raise ValueError(f"vision.unfreeze_last_blocks is {unfreeze_last_blocks} but the tower has {len(blocks)} blocks")
    for part in [*blocks[len(blocks) - unfreeze_last_blocks :], *after]:
        for parameter in [part] if isinstance(part, nn.Parameter) else part.parameters():
            parameter.requires_grad_(True)


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
        self.register_buffer("thresholds", torch.ones(len(CHEXBERT_LABELS)))  # cpu: a buffer

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 14) and (B, 75)."""
        return self.labels(pooled), self.entities(pooled)
