"""Multi-Prompt Sinkhorn Attention: plan marginals, padding, gradients, and REVTAF's uniform-plan bug."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompts.sinkhorn import MultiPromptSinkhornAttention, transport_plan

# Two images, 6 visual tokens; the first has 4 real prompts, the second 2 (then padding).
PROMPT_MASK = torch.tensor([[True, True, True, True], [True, True, False, False]])


def random_cost(batch: int = 2, tokens: int = 6, prompts: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.rand(batch, tokens, prompts, generator=generator)  # 1 - cos lies in [0, 2]


def make_attention(heads: int = 1, seed: int = 0) -> MultiPromptSinkhornAttention:
    torch.manual_seed(seed)
    return MultiPromptSinkhornAttention(visual_dim=12, prompt_dim=10, dim=8, heads=heads, eps=0.05, max_iter=100, tol=1e-6)


def make_inputs(tokens: int = 6, prompts: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    visual = torch.randn(2, tokens, 12, generator=generator)
    return visual, torch.randn(2, prompts, 10, generator=generator)


def test_plan_marginals_hold_without_padding() -> None:
    plan = transport_plan(random_cost())
    assert plan.shape == (2, 6, 4)
    torch.testing.assert_close(plan.sum(dim=2), torch.full((2, 6), 1 / 6), atol=1e-3, rtol=0)
    torch.testing.assert_close(plan.sum(dim=1), torch.full((2, 4), 1 / 4), atol=1e-3, rtol=0)


def test_plan_marginals_hold_on_valid_prompts_and_padding_gets_no_mass() -> None:
    plan = transport_plan(random_cost(), PROMPT_MASK)
    torch.testing.assert_close(plan.sum(dim=2), torch.full((2, 6), 1 / 6), atol=1e-3, rtol=0)
    columns = plan.sum(dim=1)  # (B, P)
    torch.testing.assert_close(columns[0], torch.full((4,), 1 / 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(columns[1, :2], torch.full((2,), 1 / 2), atol=1e-3, rtol=0)
    assert plan[1, :, 2:].abs().max().item() < 1e-12


def test_masked_plan_has_finite_gradients() -> None:
    cost = random_cost().requires_grad_()
    plan = transport_plan(cost, PROMPT_MASK)
    weights = torch.randn(plan.shape, generator=torch.Generator().manual_seed(2))
    (plan * weights).sum().backward()
    assert torch.isfinite(cost.grad).all()
    assert cost.grad[~PROMPT_MASK[:, None, :].expand_as(cost)].abs().max().item() == 0.0
    assert cost.grad[0].abs().sum().item() > 0.0


def test_problem_without_real_prompts_gets_a_zero_plan_not_nan() -> None:
    cost = random_cost().requires_grad_()
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    plan = transport_plan(cost, mask)
    plan.sum().backward()
    assert torch.isfinite(plan).all() and torch.isfinite(cost.grad).all()
    assert plan[1].abs().max().item() == 0.0


def test_sinkhorn_plan_is_not_uniform() -> None:
    plan = transport_plan(random_cost())
    uniform = 1 / (6 * 4)
    assert plan.max().item() > 2 * uniform and plan.min().item() < uniform / 2


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_maps_differ_across_prompts_and_rows_sum_to_one(heads: int) -> None:
    visual, prompts = make_inputs()
    output = make_attention(heads)(visual, prompts)
    assert output.fused.shape == (2, 6, 8)
    assert output.attention_maps.shape == (2, 4, 6)
    # Each visual token spreads one unit of attention over the prompts (T * N; Sinkhorn ends on a
    # column update, so rows are exact only to the solver's tolerance, here scaled by N).
    torch.testing.assert_close(output.attention_maps.sum(dim=1), torch.ones(2, 6), atol=1e-2, rtol=0)
    maps = output.attention_maps
    assert (maps[:, 0] - maps[:, 1]).abs().max().item() > 0.1


@pytest.mark.parametrize("heads", [1, 2])
def test_gradients_reach_phi_q_and_phi_k_through_the_plan(heads: int) -> None:
    attention = make_attention(heads)
    visual, prompts = make_inputs()
    output = attention(visual, prompts, PROMPT_MASK)
    target = torch.randn(output.fused.shape, generator=torch.Generator().manual_seed(3))
    (output.fused * target).sum().backward()
    # Q and K reach the output only through the cost, hence only through the transport plan.
    for layer in (attention.phi_q, attention.phi_k):
        assert torch.isfinite(layer.weight.grad).all()
        assert layer.weight.grad.abs().sum().item() > 1e-6


def test_revtaf_layout_gives_a_uniform_plan_and_ours_is_not_fooled() -> None:
    attention = make_attention()
    visual, prompts = make_inputs(tokens=49, prompts=5)
    with torch.no_grad():
        queries = F.normalize(attention.phi_q(visual), dim=-1)  # (B, 49, d)
        keys = F.normalize(attention.phi_k(prompts), dim=-1)  # (B, P, d)
        cost = 1.0 - queries @ keys.transpose(1, 2)  # (B, 49, P)
        # REVTAF feeds the image as [1, 49, B, C]: OTSeg's query axis (the one it transports the
        # prompts onto) has size 1, so every visual token is its own (P prompts x 1) problem.
        revtaf_plan = transport_plan(cost.reshape(2 * 49, 5, 1))  # (B*49, P, 1)
        other_cost_plan = transport_plan(cost.flip(-1).reshape(2 * 49, 5, 1))
        ours = transport_plan(cost)  # (B, 49, P)
        ours_maps = attention(visual, prompts).attention_maps  # (B, P, 49)
    # The bug: one-column problems admit only the uniform plan, whatever the cost.
    torch.testing.assert_close(revtaf_plan, torch.full_like(revtaf_plan, 1 / 5))
    torch.testing.assert_close(other_cost_plan, revtaf_plan)
    # Ours, on the same cost: tokens prefer different prompts.
    assert ours.max().item() > 2 / (49 * 5)
    assert ours_maps.std(dim=1).mean().item() > 0.05


@pytest.mark.parametrize("heads", [1, 2])
def test_padded_prompts_do_not_change_the_output(heads: int) -> None:
    attention = make_attention(heads)
    visual, prompts = make_inputs()
    padded = prompts.clone()
    padded[1, 2:] = 100.0  # garbage in the padding must not leak
    with torch.no_grad():
        batched = attention(visual, padded, PROMPT_MASK)
        alone = [attention(visual[i : i + 1], prompts[i : i + 1, :n]) for i, n in enumerate((4, 2))]
    for i, n in enumerate((4, 2)):
        valid_maps = batched.attention_maps[i, :n]
        torch.testing.assert_close(batched.fused[i], alone[i].fused[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(valid_maps, alone[i].attention_maps[0], atol=1e-4, rtol=0)
    assert batched.attention_maps[1, 2:].abs().max().item() == 0.0
