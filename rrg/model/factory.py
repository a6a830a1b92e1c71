"""Every module of a model, built from its `ModelConfig` and its widths, and loaded from a bundle.

As open_clip's `create_model` does from its JSON configs, one place turns a config into modules.
The config holds every hyperparameter; what it cannot hold are the widths that come from the parts
a model is built around: the vision tower's (its open_clip config), the language model's hidden size
and the prompt text encoder's width. `rrg.config.ModelWidths` gathers them; training records them in the
bundle's `config.json`, and loading builds each module at its recorded size, then checks every saved
tensor against it (`load_state`): a width that does not match is an error that names the tensor and
both shapes, never a silent mis-load.

    vision_encoder / finding_heads / visual_prompt / retrieval_enhancer    build (training)
    load_vision / load_heads / load_visual_prompt / load_retriever / ...   build and load (bundle)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from prompts.vocabulary import MEDKLIP_ENTITIES
from retrieval.index_files import index_kind, open_index
from retrieval.lre import RetrievalEnhancer
from rrg.bundle import INDEX, MODULES, PROMPTS, VISION, Bundle, BundleError, read_vision
from rrg.config import ModelConfig, ModelWidths, RetrievalConfig
from rrg.model.generator import load_llm, torch_dtype, with_merged_lora
from rrg.model.prompt import PromptEmbedder
from rrg.model.prompt_texts import PromptTextEncodings
from rrg.model.references import ReferenceRetriever
from rrg.model.towers import load_tower_weights, resolve_tower
from rrg.model.vision import FindingHeads, VisionEncoder, freeze_tower
from rrg.model.visual_prompt import VisualPrompt

_EMBED_KEY = "model.embed_tokens.weight"


def widths_of(encoder: VisionEncoder, llm_hidden: int, text: int | None) -> ModelWidths:
    """The widths of a model around this vision encoder, language model width and text encoder width."""
    return ModelWidths(encoder.embed_dim, encoder.token_width, llm_hidden, text)


# --- building -------------------------------------------------------------------------------------


def vision_encoder(config: ModelConfig) -> VisionEncoder:
    """The open_clip encoder of the config's `vision` section, for training: `vision.open_clip_model` with
    random weights, or the `vision.pretrained` tower with its weights (fetched from a hub if named there:
    training is the only time a hub is asked); frozen as `vision.freeze` and `unfreeze_last_blocks` say.
    Its `clip_config` records the resolved tower, which the bundle keeps (`rrg.bundle.save_vision`)."""
    vision = config.vision
    tower = resolve_tower(vision)
    encoder = VisionEncoder(tower.clip_config)
    if config.training.clip_epochs and not encoder.has_text_tower:
        raise ValueError(
            f"training.clip_epochs is {config.training.clip_epochs}, but the tower {vision.pretrained or vision.open_clip_model!r} "
            "keeps no open_clip text tower (its text tower is a Hugging Face model) for MedFuse-CLIP "
            "pre-training: set training.clip_epochs to 0"
        )
    checkpoint = tower.checkpoint()
    if checkpoint is not None:
        load_tower_weights(encoder, checkpoint)
    if vision.freeze:
        freeze_tower(encoder, vision.unfreeze_last_blocks)
    return encoder


def finding_heads(vision_embed: int) -> FindingHeads:
    """The finding heads on a pooled image embedding of this width (`ModelWidths.vision_embed`)."""
    return FindingHeads(vision_embed)


def visual_prompt(config: ModelConfig, widths: ModelWidths) -> VisualPrompt:
    return VisualPrompt(config, widths.vision_tokens, widths.llm_hidden, widths.text)


def retrieval_enhancer(retrieval: RetrievalConfig) -> RetrievalEnhancer:
    """REVTAF's LRE as the config describes it: the 75 MedKLIP entity logits in, points of the ball out."""
    return RetrievalEnhancer(len(MEDKLIP_ENTITIES), retrieval.hidden, retrieval.dim, retrieval.curvature)


# --- loading from a bundle ------------------------------------------------------------------------


