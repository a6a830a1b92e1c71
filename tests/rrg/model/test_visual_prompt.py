"""The visual prompt assembled from the config: v1 projector alone, or fusion and clues, and its losses."""

from __future__ import annotations

import pytest
import torch

from rrg.config import ABLATIONS, ModelConfig, load_model_config, with_ablation
from rrg.model.projector import VisualProjector
from rrg.model.visual_prompt import PromptTexts, VisualPrompt
from rrg.training.losses import VisualPromptLosses, clue_selection_loss

WIDTH, HIDDEN, TEXT, GRID = 12, 32, 8, 4  # patch token width, LLM width, text width, 4x4 patches


def _config(ablation: str) -> ModelConfig:
    return with_ablation(load_model_config("test-micro"), ablation).replace(
        fusion={"dim": 8}, clues={"dim": 8, "heads": 2, "queries": 3, "k": 2}
    )


def _texts(batch: int = 2, sentences: int = 5) -> PromptTexts:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, sentences, dtype=torch.bool)
    mask[1, 3:] = False  # the second study's references have 3 sentences
    return PromptTexts(
        grp=torch.randn(batch, sentences, TEXT, generator=generator),
        grp_mask=mask,
        lrp=torch.randn(batch, 75, TEXT, generator=generator),
        clues=torch.randn(14, TEXT, generator=generator),
    )


def test_without_fusion_and_clues_the_visual_prompt_is_the_v1_projector_with_its_key_names():
    torch.manual_seed(0)
    prompt = VisualPrompt(_config("v1"), WIDTH, HIDDEN)
    torch.manual_seed(0)
    projector = VisualProjector(WIDTH, HIDDEN, 4)
    assert set(prompt.state_dict()) == {f"projector.{k}" for k in projector.state_dict()}
    tokens = torch.randn(2, GRID * GRID, WIDTH)
    # same seed, same weights, same output: v1 bundles load and draft as before
    assert torch.equal(prompt(tokens).tokens, projector(tokens))


def test_full_prompt_has_visual_and_clue_tokens_and_the_maps_of_both_branches():
    prompt = VisualPrompt(_config("full"), WIDTH, HIDDEN, TEXT)
    out = prompt(torch.randn(2, GRID * GRID, WIDTH), _texts())
    assert out.tokens.shape == (2, 4 + 2 * 3, HIDDEN)  # V visual tokens + 2L clue tokens
    assert out.grp_maps.shape == (2, 5, GRID * GRID) and out.lrp_maps.shape == (2, 75, GRID * GRID)
    assert torch.all(out.grp_maps[1, 3:] == 0)  # padded sentences attend nowhere
    assert out.clues.selected.shape == (2, 2) and out.clues.clue_attention.shape == (2, 2, GRID * GRID)


@pytest.mark.parametrize(("ablation", "grp", "lrp", "clues"), [
    ("lre", False, False, False), ("fusion", True, True, False), ("clues", False, False, True),
    ("no-grp", False, True, True), ("no-lrp", True, False, True),
])
def test_each_ablation_builds_only_its_parts(ablation, grp, lrp, clues):
    prompt = VisualPrompt(_config(ablation), WIDTH, HIDDEN, TEXT)
    assert (prompt.needs_grp, prompt.needs_lrp, prompt.needs_clues) == (grp, lrp, clues)
    out = prompt(torch.randn(2, GRID * GRID, WIDTH), _texts())
    assert out.tokens.shape[1] == 4 + (6 if clues else 0)


def test_missing_prompt_texts_are_a_clear_error():
    prompt = VisualPrompt(_config("fusion"), WIDTH, HIDDEN, TEXT)
    with pytest.raises(ValueError, match="GRP sentence encodings"):
        prompt(torch.randn(1, GRID * GRID, WIDTH))
    with pytest.raises(ValueError, match="text encoder's width"):
        VisualPrompt(_config("full"), WIDTH, HIDDEN)


def test_ablations_switch_the_config_and_unknown_names_are_refused():
    assert set(ABLATIONS) >= {"v1", "lre", "fusion", "clues", "full"}
    full = with_ablation(load_model_config("test-micro"), "full")
    assert full.retrieval.kind == "hyperbolic" and full.fusion.enabled and full.clues.enabled
    assert with_ablation(full, "no-fcc").fusion.fcc_weight == 0.0
    assert with_ablation(full, "v1").retrieval.kind == "cosine"
    with pytest.raises(ValueError, match="no ablation 'everything'"):
        with_ablation(full, "everything")


def test_clue_selection_loss_is_the_cross_entropy_to_the_positive_labels():
    weights = torch.tensor([[0.5, 0.25, 0.25] + [0.0] * 11, [1 / 14] * 14, [1 / 14] * 14])
    labels = torch.zeros(3, 14)
    labels[0, 0] = labels[0, 1] = 1.0  # two positives: target 1/2 each
    labels[1, 2] = 1.0
    # the third study has no positive label and does not count
    expected = (-(0.5 * torch.log(torch.tensor(0.5)) + 0.5 * torch.log(torch.tensor(0.25))) + torch.log(torch.tensor(14.0))) / 2
    assert clue_selection_loss(weights, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_prompt_losses_reach_the_visual_branch_and_fcc_needs_both_branches():
    texts = _texts()
    labels = torch.zeros(2, 14)
    labels[:, 1] = 1.0
    losses = VisualPromptLosses(fcc_weight=0.5, dc_weight=1.0, selection_weight=1.0)
    full = VisualPrompt(_config("full"), WIDTH, HIDDEN, TEXT)
    tokens = torch.randn(2, GRID * GRID, WIDTH, requires_grad=True)
    terms = losses(full(tokens, texts), texts, labels)
    assert set(terms) == {"fcc", "dc", "clue_selection"}
    sum(terms.values()).backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert full.grp_attention.phi_q.weight.grad.abs().sum() > 0  # FCC moves the image side (soft IoU)
    one_branch = VisualPrompt(_config("no-lrp"), WIDTH, HIDDEN, TEXT)
    assert "fcc" not in losses(one_branch(torch.randn(2, GRID * GRID, WIDTH), texts), texts, labels)
