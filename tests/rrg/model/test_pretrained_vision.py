"""Pretrained vision towers by name (`vision.pretrained`), partial fine-tuning (`vision.freeze`), and bundles
that rebuild a pretrained tower offline.

No model hub is reachable here, so each test builds a tiny open_clip model with open_clip's own classes
(a ViT, and a timm trunk in BiomedCLIP's layout), saves it in the format a user would download (a state
dict .pt or .safetensors, a folder in the hub's layout, a Hugging Face hub cache), and loads it through
the config: every tensor must come back equal, and the encoder must see what the saved model sees.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from rrg.bundle import read_vision, save_vision
from rrg.config import ModelConfig, VisionConfig, load_model_config, model_config_names, with_ablation
from rrg.model import factory
from rrg.model.towers import resolve_tower
from rrg.model.vision import VisionEncoder, freeze_tower, open_clip_config

# A 3-block ViT on 32-pixel images (4 x 4 patches of 8) with an open_clip text transformer.
TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 1, "layers": 1},
}
# Not open_clip's defaults (OpenAI's), so that a test sees which statistics were applied.
MEAN, STD = [0.40, 0.45, 0.50], [0.20, 0.25, 0.30]
# BiomedCLIP's open_clip_config.json on the hub (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224).
BIOMEDCLIP = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 224},
        "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                     "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                     "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256},
    },
    "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
}
HUB_REPO = "rrg-test/tiny-biomedclip"


def _refuse(*args, **kwargs):
    raise OSError("network access in a test that must run offline")


@pytest.fixture
def offline(monkeypatch):
    """Hub offline mode, and any socket a loader might still open refused."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)


def config_with(**vision) -> ModelConfig:
    return load_model_config("test-micro").replace(vision=vision)


def source_model(model_cfg: dict, seed: int = 7) -> torch.nn.Module:
    """The model a user would have downloaded, built by open_clip itself."""
    torch.manual_seed(seed)
    hf_text = "hf_model_name" in model_cfg["text_cfg"]
    cls = open_clip.CustomTextCLIP if hf_text or model_cfg.get("custom_text") else open_clip.CLIP
    kwargs = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    return cls(**kwargs).eval()


def write_hub_folder(folder: Path, model_cfg: dict, model: torch.nn.Module, weights: str = "open_clip_model.safetensors",
                     preprocess: dict | None = None) -> Path:
    """open_clip_config.json (model_cfg + preprocess_cfg) and the weights, as on the hub."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"model_cfg": model_cfg, "preprocess_cfg": preprocess if preprocess is not None else {"mean": MEAN, "std": STD}}
    (folder / "open_clip_config.json").write_text(json.dumps(data))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights.endswith(".safetensors"):
        save_file(state, folder / weights)
    else:
        torch.save(state, folder / weights)
    return folder


def assert_same_tensors(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert set(expected) == set(got)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"tensors that differ: {different[:5]}"


def seen_by(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled, patch tokens) the saved open_clip model gives for normalised 3-channel pixels."""
    visual = model.visual
    with torch.no_grad():
        if hasattr(visual, "trunk"):  # timm: TimmModel's own forward, and the trunk's features past its prefix
            return visual(pixels), visual.trunk.forward_features(pixels)[:, visual.trunk.num_prefix_tokens :]
        visual.output_tokens = True
        return visual(pixels)


def grey(size: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(3))


def normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# --- random towers: as before ----------------------------------------------------------------------


def test_a_shipped_random_tower_is_built_and_normalised_as_before():
    config = load_model_config("test-micro")
    assert config.vision.pretrained is None and not config.vision.freeze
    assert resolve_tower(config.vision).clip_config == open_clip_config("rrg-vit-micro")  # nothing added
    torch.manual_seed(0)
    built = factory.vision_encoder(config)
    torch.manual_seed(0)
    direct = VisionEncoder(open_clip_config("rrg-vit-micro"))
    assert_same_tensors(direct.state_dict(), built.state_dict())
    assert built.pixel_mean is None and all(p.requires_grad for p in built.parameters())
    images = grey(32)
    assert torch.equal(built.pixels(images), ((images - 0.5) / 0.25).expand(-1, 3, -1, -1))


