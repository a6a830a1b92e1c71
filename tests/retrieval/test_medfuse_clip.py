"""MedFuse-CLIP's loss: InfoNCE by hand, the margin over the K closest allowed negatives with eq. 8's
weights, gradients, and the same-patient/different-labels rule for hard negatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retrieval.medfuse_clip import MedFuseLoss, MedFuseLossOutput, hard_negative_mask


def _no_negatives(batch: int) -> torch.Tensor:
    return torch.zeros(batch, batch, dtype=torch.bool)


def test_info_nce_equals_a_hand_computation_on_three_pairs():
    image = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # unit after normalising
    text = torch.tensor([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 0.6, 0.8]])
    similarity = [[0.6, 0.0, 0.0], [0.8, 1.0, 0.6], [0.0, 0.0, 0.8]]  # s_ij = cos(image_i, text_j)
    tau = 0.5
    rows = [
        -math.log(math.exp(similarity[i][i] / tau) / sum(math.exp(s / tau) for s in similarity[i]))
        for i in range(3)
    ]
    columns = [
        -math.log(math.exp(similarity[j][j] / tau) / sum(math.exp(similarity[i][j] / tau) for i in range(3)))
        for j in range(3)
    ]
    expected = (sum(rows) / 3 + sum(columns) / 3) / 2  # eq. 9, the two directions averaged

    loss = MedFuseLoss(temperature=tau)
    output = loss(image, text, _no_negatives(3), torch.zeros(3, 3))
    assert isinstance(output, MedFuseLossOutput)
    assert output.info_nce.item() == pytest.approx(expected, rel=1e-6)
    assert output.margin.item() == 0.0
    assert output.total.item() == pytest.approx(expected, rel=1e-6)
    assert loss.temperature == pytest.approx(tau)


def test_aligned_separated_pairs_have_near_zero_loss_and_loss_falls_as_alignment_improves():
    torch.manual_seed(0)
    batch = 6
    image = torch.eye(batch, 8)  # orthogonal pairs: s_ii = 1, s_ij = 0
    everyone_else = ~torch.eye(batch, dtype=torch.bool)
    text_similarity = torch.rand(batch, batch)
    loss = MedFuseLoss()
    aligned = loss(image, image.clone(), everyone_else, text_similarity)
    assert aligned.margin.item() == 0.0  # 0.2 + 0 - 1 < 0 for every negative
    assert aligned.info_nce.item() < 1e-5  # 5 * exp(-1 / 0.07)

    noise = torch.randn(batch, 8)
    totals = [
        loss(image, image + scale * noise, everyone_else, text_similarity).total.item()
        for scale in (2, 1, 0.5, 0.1)
    ]
    assert totals == sorted(totals, reverse=True)
    assert totals[-1] > aligned.total.item()


def test_margin_counts_only_allowed_negatives():
    loss = MedFuseLoss(margin=0.2)
    similarity = torch.tensor([[0.5, 0.6, 0.1], [0.0, 0.9, 0.0], [0.0, 0.0, 0.9]])
    negatives = torch.tensor([[False, True, False], [False, False, False], [False, False, False]])
    text_similarity = torch.ones(3, 3)
    before = loss.margin_loss(similarity, negatives, text_similarity)
    assert before.item() == pytest.approx(0.3)  # row 0 alone: 0.2 + 0.6 - 0.5; the others have none

    disallowed = similarity.clone()
    disallowed[0, 2] = 0.95  # a violating pair, but not an allowed negative
    disallowed[1, 0] = 0.95
    assert loss.margin_loss(disallowed, negatives, text_similarity).item() == pytest.approx(0.3)
    allowed = similarity.clone()
    allowed[0, 1] = 0.7
    assert loss.margin_loss(allowed, negatives, text_similarity).item() == pytest.approx(0.4)
    # The diagonal is the positive, never a negative, even when the mask says so.
    with_diagonal = negatives | torch.eye(3, dtype=torch.bool)
    assert loss.margin_loss(similarity, with_diagonal, text_similarity).item() == pytest.approx(0.3)
    assert loss.margin_loss(similarity, torch.zeros(3, 3, dtype=torch.bool), text_similarity).item() == 0.0


def test_margin_keeps_only_the_k_closest_reports_by_text():
    loss = MedFuseLoss(margin=0.2, hard_negatives=2)
    similarity = torch.full((4, 4), 0.0).fill_diagonal_(1.0)
    similarity[0] = torch.tensor([0.5, 0.0, 0.0, 0.0])
    negatives = torch.zeros(4, 4, dtype=torch.bool)
    negatives[0, 1:] = True
    text_similarity = torch.zeros(4, 4)
    text_similarity[0, 1:] = torch.tensor([0.9, 0.8, 0.1])  # report 3 is the farthest in text

    base = loss.margin_loss(similarity, negatives, text_similarity).item()
    third = similarity.clone()
    third[0, 3] = 0.9  # violates the margin, yet is not among the 2 closest by text
    assert loss.margin_loss(third, negatives, text_similarity).item() == pytest.approx(base)
    first = similarity.clone()
    first[0, 1] = 0.9
    assert loss.margin_loss(first, negatives, text_similarity).item() > base + 0.1
    # With K = 3 it is counted.
    assert (
        MedFuseLoss(margin=0.2, hard_negatives=3).margin_loss(third, negatives, text_similarity).item() > base
    )


def test_negatives_are_weighted_by_the_softmax_of_text_similarity():
    loss = MedFuseLoss(margin=0.2, hard_negatives=4)
    similarity = torch.eye(3)
    similarity[0] = torch.tensor([0.5, 0.6, 0.4])  # hinges 0.3 and 0.1
    negatives = torch.tensor([[False, True, True], [False, False, False], [False, False, False]])
    text_similarity = torch.tensor([[1.0, 0.9, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w1 = math.exp(0.9) / (math.exp(0.9) + math.exp(0.1))  # eq. 8 over row 0's negatives
    expected = w1 * 0.3 + (1 - w1) * 0.1
    assert loss.margin_loss(similarity, negatives, text_similarity).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_gradients_reach_both_embeddings_and_the_temperature():
    torch.manual_seed(1)
    image = torch.randn(5, 8, requires_grad=True)
    text = torch.randn(5, 8, requires_grad=True)
    loss = MedFuseLoss(margin=0.5)
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 1], [0, 0]])
    output = loss(image, text, hard_negative_mask(labels), torch.randn(5, 5))
    assert output.margin.item() > 0
    output.total.backward()
    for gradient in (image.grad, text.grad, loss.logit_scale.grad):
        assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_logit_scale_is_clamped_at_100_and_keeps_its_gradient():
    torch.manual_seed(2)
    loss = MedFuseLoss()
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    output = loss(torch.randn(4, 8), torch.randn(4, 8), _no_negatives(4), torch.zeros(4, 4))
    assert loss.temperature == pytest.approx(0.01)
    output.total.backward()
    assert loss.logit_scale.grad.abs().item() > 0


def test_hard_negatives_share_the_patient_and_differ_in_labels():
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    patients = ["p1", "p1", "p1", "p2"]
    mask = hard_negative_mask(labels, patients)
    expected = torch.tensor(
        [
            [False, True, False, False],  # 2 has the same labels, 3 another patient
            [True, False, True, False],
            [False, True, False, False],
            [False, False, False, False],  # alone with its patient
        ]
    )
    assert torch.equal(mask, expected)
    # Without patients (IU X-Ray), any other sample with different labels.
    assert torch.equal(
        hard_negative_mask(torch.tensor(labels)), torch.tensor(labels[:, None] != labels[None]).any(2)
    )


def test_bad_input_is_refused_plainly():
    loss = MedFuseLoss()
    image, text = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="text_embeddings must have the shape"):
        loss(image, torch.randn(3, 5), _no_negatives(3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="image_embeddings must have shape"):
        loss(torch.randn(4), torch.randn(4), _no_negatives(1), torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"negatives must be a \(3, 3\) bool mask"):
        loss(image, text, torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="text_similarity must be"):
        loss(image, text, _no_negatives(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="hard_negatives must be a positive integer"):
        MedFuseLoss(hard_negatives=0)
    with pytest.raises(ValueError, match="temperature must be"):
        MedFuseLoss(temperature=0.0)
    with pytest.raises(ValueError, match="got 2 patient_ids for 3"):
        hard_negative_mask(np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="label_vectors must have shape"):
        hard_negative_mask(np.zeros(3))
