"""TRRG's disease clues: templates from config, clue weights, top-k, the clue interaction module and L_dc."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prompts.clues import (
    DEFAULT_CLUE_TEMPLATES,
    ClueInteraction,
    DiseaseClueLoss,
    clue_texts,
    clue_weights,
    disease_clue_loss,
    templates_from_config,
    top_k_clues,
)
from prompts.vocabulary import CHEXBERT_LABELS


def default_config() -> dict[str, dict[str, str]]:
    return {t.label: {"severity": t.severity, "location": t.location} for t in DEFAULT_CLUE_TEMPLATES}


def test_default_templates_cover_the_14_labels_in_trrg_form():
    texts = clue_texts()
    assert [t.label for t in DEFAULT_CLUE_TEMPLATES] == list(CHEXBERT_LABELS)
    assert len(set(texts)) == 14 and all(text.startswith("Clue: ") and " at " in text for text in texts)
    by_label = dict(zip(CHEXBERT_LABELS, texts, strict=True))
    assert by_label["Pleural Effusion"] == "Clue: moderate pleural effusion at costophrenic angle"
    assert by_label["Support Devices"] == "Clue: support device at chest"
    assert by_label["No Finding"] == "Clue: no acute cardiopulmonary abnormality at chest"


def test_templates_come_from_config():
    config = default_config()
    config["Pleural Effusion"] = {"severity": "small", "location": "left costophrenic angle"}
    config["Pneumothorax"] = {
        "severity": "large",
        "location": "right apex",
        "disease": "tension pneumothorax",
    }
    texts = dict(zip(CHEXBERT_LABELS, clue_texts(templates_from_config(config)), strict=True))
    assert texts["Pleural Effusion"] == "Clue: small pleural effusion at left costophrenic angle"
    assert texts["Pneumothorax"] == "Clue: large tension pneumothorax at right apex"
    assert texts["Cardiomegaly"] == "Clue: moderate cardiomegaly at cardiac silhouette"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("Edema"), "missing \\['Edema'\\]"),
        (
            lambda c: c.update({"Pneumonitis": {"severity": "mild", "location": "lung"}}),
            "unknown \\['Pneumonitis'\\]",
        ),
        (lambda c: c["Edema"].pop("location"), "'Edema' needs 'severity' and 'location'"),
        (lambda c: c["Edema"].update({"side": "left"}), "'Edema' needs"),
    ],
)
def test_template_config_with_missing_or_unknown_entries_raises(change, message):
    config = default_config()
    change(config)
    with pytest.raises(ValueError, match=message):
        templates_from_config(config)


def test_clue_weights_are_a_softmax_and_the_aligned_clue_weighs_most():
    torch.manual_seed(0)
    clue_cls = torch.randn(14, 16)
    visual_cls = torch.cat([3 * clue_cls[5:6], torch.randn(2, 16)])  # image 0 points at clue 5
    weights = clue_weights(visual_cls, clue_cls)
    assert weights.shape == (3, 14) and bool((weights > 0).all())
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert int(weights[0].argmax()) == 5
    logits = torch.tensor([[2.0, 0.0]]) @ torch.eye(2)
    torch.testing.assert_close(
        clue_weights(torch.tensor([[2.0, 0.0]]), torch.eye(2)), torch.softmax(logits, -1)
    )


def test_top_k_picks_the_heaviest_clues_heaviest_first():
    weights = torch.tensor([[0.1, 0.4, 0.05, 0.3, 0.15], [0.5, 0.02, 0.08, 0.1, 0.3]])
    indices, top = top_k_clues(weights, 3)
    assert indices.tolist() == [[1, 3, 4], [0, 4, 3]]
    torch.testing.assert_close(top, torch.tensor([[0.4, 0.3, 0.15], [0.5, 0.3, 0.1]]))


@pytest.mark.parametrize("k", [0, 6, -1])
def test_top_k_outside_one_to_c_raises(k):
    with pytest.raises(ValueError, match="k must be in 1..C"):
        top_k_clues(torch.full((2, 5), 0.2), k)


def test_interaction_takes_k_from_the_constructor_and_has_the_documented_shapes():
    torch.manual_seed(0)
    module = ClueInteraction(visual_dim=6, clue_dim=5, dim=16, queries=4, heads=8, k=2)
    out = module(torch.randn(3, 9, 6), torch.randn(3, 6), torch.randn(14, 5))
    assert out.tokens.shape == (3, 8, 16)  # [E^v ; E^c]: 2L tokens
    assert out.selected.shape == out.selected_weights.shape == (3, 2)
    assert out.all_weights.shape == (3, 14)
    assert out.visual_summary.shape == out.clue_summary.shape == (3, 16)
    assert out.clue_attention.shape == (3, 2, 9)
    indices, weights = top_k_clues(out.all_weights, 2)
    assert torch.equal(out.selected, indices) and torch.equal(out.selected_weights, weights)
    assert module.config() == {"visual_dim": 6, "clue_dim": 5, "dim": 16, "queries": 4, "heads": 8, "k": 2}
    with pytest.raises(ValueError, match="k must be in 1..C"):
        module(torch.randn(3, 9, 6), torch.randn(3, 6), torch.randn(1, 5))  # fewer clues than k


def test_interaction_rejects_heads_that_do_not_divide_dim():
    with pytest.raises(
        ValueError, match=r"dim \(12\) must be divisible by the number of attention heads \(8\)"
    ):
        ClueInteraction(visual_dim=6, clue_dim=5, dim=12, queries=4, heads=8, k=3)


def test_gradients_reach_visual_tokens_clue_projection_and_queries():
    torch.manual_seed(0)
    module = ClueInteraction(visual_dim=6, clue_dim=5, dim=8, queries=3, heads=2, k=3)
    visual_tokens = torch.randn(2, 4, 6, requires_grad=True)
    out = module(visual_tokens, torch.randn(2, 6), torch.randn(14, 5))
    (out.tokens.pow(2).mean() + disease_clue_loss(out.visual_summary, out.clue_summary)).backward()
    for name, grad in [
        ("visual tokens", visual_tokens.grad),
        ("clue projection", module.clue_proj.weight.grad),
        ("queries", module.queries.grad),
    ]:
        assert grad is not None and bool(grad.abs().sum() > 0), name


def test_clue_weights_learn_through_the_weighted_selection():
    # visual_cls is used only for the clue weights, so its gradient must come through the top-k path.
    torch.manual_seed(0)
    module = ClueInteraction(visual_dim=6, clue_dim=5, dim=8, queries=3, heads=2, k=2)
    visual_cls = torch.randn(2, 6, requires_grad=True)
    out = module(torch.randn(2, 4, 6), visual_cls, torch.randn(14, 5))
    out.tokens.pow(2).mean().backward()
    assert visual_cls.grad is not None and bool(visual_cls.grad.abs().sum() > 0)


def test_disease_clue_loss_is_minus_mean_cosine():
    a = torch.tensor([[1.0, 2.0, -1.0]])
    assert float(disease_clue_loss(a, a.clone())) == pytest.approx(-1.0)
    assert float(disease_clue_loss(a, -3 * a)) == pytest.approx(1.0)
    visual = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    clue = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cos 1/sqrt(2) and 0
    assert float(DiseaseClueLoss()(visual, clue)) == pytest.approx(-(1 / math.sqrt(2)) / 2)


def test_disease_clue_loss_gradient_reaches_both_summaries():
    torch.manual_seed(0)
    visual, clue = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True)
    disease_clue_loss(visual, clue).backward()
    assert bool(visual.grad.abs().sum() > 0) and bool(clue.grad.abs().sum() > 0)


def test_clue_attention_rows_are_distributions_over_the_visual_tokens():
    torch.manual_seed(0)
    module = ClueInteraction(visual_dim=6, clue_dim=5, dim=16, queries=4, heads=4, k=3)
    out = module(torch.randn(2, 9, 6), torch.randn(2, 6), torch.randn(14, 5))
    assert bool((out.clue_attention >= 0).all())
    torch.testing.assert_close(out.clue_attention.sum(dim=-1), torch.ones(2, 3))


def _identity_attention(attention: nn.MultiheadAttention, out_scale: float) -> None:
    dim = attention.embed_dim
    attention.in_proj_weight.copy_(torch.eye(dim).repeat(3, 1))
    attention.in_proj_bias.zero_()
    attention.out_proj.weight.copy_(out_scale * torch.eye(dim))
    attention.out_proj.bias.zero_()


@torch.no_grad()
def test_clue_attention_follows_the_real_attention_to_the_matching_visual_token():
    # Hand-set weights: query 0 reads direction u and query 1 direction w, in both streams. The clue
    # equal to visual token 0 (along u) must look at token 0; the clue along w at token 1.
    module = ClueInteraction(visual_dim=4, clue_dim=4, dim=4, queries=2, heads=1, k=2)
    for proj in (module.visual_proj, module.clue_proj):
        proj.weight.copy_(torch.eye(4))
        proj.bias.zero_()
    for block in (module.visual_self, module.clue_self):
        _identity_attention(block.attention, out_scale=0.0)  # V' = V, C' = C
    for readout in (module.visual_readout, module.clue_readout):
        _identity_attention(readout.attention, out_scale=1.0)
    u, w = torch.tensor([1.0, -1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, -1.0])
    module.queries.copy_(torch.stack([u, w]))
    visual_tokens = torch.stack([10 * u, 10 * w, torch.zeros(4)]).unsqueeze(0)  # (1, 3, 4)
    clues = torch.stack([10 * w, 10 * u])  # clue 0 along w, clue 1 along u
    out = module(visual_tokens, torch.zeros(1, 4), clues)
    looked_at = {
        int(c): int(row.argmax()) for c, row in zip(out.selected[0], out.clue_attention[0], strict=True)
    }
    assert looked_at == {0: 1, 1: 0}
    assert float(out.clue_attention.max()) > 0.9  # sharp, far from uniform (1/3)