def test_an_old_bundle_without_mean_std_saves_and_loads_as_before(tmp_path):
    torch.manual_seed(1)
    encoder = VisionEncoder(open_clip_config("rrg-vit-micro")).eval()
    save_vision(tmp_path, encoder.clip_config, encoder)
    stored, _ = read_vision(tmp_path)
    assert stored == open_clip_config("rrg-vit-micro")
    loaded = factory.load_vision(tmp_path)
    assert loaded.pixel_mean is None
    images = grey(32)
    with torch.no_grad():
        assert torch.equal(loaded(images).tokens, encoder(images).tokens)


def test_an_open_clip_registry_name_builds_a_random_tower_with_grey_statistics():
    spec = resolve_tower(VisionConfig(open_clip_model="ViT-B-16", image_size=224))
    assert spec.fetch is None and "preprocess_cfg" not in spec.clip_config
    assert spec.clip_config["source"] == {"open_clip_model": "ViT-B-16", "config": "open_clip registry", "weights": "random"}
    with torch.device("meta"):  # the real size, without allocating it
        encoder = VisionEncoder(spec.clip_config)
        seen = encoder(torch.zeros(2, 1, 224, 224))
    assert (encoder.grid, encoder.token_width, encoder.embed_dim) == (14, 768, 512)
    assert seen.tokens.shape == (2, 196, 768) and encoder.pixel_mean is None


# --- pretrained towers -----------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["rrg-vit-micro", "rrg-timm-micro"])
@pytest.mark.parametrize("fmt", ["pt", "pt-state_dict", "safetensors"])
def test_a_checkpoint_file_loads_bit_exact_with_open_clip_default_statistics(tmp_path, architecture, fmt):
    model_cfg = open_clip_config(architecture)
    source = source_model(model_cfg)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"tower.{fmt.split('-')[0]}"
    if fmt == "safetensors":
        save_file(state, path)
    elif fmt == "pt-state_dict":  # a training checkpoint: the weights under "state_dict", DDP's "module." names
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    else:
        torch.save(state, path)
    size = model_cfg["vision_cfg"]["image_size"]
    encoder = factory.vision_encoder(config_with(open_clip_model=architecture, pretrained=str(path), image_size=size)).eval()

    assert_same_tensors(source.state_dict(), encoder.clip.state_dict())
    recorded = encoder.clip_config
    assert recorded["preprocess_cfg"] == {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                          "std": list(open_clip.OPENAI_DATASET_STD), "size": size}
    assert recorded["source"]["kind"] == "checkpoint file" and recorded["source"]["weights"] == str(path)
    images = grey(size)
    pooled, tokens = seen_by(source, normalised(images, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD))
    with torch.no_grad():
        seen = encoder(images)
    assert torch.equal(seen.pooled, pooled) and torch.equal(seen.tokens, tokens)
    assert seen.tokens.shape == (2, encoder.grid**2, encoder.token_width)
    assert (encoder.grid, encoder.token_width) == ((4, 64) if architecture == "rrg-vit-micro" else (10, 64))


