"""Which vision tower a config names, and its weights: `resolve_tower` turns `rrg.config.VisionConfig`
(`open_clip_model`, `pretrained`) into the open_clip model config an encoder is built from (plus the
tower's "preprocess_cfg" and "source", which the bundle keeps) and a way to fetch its checkpoint;
`load_tower_weights` loads that checkpoint. Only training asks a hub; serving rebuilds a tower from the
bundle (`rrg.model.vision.VisionEncoder`).

    pretrained None            random weights; a shipped config (rrg/model/configs/open_clip/) unchanged
    an open_clip tag           open_clip's registry architecture and its tag's weights, mean and std
    "hf-hub:org/name"          the repo's open_clip_config.json (model_cfg, preprocess_cfg) and weights
    a folder                   the same layout on disk
    a checkpoint file          a state dict (.pt/.pth/.bin/.safetensors) for `open_clip_model`'s architecture
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import open_clip
import open_clip.factory
import open_clip.pretrained
import open_clip.transform

from rrg.model.vision import PREPROCESS, SOURCE, VisionEncoder, open_clip_config, square_side

if TYPE_CHECKING:
    from rrg.config import VisionConfig

_HUB = "hf-hub:"
_CONFIG_FILE = "open_clip_config.json"
# A folder in the hub's layout: the first of these present holds the weights (open_clip's names).
_FOLDER_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _shipped(name: str) -> bool:
    return resources.files("rrg.model").joinpath(f"configs/open_clip/{name}.json").is_file()


def architecture(name: str) -> tuple[dict[str, Any], str]:
    """The open_clip model config `vision.open_clip_model` names, and where it was found: shipped with
    rrg, else open_clip's registry, or an "hf-hub:" repo's open_clip_config.json (open_clip's own lookup)."""
    if _shipped(name):
        return open_clip_config(name), f"rrg/model/configs/open_clip/{name}.json"
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(
            f"no open_clip config {name!r}: not in rrg/model/configs/open_clip/ nor in open_clip's registry "
            "(open_clip.list_models()), and not an hf-hub:org/name id"
        )
    return config, name if name.startswith(_HUB) else "open_clip registry"


@dataclass(frozen=True)
class TowerSpec:
    """A resolved vision tower: the config to build it from, and how to get its weights."""

    clip_config: dict[str, Any]  # open_clip's model config + "preprocess_cfg" and "source" for a pretrained tower
    fetch: Callable[[], str] | None = None  # returns a local checkpoint file (may download); None: random weights

    def checkpoint(self) -> str | None:
        return None if self.fetch is None else self.fetch()


def resolve_tower(vision: VisionConfig) -> TowerSpec:
    """The open_clip tower `vision.open_clip_model` and `vision.pretrained` describe.

    With pretrained None and a shipped config, the config is the shipped JSON, unchanged (every existing
    config builds as before). Otherwise the tower's image size must be `vision.image_size` (an error names
    both): the image cache and every caller resize to `vision.image_size`, so the config states it.
    Reading an "hf-hub:" config or an open_clip tag's weights needs the hub; it happens at training only.
    """
    name, pretrained = vision.open_clip_model, vision.pretrained
    if pretrained is None:
        if _shipped(name):
            return TowerSpec(open_clip_config(name))
        config, where = architecture(name)
        return TowerSpec(_settle(config, None, {"open_clip_model": name, "config": where, "weights": "random"}, vision))
    source: dict[str, Any] = {"open_clip_model": name, "pretrained": pretrained}
    if pretrained.startswith(_HUB):
        _same_tower(name, pretrained)
        repo = pretrained[len(_HUB):]
        hub = json.loads(Path(open_clip.pretrained.download_pretrained_from_hf(repo, filename=_CONFIG_FILE)).read_text())
        config, preprocess = _split_hub_config(hub, pretrained)
        source |= {"kind": "hf-hub", "config": pretrained, "weights": pretrained}
        return TowerSpec(_settle(config, preprocess, source, vision), lambda: open_clip.pretrained.download_pretrained_from_hf(repo))
    path = Path(pretrained).expanduser()
    if path.is_dir():
        _same_tower(name, pretrained)
        if not (path / _CONFIG_FILE).is_file():
            raise ValueError(f"vision.pretrained {pretrained!r} is a folder without {_CONFIG_FILE}")
        config, preprocess = _split_hub_config(json.loads((path / _CONFIG_FILE).read_text()), pretrained)
        weights = next((path / f for f in _FOLDER_WEIGHTS if (path / f).is_file()), None)
        if weights is None:
            raise ValueError(f"vision.pretrained folder {pretrained!r} holds none of {', '.join(_FOLDER_WEIGHTS)}")
        source |= {"kind": "folder", "config": str(path / _CONFIG_FILE), "weights": str(weights)}
        return TowerSpec(_settle(config, preprocess, source, vision), lambda: str(weights))
    if path.is_file() or path.suffix in _CHECKPOINT_SUFFIXES or "/" in pretrained:
        if not path.is_file():
            raise ValueError(f"vision.pretrained {pretrained!r}: no such checkpoint file or folder")
        if path.suffix not in _CHECKPOINT_SUFFIXES:
            raise ValueError(f"vision.pretrained {pretrained!r}: a checkpoint file ends in {', '.join(_CHECKPOINT_SUFFIXES)}")
        config, where = architecture(name)
        # A bare checkpoint says nothing of its pixel statistics: open_clip's defaults (OpenAI's mean/std)
        # apply, as in open_clip.create_model; a folder with a preprocess_cfg states others.
        source |= {"kind": "checkpoint file", "config": where, "weights": str(path)}
        return TowerSpec(_settle(config, {}, source, vision), lambda: str(path))
    tag = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(
            f"vision.pretrained {pretrained!r} is not an open_clip tag of {name!r} "
            f"({'its tags: ' + ', '.join(tags) if tags else 'open_clip has no weights under that name'}), "
            "an hf-hub:org/name id, a checkpoint file or a folder"
        )
    config, where = architecture(name)
    if "quick_gelu" in tag:  # the activation the weights were trained with (OpenAI's: QuickGELU)
        config = {**config, "quick_gelu": tag["quick_gelu"]}
    source |= {"kind": "open_clip tag", "config": where, "weights": tag.get("hf_hub") or tag.get("url")}
    return TowerSpec(_settle(config, tag, source, vision), lambda: open_clip.download_pretrained(tag))


def _same_tower(name: str, pretrained: str) -> None:
    """An hf-hub repo or a folder brings its own architecture: `open_clip_model` must name the same one."""
    if name != pretrained:
        raise ValueError(
            f"vision.pretrained {pretrained!r} carries its own architecture ({_CONFIG_FILE}), so "
            f"vision.open_clip_model must be the same string, not {name!r}"
        )


def _split_hub_config(data: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, preprocess config) of an open_clip_config.json, in the hub's layout or bare."""
    config = data.get("model_cfg", data)
    if "vision_cfg" not in config or "embed_dim" not in config:
        raise ValueError(f"{where}: {_CONFIG_FILE} has no open_clip model config (model_cfg with embed_dim, vision_cfg)")
    return config, data.get(PREPROCESS, {})


def _settle(
    model_cfg: dict[str, Any], preprocess: dict[str, Any] | None, source: dict[str, Any], vision: VisionConfig
) -> dict[str, Any]:
    """The config a resolved tower is built from and saved with: open_clip's model config set to build
    offline (no timm or Hugging Face weights fetched at build: the checkpoint brings them), then the
    tower's mean, std and image size (unless random, which keeps 0.5/0.25) and its source."""
    config = copy.deepcopy(model_cfg)
    vision_cfg, text_cfg = config["vision_cfg"], config.get("text_cfg", {})
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    if vision_cfg.get("patch_dropout"):  # it would drop patch tokens the prompt needs
        vision_cfg["patch_dropout"] = 0.0
    size = square_side(vision_cfg.get("image_size", 224), f"the tower {source.get('pretrained') or source['open_clip_model']}")
    if size != vision.image_size:
        raise ValueError(
            f"vision.image_size is {vision.image_size} but the tower "
            f"{source.get('pretrained') or source['open_clip_model']!r} takes {size}-pixel images: set vision.image_size to {size}"
        )
    if preprocess is not None:
        merged = open_clip.transform.merge_preprocess_dict(asdict(open_clip.transform.PreprocessCfg()), preprocess)
        config[PREPROCESS] = {"mean": _channels(merged["mean"], "mean"), "std": _channels(merged["std"], "std"), "size": size}
    config[SOURCE] = source
    return config


def _channels(values: Any, what: str) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, list | tuple) else [values])]
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"the tower's preprocess {what} must have 1 or 3 values, not {values}")
    return values


def load_tower_weights(encoder: VisionEncoder, checkpoint: str | Path) -> None:
    """Load a pretrained tower's checkpoint (a state dict, possibly under "state_dict"; .safetensors or
    a torch file) into the encoder, through open_clip's loader; every tensor must fit."""
    try:
        if encoder.has_text_tower:
            open_clip.load_checkpoint(encoder.clip, str(checkpoint), strict=True)
            return
        state = open_clip.factory.load_state_dict(str(checkpoint))
        visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        if not visual:
            raise ValueError(f"{checkpoint} holds no image tower weights (visual.*)")
        encoder.clip.visual.load_state_dict(visual, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the weights in {checkpoint} do not fit the tower's open_clip config: {error}") from error
