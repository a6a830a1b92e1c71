"""The mistral-7b-lora recipe at its real size, built on PyTorch's meta device: every module and every
shape of the prompt assembly, from image to logits, without allocating the 7B weights.

The visual prompt (projector, Sinkhorn fusion, clues: a few million parameters) runs on the CPU:
POT's Sinkhorn checks its convergence on values, which meta tensors do not have."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from prompts.vocabulary import CHEXBERT_LABELS
from rrg.config import load_model_config, with_ablation
from rrg.model.generator import torch_dtype, with_new_lora
from rrg.model.prompt import PromptEmbedder
from rrg.model.vision import FindingHeads, VisionEncoder, open_clip_config
from rrg.model.visual_prompt import PromptTexts, VisualPrompt
from rrg.training.tokenizer import train_report_tokenizer

TEXT_DIM = 384  # all-MiniLM-L6-v2, the prompt text encoder
MISTRAL_7B_PARAMETERS = 7_241_732_096  # Mistral-7B-v0.1, untied embeddings
# r * (in + out) per adapted projection: q and o are 4096 -> 4096, k and v 4096 -> 1024 (8 KV heads of 128).
LORA_PARAMETERS = 32 * 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2)


@pytest.fixture(scope="module")
def tokenizer():
    # Mistral's own tokenizer is not on this machine; any tokenizer with ids below 32,000 drives the
    # same shapes (the prompt is a few tokens longer or shorter).
    return train_report_tokenizer(["The heart is normal in size. No pleural effusion."] * 20, vocab_size=300)


@pytest.mark.parametrize("variant", ["as shipped", "full"])
def test_the_7b_model_and_its_prompt_assembly_have_the_right_shapes_on_meta(variant, tokenizer):
    config = load_model_config("mistral-7b-lora")
    if variant == "full":
        config = with_ablation(config, "full")  # Sinkhorn fusion and disease clues too
    g = config.generator
    batch = 2
    with torch.device("meta"):
        vision = VisionEncoder(open_clip_config(config.vision.open_clip_model))
        heads = FindingHeads(vision.embed_dim)
        llm = MistralForCausalLM(MistralConfig(
            vocab_size=g.vocab_size, hidden_size=g.hidden_size, intermediate_size=g.intermediate_size,
            num_hidden_layers=g.num_layers, num_attention_heads=g.num_heads, num_key_value_heads=g.num_kv_heads,
            max_position_embeddings=g.max_positions, tie_word_embeddings=False, sliding_window=None,
            attn_implementation="eager",  # SDPA's mask shortcut reads a value, which meta tensors have not
        )).to(torch_dtype(g.dtype))
        model = with_new_lora(llm, g)

        images = torch.zeros(batch, 1, vision.image_size, vision.image_size)
        seen = vision(images)
        patches = vision.grid**2
        assert seen.tokens.shape == (batch, patches, vision.token_width) and seen.pooled.shape == (batch, vision.embed_dim)
        labels, entities = heads(seen.pooled)
        assert labels.shape == (batch, len(CHEXBERT_LABELS)) and entities.shape == (batch, 75)

    text_dim = TEXT_DIM if config.fusion.enabled or config.clues.enabled else None
    visual_prompt = VisualPrompt(config, vision.token_width, g.hidden_size, text_dim).eval()
    texts = None
    if text_dim:
        texts = PromptTexts(
            grp=torch.randn(batch, config.fusion.max_grp_sentences, text_dim),
            grp_mask=torch.ones(batch, config.fusion.max_grp_sentences, dtype=torch.bool),
            lrp=torch.randn(batch, 75, text_dim), clues=torch.randn(len(CHEXBERT_LABELS), text_dim),
        )
    with torch.no_grad():
        visual = visual_prompt(torch.randn(seen.tokens.shape), texts)
    extra = 2 * config.clues.queries if config.clues.enabled else 0  # TRRG: L query tokens, visual and clue side
    assert visual.tokens.shape == (batch, config.vision.visual_tokens + extra, 4096)
    if config.fusion.enabled:
        assert visual.grp_maps.shape == (batch, config.fusion.max_grp_sentences, patches)

    with torch.device("meta"):

        embedder = PromptEmbedder(tokenizer, llm.get_input_embeddings(), config.prompt)
        prompt = embedder.prompt_embeds(visual.tokens[0].to("meta"), ["cardiomegaly"], ["Heart size is normal."])
        assert prompt.shape[1] == 4096 and prompt.dtype == torch.bfloat16
        assert prompt.shape[0] > visual.tokens.shape[1]  # text before and after the visual tokens
        logits = model(inputs_embeds=prompt[None], attention_mask=torch.ones(1, prompt.shape[0], dtype=torch.long)).logits
        assert logits.shape == (1, prompt.shape[0], 32_000)

    base = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert base == MISTRAL_7B_PARAMETERS and lora == LORA_PARAMETERS
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters() if "lora_A" in name}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj"}
    modules = (vision, heads, model)
    assert all(p.is_meta for module in modules for p in module.parameters())  # nothing was allocated