@pytest.mark.parametrize("weights", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_a_hub_layout_folder_brings_its_architecture_and_mean_std(tmp_path, weights):
    source = source_model(TINY_VIT)
    folder = str(write_hub_folder(tmp_path / "tiny-vit", TINY_VIT, source, weights))
    encoder = factory.vision_encoder(config_with(open_clip_model=folder, pretrained=folder, image_size=32)).eval()

    assert_same_tensors(source.state_dict(), encoder.clip.state_dict())
    assert encoder.has_text_tower and encoder.clip_config["preprocess_cfg"] == {"mean": MEAN, "std": STD, "size": 32}
    assert encoder.clip_config["source"]["kind"] == "folder"
    images = grey(32)
    assert torch.equal(encoder.pixels(images), normalised(images, MEAN, STD))
    pooled, tokens = seen_by(source, normalised(images, MEAN, STD))
    with torch.no_grad():
        seen = encoder(images)
    assert torch.equal(seen.pooled, pooled) and torch.equal(seen.tokens, tokens)
    assert seen.tokens.shape == (2, 16, 32) and seen.pooled.shape == (2, 32)


@pytest.fixture
def tiny_biomedclip(tmp_path, tiny_bert):
    """A BiomedCLIP-shaped model (timm ViT image tower, Hugging Face BERT text tower with an MLP projection),
    its text model built from a local BERT folder that is then deleted: loading must not need it."""
    bert = tiny_bert(tmp_path / "tiny-bert")
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 160},
        "text_cfg": {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 16,
                     "hf_model_pretrained": False},
    }
    source = source_model(model_cfg)
    folder = write_hub_folder(tmp_path / "tiny-biomedclip", model_cfg, source, "open_clip_pytorch_model.bin")
    shutil.rmtree(bert)
    return folder, source


@pytest.fixture
def fake_hub(tmp_path, tiny_biomedclip, monkeypatch, offline):
    """The tiny BiomedCLIP in a Hugging Face hub cache (as a download leaves it), in offline mode."""
    folder, source = tiny_biomedclip
    commit = "0" * 40
    repo = tmp_path / "hub" / f"models--{HUB_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return f"hf-hub:{HUB_REPO}", source


def test_an_hf_hub_timm_tower_keeps_its_image_tower_and_gives_patch_tokens(fake_hub):
    name, source = fake_hub
    encoder = factory.vision_encoder(config_with(open_clip_model=name, pretrained=name, image_size=160)).eval()

    assert not encoder.has_text_tower  # a Hugging Face text tower: not built, not saved
    visual = {k: v for k, v in source.state_dict().items() if k.startswith("visual.")}
    assert_same_tensors(visual, encoder.clip.state_dict())
    assert encoder.clip_config["source"]["kind"] == "hf-hub"
    assert encoder.clip_config["preprocess_cfg"]["mean"] == MEAN
    assert encoder.clip_config["text_cfg"]["hf_model_pretrained"] is False
    images = grey(160)
    pooled, tokens = seen_by(source, normalised(images, MEAN, STD))
    with torch.no_grad():
        seen = encoder(images)
    assert torch.equal(seen.pooled, pooled) and torch.equal(seen.tokens, tokens)
    assert seen.tokens.shape == (2, 100, 64) and (encoder.grid, encoder.token_width, encoder.embed_dim) == (10, 64, 32)


def test_medfuse_clip_pretraining_of_a_tower_without_an_open_clip_text_tower_is_refused(fake_hub):
    name, _ = fake_hub
    config = config_with(open_clip_model=name, pretrained=name, image_size=160).replace(training={"clip_epochs": 1})
    with pytest.raises(ValueError, match=r"training\.clip_epochs is 1.*no open_clip text tower"):
        factory.vision_encoder(config)


@pytest.mark.parametrize("kind", ["vit folder", "timm hub"])
def test_a_bundle_of_a_pretrained_tower_reloads_offline_without_its_source(tmp_path, kind, request):
    if kind == "vit folder":
        source = source_model(TINY_VIT)
        name = str(write_hub_folder(tmp_path / "downloaded", TINY_VIT, source))
        config, size = config_with(open_clip_model=name, pretrained=name, image_size=32), 32
    else:
        name, source = request.getfixturevalue("fake_hub")
        config, size = config_with(open_clip_model=name, pretrained=name, image_size=160), 160
    encoder = factory.vision_encoder(config).eval()
    bundle = tmp_path / "bundle"
    save_vision(bundle, encoder.clip_config, encoder)
    shutil.rmtree(tmp_path / ("downloaded" if kind == "vit folder" else "hub"))  # the original checkpoint is gone
    request.getfixturevalue("offline")

    loaded = factory.load_vision(bundle)
    assert_same_tensors(encoder.state_dict(), loaded.state_dict())
    assert torch.equal(loaded.pixel_mean, encoder.pixel_mean) and torch.equal(loaded.pixel_std, encoder.pixel_std)
    images = grey(size)
    with torch.no_grad():
        before, after = encoder(images), loaded(images)
    assert torch.equal(before.pooled, after.pooled) and torch.equal(before.tokens, after.tokens)
    stored = json.loads((bundle / "vision" / "open_clip_config.json").read_text())
    assert stored["preprocess_cfg"]["mean"] == MEAN and stored["source"]["pretrained"] == name