def load_state(module: nn.Module, tensors: dict[str, torch.Tensor], part: str) -> None:
    """Load saved tensors into a module built at the recorded widths; a BundleError names any tensor that
    is missing, unexpected or of another shape."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{key}: saved {tuple(tensors[key].shape)}, built {tuple(value.shape)}"
             for key, value in expected.items() if key in tensors and tensors[key].shape != value.shape]
    if missing or unexpected or wrong:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unexpected {', '.join(unexpected)}"] if unexpected else []
        problems += wrong
        raise BundleError(f"{part} does not fit the modules its config and widths describe: {'; '.join(problems)}")
    module.load_state_dict(tensors)


def load_vision(bundle: Bundle | Path) -> VisionEncoder:
    """The vision encoder of a bundle, or of the folder of a bundle being trained (its vision/ part): built
    from the resolved tower config stored there (no hub, no registry, no pretrained download; a bundle
    from before pretrained towers normalises as it always did) and loaded with the stored weights."""
    clip_config, tensors = read_vision(bundle.path if isinstance(bundle, Bundle) else Path(bundle))
    encoder = VisionEncoder(clip_config)
    load_state(encoder, tensors, f"{VISION}/model.safetensors")
    return encoder.eval()


def load_heads(bundle: Bundle) -> FindingHeads:
    heads = finding_heads(bundle.widths.vision_embed)
    load_state(heads, bundle.module_tensors("heads"), f"{MODULES} (heads.*)")
    return heads.eval()


def load_visual_prompt(bundle: Bundle) -> VisualPrompt:
    prompt = visual_prompt(bundle.config, bundle.widths)
    load_state(prompt, bundle.module_tensors(None), f"{MODULES} (visual prompt)")
    return prompt.eval()


def load_prompt_texts(bundle: Bundle) -> PromptTextEncodings | None:
    """The encoded text prompts, for a model that fuses them (else None)."""
    if not bundle.config.uses_text_prompts:
        return None
    encodings = PromptTextEncodings.load(bundle.path / PROMPTS, bundle.config)
    if encodings.dim != bundle.widths.text:
        raise BundleError(f"{bundle.path / PROMPTS} holds encodings of width {encodings.dim}; "
                          f"the bundle's widths say {bundle.widths.text}")
    return encodings


def load_retriever(bundle: Bundle) -> ReferenceRetriever:
    """The index and, for hyperbolic retrieval, the LRE that embeds queries for it."""
    kind, folder = bundle.config.retrieval.kind, bundle.path / INDEX
    if index_kind(folder) != kind:
        raise BundleError(f"{folder} holds a {index_kind(folder)} index, but the config says {kind}")
    index = open_index(folder, bundle.config.retrieval.device)
    if kind == "cosine":
        return ReferenceRetriever(index)
    enhancer = retrieval_enhancer(bundle.config.retrieval)
    load_state(enhancer, bundle.module_tensors("retriever"), f"{MODULES} (retriever.*)")
    return ReferenceRetriever(index, enhancer.eval())


def load_tokenizer(bundle: Bundle) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(bundle.llm_path))


def load_token_embedding(bundle: Bundle) -> nn.Embedding:
    """The language model's input embedding matrix alone, read from its safetensors files."""
    for shard in sorted(bundle.llm_path.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            if _EMBED_KEY in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                embedding = nn.Embedding.from_pretrained(handle.get_tensor(_EMBED_KEY), freeze=True)
                if embedding.embedding_dim != bundle.widths.llm_hidden:
                    raise BundleError(f"{bundle.llm_path} embeds tokens in {embedding.embedding_dim} dimensions; "
                                      f"the bundle's widths say {bundle.widths.llm_hidden}")
                return embedding
    raise BundleError(f"no {_EMBED_KEY} in {bundle.llm_path}/*.safetensors")


def load_prompt_embedder(bundle: Bundle) -> PromptEmbedder:
    return PromptEmbedder(load_tokenizer(bundle), load_token_embedding(bundle), bundle.config.prompt)


def load_generator(bundle: Bundle) -> nn.Module:
    """The language model with the bundle's LoRA adapter merged into its weights, for transformers
    generation."""
    base = load_llm(bundle.llm_path, bundle.config.generator.dtype)
    return with_merged_lora(base, bundle.lora_path).to(torch_dtype(bundle.config.generator.dtype))


def write_merged_llm(bundle: Bundle, folder: str | Path) -> Path:
    """The language model with the adapter merged in, saved in Hugging Face format with the tokenizer
    into `folder`: for an engine that serves the bundle without LoRA."""
    folder = Path(folder)
    load_generator(bundle).save_pretrained(folder)
    for source in bundle.llm_path.iterdir():  # the tokenizer and anything else save_pretrained does not write
        if source.is_file() and not source.name.endswith(".safetensors") and not (folder / source.name).exists():
            shutil.copy2(source, folder / source.name)
    return folder
