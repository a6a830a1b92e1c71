"""FCC loss: soft IoU by hand, the loss by hand, masking, and gradients back to the image side."""

from __future__ import annotations

import math

import torch

from prompts.consistency import FineGrainedConsistencyLoss, soft_iou
from prompts.sinkhorn import MultiPromptSinkhornAttention

GRP_MAP = [1.0, 0.0, 0.5]
ZERO_MAP = [0.0, 0.0, 0.0]
HALF_MAP = [0.5, 0.5, 0.5]  # with GRP_MAP: min sums to 1.0, max to 2.0 -> IoU 0.5
TOP_MAP = [1.0, 1.0, 0.0]  # with GRP_MAP: min sums to 1.0, max to 2.5 -> IoU 0.4


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_soft_iou_matches_hand_computation_and_is_zero_for_empty_maps() -> None:
    maps_a = torch.tensor([[GRP_MAP, ZERO_MAP]])  # (1, 2, 3)
    maps_b = torch.tensor([[HALF_MAP, TOP_MAP, ZERO_MAP]])  # (1, 3, 3)
    expected = torch.tensor([[[0.5, 0.4, 0.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(soft_iou(maps_a, maps_b), expected)


def test_soft_iou_gradient_is_finite_on_empty_maps() -> None:
    maps_a = torch.zeros(1, 1, 3, requires_grad=True)
    soft_iou(maps_a, torch.zeros(1, 1, 3)).sum().backward()
    assert torch.isfinite(maps_a.grad).all()


def test_fcc_loss_matches_hand_computation() -> None:
    grp_text = torch.tensor([[[1.0, 0.0]]])  # (1, 1, 2)
    lrp_text = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])  # cosines 1 and 0 with the GRP
    loss = FineGrainedConsistencyLoss()(
        grp_text, lrp_text, torch.tensor([[GRP_MAP]]), torch.tensor([[HALF_MAP, TOP_MAP]])
    )
    expected = ((1 - sigmoid(1.0) * 0.5) + (1 - sigmoid(0.0) * 0.4)) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_masked_pairs_do_not_count() -> None:
    fcc = FineGrainedConsistencyLoss()
    generator = torch.Generator().manual_seed(0)
    grp_text, lrp_text = torch.randn(1, 2, 4, generator=generator), torch.randn(1, 3, 4, generator=generator)
    grp_maps, lrp_maps = torch.rand(1, 2, 5, generator=generator), torch.rand(1, 3, 5, generator=generator)
    unpadded = fcc(grp_text, lrp_text, grp_maps, lrp_maps)

    # Pad both sides with junk, and add a second study that is all padding.
    grp_pad = torch.cat([grp_text, torch.randn(1, 1, 4, generator=generator)], dim=1).repeat(2, 1, 1)
    lrp_pad = torch.cat([lrp_text, torch.randn(1, 2, 4, generator=generator)], dim=1).repeat(2, 1, 1)
    grp_maps_pad = torch.cat([grp_maps, torch.rand(1, 1, 5, generator=generator)], dim=1).repeat(2, 1, 1)
    lrp_maps_pad = torch.cat([lrp_maps, torch.rand(1, 2, 5, generator=generator)], dim=1).repeat(2, 1, 1)
    grp_mask = torch.tensor([[True, True, False], [False, False, False]])
    lrp_mask = torch.tensor([[True, True, True, False, False], [True, True, True, False, False]])
    padded = fcc(grp_pad, lrp_pad, grp_maps_pad, lrp_maps_pad, grp_mask, lrp_mask)
    torch.testing.assert_close(padded, unpadded)


def test_fcc_loss_is_lower_when_similar_prompts_attend_to_the_same_place() -> None:
    fcc = FineGrainedConsistencyLoss()
    grp_text = torch.tensor([[[1.0, 0.2, 0.0]]])
    lrp_text = torch.tensor([[[0.9, 0.25, 0.05]]])  # near-paraphrase of the GRP sentence
    grp_maps = torch.tensor([[[0.9, 0.8, 0.1, 0.0]]])
    same_place = fcc(grp_text, lrp_text, grp_maps, torch.tensor([[[0.8, 0.9, 0.0, 0.1]]]))
    disjoint = fcc(grp_text, lrp_text, grp_maps, torch.tensor([[[0.0, 0.1, 0.9, 0.8]]]))
    assert same_place.item() < disjoint.item() - 0.3


def test_fcc_gradient_reaches_the_visual_branch() -> None:
    torch.manual_seed(0)
    sizes = {"heads": 1, "eps": 0.05, "max_iter": 100, "tol": 1e-6}
    grp_branch = MultiPromptSinkhornAttention(visual_dim=12, prompt_dim=10, dim=8, **sizes)
    lrp_branch = MultiPromptSinkhornAttention(visual_dim=12, prompt_dim=10, dim=8, **sizes)
    generator = torch.Generator().manual_seed(1)
    visual = torch.randn(2, 9, 12, generator=generator, requires_grad=True)
    grp_text = torch.randn(2, 3, 10, generator=generator)
    lrp_text = torch.randn(2, 5, 10, generator=generator)
    grp_mask = torch.tensor([[True, True, True], [True, True, False]])

    grp_maps = grp_branch(visual, grp_text, grp_mask).attention_maps  # (B, 3, 9)
    lrp_maps = lrp_branch(visual, lrp_text).attention_maps  # (B, 5, 9)
    loss = FineGrainedConsistencyLoss()(grp_text, lrp_text, grp_maps, lrp_maps, grp_mask)
    loss.backward()

    for gradient in (grp_branch.phi_q.weight.grad, lrp_branch.phi_q.weight.grad, visual.grad):
        assert gradient is not None and torch.isfinite(gradient).all()
        assert gradient.abs().sum().item() > 1e-6