# --- names, sizes and mistakes -----------------------------------------------------------------------


def test_an_open_clip_tag_resolves_its_architecture_and_statistics_without_downloading():
    spec = resolve_tower(VisionConfig(open_clip_model="ViT-B-16", pretrained="openai", image_size=224))
    config = spec.clip_config
    assert config["quick_gelu"] is True  # OpenAI trained with QuickGELU; open_clip's ViT-B-16 config says GELU
    assert config["preprocess_cfg"] == {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                        "std": list(open_clip.OPENAI_DATASET_STD), "size": 224}
    assert config["source"]["kind"] == "open_clip tag" and spec.fetch is not None  # fetched at training only
    with pytest.raises(ValueError, match=r"'no-such-tag' is not an open_clip tag of 'ViT-B-16' \(its tags: .*openai"):
        resolve_tower(VisionConfig(open_clip_model="ViT-B-16", pretrained="no-such-tag", image_size=224))


def test_a_tower_of_another_image_size_is_an_error_naming_both(tmp_path):
    source = source_model(TINY_VIT)
    folder = str(write_hub_folder(tmp_path / "tiny-vit", TINY_VIT, source))
    with pytest.raises(ValueError, match=r"vision\.image_size is 64 but the tower .* takes 32-pixel images"):
        resolve_tower(VisionConfig(open_clip_model=folder, pretrained=folder, image_size=64))
    with pytest.raises(ValueError, match=r"vision\.image_size is 128 but the tower 'ViT-B-16' takes 224"):
        resolve_tower(VisionConfig(open_clip_model="ViT-B-16", image_size=128))


def test_a_hub_repo_or_folder_must_be_named_as_the_architecture_too(tmp_path):
    folder = str(write_hub_folder(tmp_path / "tiny-vit", TINY_VIT, source_model(TINY_VIT)))
    with pytest.raises(ValueError, match=r"open_clip_model must be the same string, not 'rrg-vit-micro'"):
        resolve_tower(VisionConfig(open_clip_model="rrg-vit-micro", pretrained=folder, image_size=32))
    with pytest.raises(ValueError, match="no such checkpoint file or folder"):
        resolve_tower(VisionConfig(open_clip_model="rrg-vit-micro", pretrained=str(tmp_path / "gone.pt"), image_size=32))
    with pytest.raises(ValueError, match="no open_clip config 'no-such-tower'"):
        resolve_tower(VisionConfig(open_clip_model="no-such-tower", image_size=32))


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in source_model(TINY_VIT).state_dict().items()}, path)
    with pytest.raises(ValueError, match="do not fit the tower's open_clip config"):
        factory.vision_encoder(config_with(open_clip_model="rrg-vit-micro", pretrained=str(path), image_size=32))


# --- freezing ---------------------------------------------------------------------------------------


def trainable(encoder: VisionEncoder) -> set[str]:
    return {name for name, p in encoder.clip.visual.named_parameters() if p.requires_grad}


def test_a_frozen_vit_trains_its_last_blocks_final_norm_and_projection_only(tmp_path):
    folder = str(write_hub_folder(tmp_path / "tiny-vit", TINY_VIT, source_model(TINY_VIT)))
    encoder = factory.vision_encoder(
        config_with(open_clip_model=folder, pretrained=folder, image_size=32, freeze=True, unfreeze_last_blocks=1)
    )
    visual = encoder.clip.visual
    expected = {f"transformer.resblocks.2.{n}" for n, _ in visual.transformer.resblocks[2].named_parameters()}
    expected |= {"ln_post.weight", "ln_post.bias", "proj"}
    assert trainable(encoder) == expected
    frozen = sum(p.numel() for p in visual.parameters() if not p.requires_grad)
    assert frozen == sum(p.numel() for p in visual.parameters()) - sum(
        p.numel() for n, p in visual.named_parameters() if n in expected
    ) > 0
    assert all(p.requires_grad for p in encoder.clip.transformer.parameters())  # the text tower is left as it is

    freeze_tower(encoder, 0)  # the whole image tower
    assert trainable(encoder) == set()


