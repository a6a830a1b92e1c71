"""Retrieval metrics on hand-made examples: cross-modal ranks and recall, status vectors and Hamming
distances, label precision and the recall of tail labels."""

from __future__ import annotations

import numpy as np
import pytest

from prompts.vocabulary import CHEXBERT_LABELS
from retrieval.metrics import (
    STATUSES,
    cross_modal_ranks,
    cross_modal_report,
    hamming_distances,
    label_precision_at_k,
    mean_top1_hamming,
    median_rank,
    positive_sets,
    recall_at_k,
    status_vectors,
    tail_label_recall,
    tail_labels,
)

EDEMA, EFFUSION, NO_FINDING = (CHEXBERT_LABELS.index(n) for n in ("Edema", "Pleural Effusion", "No Finding"))


def _positive(*labels: int) -> np.ndarray:
    row = np.zeros(len(CHEXBERT_LABELS), dtype=bool)
    row[list(labels)] = True
    return row


def test_ranks_count_strictly_higher_scores_and_ties_are_optimistic():
    similarity = np.array(
        [
            [0.9, 0.1, 0.2],  # true item first
            [0.5, 0.3, 0.4],  # two items above it
            [0.7, 0.1, 0.7],  # tied with item 0: counted as rank 1
        ]
    )
    ranks = cross_modal_ranks(similarity)
    assert ranks.tolist() == [1, 3, 1]
    assert cross_modal_ranks(similarity.T).tolist() == [1, 1, 1]  # each column's true item scores highest
    assert recall_at_k(ranks, ks=(1, 2)) == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3)}
    assert median_rank(ranks) == 1.0
    assert median_rank(np.array([1, 2, 5, 8])) == 3.5


def test_cross_modal_report_uses_cosine_in_both_directions():
    image = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = np.array([[10.0, 0.0], [1.0, 0.2], [0.0, 3.0]])  # lengths differ: only directions count
    report = cross_modal_report(image, text, ks=(1, 2))
    # cos: row 0 [1, .98, 0], row 1 [0, .196, 1], row 2 [.707, .832, .707]
    assert report["image_to_text"] == {"recall@1": pytest.approx(1 / 3), "recall@2": 1.0, "median_rank": 2.0}
    # columns: text 0 [1, 0, .707], text 1 [.98, .196, .832], text 2 [0, 1, .707]
    assert report["text_to_image"] == {
        "recall@1": pytest.approx(1 / 3),
        "recall@2": pytest.approx(2 / 3),
        "median_rank": 2.0,
    }
    assert set(cross_modal_report(image, text)["image_to_text"]) == {
        "recall@1",
        "recall@5",
        "recall@10",
        "median_rank",
    }


def test_status_vectors_are_one_hot_per_label_and_blank_when_missing():
    vectors = status_vectors([{"Edema": "positive", "Pleural Effusion": "uncertain"}, {}])
    assert vectors.shape == (2, 14 * 4) and vectors.dtype == np.uint8
    by_label = vectors.reshape(2, 14, 4)
    assert (by_label.sum(axis=2) == 1).all()
    assert by_label[0, EDEMA].tolist() == [0, 1, 0, 0]
    assert by_label[0, EFFUSION].tolist() == [0, 0, 0, 1]
    assert (by_label[1, :, STATUSES.index("blank")] == 1).all()
    positives = positive_sets([{"Edema": "positive"}, {"No Finding": "positive", "Edema": "negative"}])
    assert positives.dtype == bool
    assert positives.tolist() == [_positive(EDEMA).tolist(), _positive(NO_FINDING).tolist()]
    with pytest.raises(ValueError, match="unknown status 'present'"):
        status_vectors([{"Edema": "present"}])
    with pytest.raises(ValueError, match="unknown CheXbert label 'Effusion'"):
        status_vectors([{"Effusion": "positive"}])


def test_hamming_distances_count_differing_positions():
    a = np.array([[1, 0, 0, 1], [0, 0, 0, 0]])
    b = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]])
    assert hamming_distances(a, b).tolist() == [[0, 4, 2], [2, 2, 4]]
    # One changed status moves the one-hot in two places.
    query = status_vectors([{"Edema": "positive"}, {}])
    retrieved = status_vectors([{"Edema": "negative"}, {}])
    assert hamming_distances(query, retrieved).tolist() == [[2, 2], [2, 0]]
    assert mean_top1_hamming(query, retrieved) == 1.0
    with pytest.raises(ValueError, match="only 0/1"):
        hamming_distances(np.array([[2, 0]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="same length"):
        hamming_distances(np.ones((1, 3)), np.ones((1, 4)))


def test_label_precision_counts_exact_positive_sets_including_no_finding():
    query = np.array([_positive(EDEMA), _positive(NO_FINDING)])
    retrieved = np.array(
        [
            [_positive(EDEMA), _positive(EDEMA, EFFUSION), _positive(NO_FINDING)],  # 1 of 3
            [_positive(NO_FINDING), _positive(NO_FINDING), _positive()],  # 2 of 3: normal for normal
        ]
    )
    assert label_precision_at_k(query, retrieved) == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert label_precision_at_k(query, retrieved[:, :1]) == 1.0
    with pytest.raises(ValueError, match=r"retrieved_positive must have shape \(2, k, 14\)"):
        label_precision_at_k(query, retrieved[:1])


def test_tail_labels_are_rare_but_present():
    train = np.zeros((100, 14), dtype=bool)
    train[:50, NO_FINDING] = True  # common
    train[:4, EDEMA] = True  # 4 % : tail
    train[:5, EFFUSION] = True  # 5 % : not below 5 %
    assert tail_labels(train) == [EDEMA]
    assert tail_labels(train, fraction=0.06) == sorted([EDEMA, EFFUSION])


def test_tail_label_recall_looks_for_the_label_in_the_top_k():
    query = np.array([_positive(EDEMA), _positive(EDEMA, EFFUSION), _positive(NO_FINDING)])
    retrieved = np.array(
        [
            [_positive(), _positive(EDEMA)],  # edema found at rank 2
            [_positive(EFFUSION), _positive(NO_FINDING)],  # effusion found, edema missed
            [_positive(EDEMA), _positive(EDEMA)],  # not positive for edema: does not count
        ]
    )
    cardiomegaly = CHEXBERT_LABELS.index("Cardiomegaly")
    recall = tail_label_recall(query, retrieved, [EDEMA, EFFUSION, cardiomegaly])
    assert recall == {"Edema": 0.5, "Pleural Effusion": 1.0, "Cardiomegaly": None, "macro": 0.75}
    assert tail_label_recall(query, retrieved, [cardiomegaly]) == {"Cardiomegaly": None, "macro": None}
    with pytest.raises(ValueError, match="indices into the 14 CheXbert labels"):
        tail_label_recall(query, retrieved, [14])