def test_a_frozen_timm_tower_trains_its_last_blocks_norm_and_open_clip_head_only(fake_hub):
    name, _ = fake_hub
    encoder = factory.vision_encoder(
        config_with(open_clip_model=name, pretrained=name, image_size=160, freeze=True, unfreeze_last_blocks=2)
    )
    trunk = encoder.clip.visual.trunk
    expected = {f"trunk.blocks.{i}.{n}" for i in (4, 5) for n, _ in trunk.blocks[i].named_parameters()}
    expected |= {"trunk.norm.weight", "trunk.norm.bias", "head.proj.weight"}
    assert len(trunk.blocks) == 6 and trainable(encoder) == expected
    loss = encoder(grey(160)).pooled.sum()
    loss.backward()
    assert trunk.blocks[0].attn.qkv.weight.grad is None and trunk.blocks[5].attn.qkv.weight.grad is not None
    with pytest.raises(ValueError, match="unfreeze_last_blocks is 7 but the tower has 6 blocks"):
        freeze_tower(encoder, 7)


def test_freeze_options_are_checked_in_the_config():
    with pytest.raises(ValueError, match="set vision.freeze to true"):
        VisionConfig(unfreeze_last_blocks=2)
    with pytest.raises(ValueError, match="non-negative integer"):
        VisionConfig(freeze=True, unfreeze_last_blocks=-1)
    with pytest.raises(ValueError, match="vision.pretrained must be null or a non-empty string"):
        VisionConfig(pretrained="")


# --- the MIMIC config --------------------------------------------------------------------------------


def test_every_shipped_config_loads_and_mimic_mistral_7b_is_the_whole_method_on_biomedclip():
    assert {"mimic-mistral-7b", "mistral-7b-lora"} <= set(model_config_names())
    for name in model_config_names():
        load_model_config(name)
    config = load_model_config("mimic-mistral-7b")
    assert with_ablation(config, "full") == config and not config.demo
    assert config.vision.pretrained == config.vision.open_clip_model == "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    assert (config.vision.image_size, config.vision.visual_tokens, config.vision.freeze) == (224, 49, True)
    assert config.training.clip_epochs == 0  # BiomedCLIP's text tower is a Hugging Face model, not kept
    assert config.prompt.text_encoder_trust_remote_code and config.prompt.text_encoder_device == "auto"
    assert config.generator == load_model_config("mistral-7b-lora").generator
    assert load_model_config("mistral-7b-lora").vision == VisionConfig("rrg-vit-base", 224, 49)


def test_biomedclip_at_its_real_size_gives_196_patch_tokens_for_49_visual_tokens():
    """BiomedCLIP's architecture (its hub config) built on the meta device: the shapes the MIMIC config uses."""
    config = load_model_config("mimic-mistral-7b")
    with torch.device("meta"):
        encoder = VisionEncoder(BIOMEDCLIP["model_cfg"] | {"preprocess_cfg": {**BIOMEDCLIP["preprocess_cfg"], "size": 224}})
        freeze_tower(encoder, config.vision.unfreeze_last_blocks)
        seen = encoder(torch.zeros(2, 1, config.vision.image_size, config.vision.image_size))
    assert encoder.image_size == config.vision.image_size and encoder.grid**2 == 196
    assert seen.tokens.shape == (2, 196, 768) and seen.pooled.shape == (2, 512)
    assert (196 // config.vision.visual_tokens) == 4  # the projector pools 14 x 14 to 7 x 7
    assert {n.split(".")[2] for n in trainable(encoder) if n.startswith("trunk.blocks.")} == {"8", "9", "10", "11"}
