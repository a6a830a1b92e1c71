"""Retrieval metrics: cross-modal recall and rank (MedFuse-CLIP's evaluation, section III), and
label-space agreement between a study and the reference reports retrieved for it (REVTAF section 3.3).

Cross-modal: query i's true item is item i (image i was taken with report i). Label space: each
report is judged by its CheXbert labels, so a retrieved report is good when it describes the same
findings as the query's own report, whatever its wording.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from prompts.vocabulary import CHEXBERT_LABELS, LABEL_STATUSES
from retrieval.reference_reports import finite_rows

STATUSES = LABEL_STATUSES  # ("blank", "positive", "negative", "uncertain"): CheXbert's class order
DEFAULT_KS = (1, 5, 10)


# -- Cross-modal retrieval -------------------------------------------------------------------------


def cross_modal_ranks(similarity: np.ndarray) -> np.ndarray:
    """(N,) 1-based rank of the true item i among all N items for each query row i of (N, N) scores.

    Ties are optimistic: the rank is 1 + the number of items scored strictly higher than the true
    one, so an item tied with it does not push it down. Exact ties are rare in float scores; this
    way a tie does not depend on the order in which items are stored.
    """
    similarity = finite_matrix(similarity, "similarity")
    if similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N, N), got {similarity.shape}")
    true_scores = similarity.diagonal()[:, None]  # (N, 1)
    return 1 + (similarity > true_scores).sum(axis=1)


def recall_at_k(ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: fraction of queries whose true item ranks within the top k}."""
    ranks = _ranks(ranks)
    return {k: float((ranks <= k).mean()) for k in _ks(ks)}


def median_rank(ranks: np.ndarray) -> float:
    """The median of the 1-based ranks (MedFuse-CLIP reports 6 image->text, 8 text->image)."""
    return float(np.median(_ranks(ranks)))


def cross_modal_report(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, ks: Iterable[int] = DEFAULT_KS
) -> dict[str, dict[str, float]]:
    """Recall@k and median rank in both directions under cosine similarity, row i of each a pair.

    {"image_to_text": {"recall@1": ..., "recall@5": ..., "recall@10": ..., "median_rank": ...},
     "text_to_image": {...}}
    """
    ks = _ks(ks)
    image, text = paired_unit_rows(image_embeddings, text_embeddings)
    similarity = image @ text.T  # (N, N) cos(image_i, text_j)
    report = {}
    for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        ranks = cross_modal_ranks(scores)
        report[direction] = {f"recall@{k}": value for k, value in recall_at_k(ranks, ks).items()}
        report[direction]["median_rank"] = median_rank(ranks)
    return report


# -- Label space -----------------------------------------------------------------------------------


def status_vectors(labels: Sequence[Mapping[str, str]]) -> np.ndarray:
    """(N, 14 * 4) uint8: per CheXbert label (CHEXBERT_LABELS order) a one-hot of its status (STATUSES
    order), REVTAF's status vector. A label missing from a mapping is blank.

    A label name or status outside the vocabulary is a ValueError: a misspelt key would otherwise
    count as blank and quietly change every distance.
    """
    label_columns = {label: column for column, label in enumerate(CHEXBERT_LABELS)}
    status_columns = {status: column for column, status in enumerate(STATUSES)}
    if isinstance(labels, Mapping):
        raise ValueError("labels must hold one mapping per report, not be one mapping")  # noqa: TRY004
    vectors = np.zeros((len(labels), len(CHEXBERT_LABELS), len(STATUSES)), dtype=np.uint8)  # (N, 14, 4)
    vectors[:, :, status_columns["blank"]] = 1
    for row, report_labels in enumerate(labels):
        if not isinstance(report_labels, Mapping):
            kind = type(report_labels).__name__
            raise ValueError(f"labels[{row}] must map label names to statuses, got {kind}")  # noqa: TRY004
        for label, status in report_labels.items():
            if label not in label_columns:
                raise ValueError(f"labels[{row}] has unknown CheXbert label {label!r}")
            if status not in status_columns:
                raise ValueError(f"labels[{row}][{label!r}] has unknown status {status!r}; known: {STATUSES}")
            vectors[row, label_columns[label]] = 0
            vectors[row, label_columns[label], status_columns[status]] = 1
    return vectors.reshape(len(labels), -1)


def positive_sets(labels: Sequence[Mapping[str, str]]) -> np.ndarray:
    """(N, 14) bool: which CheXbert labels each report marks positive."""
    vectors = status_vectors(labels).reshape(len(labels), len(CHEXBERT_LABELS), len(STATUSES))
    return vectors[:, :, STATUSES.index("positive")].astype(bool)


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) int: the number of positions where binary vectors a_i and b_j differ (REVTAF eq. 6)."""
    a, b = _binary(a, "a"), _binary(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same length L, got {a.shape} and {b.shape}")
    # For 0/1 entries, |a - b| = a + b - 2ab: one matrix product instead of an (N, M, L) array, in
    # float32 for BLAS's speed; the counts are at most L, which float32 holds exactly.
    ones_a, ones_b = a.sum(axis=1), b.sum(axis=1)  # (N,), (M,) int
    shared = np.rint(a.astype(np.float32) @ b.astype(np.float32).T).astype(np.int64)  # (N, M) both 1
    return ones_a[:, None] + ones_b[None, :] - 2 * shared  # eq. 6


def mean_top1_hamming(query_vectors: np.ndarray, retrieved_vectors: np.ndarray) -> float:
    """The mean Hamming distance between each query's status vector and its top-1 retrieved report's."""
    query = _binary(query_vectors, "query_vectors")
    retrieved = _binary(retrieved_vectors, "retrieved_vectors")
    if query.shape != retrieved.shape or len(query) == 0:
        raise ValueError(
            f"query_vectors and retrieved_vectors must share one shape (Q, L) with Q >= 1, "
            f"got {query.shape} and {retrieved.shape}"
        )
    return float((query != retrieved).sum(axis=1).mean())  # eq. 6, row by row


def label_precision_at_k(query_positive: np.ndarray, retrieved_positive: np.ndarray) -> float:
    """The mean over queries of the fraction of their top k retrieved reports that are relevant.

    query_positive: (Q, 14) positive labels of each query's own report; retrieved_positive:
    (Q, k, 14) those of its top k retrieved reports, best first (k is read from the shape).
    A retrieved report is relevant when its positive labels are exactly the query's: 'No Finding'
    is one of the labels, so a normal report retrieved for a normal study counts, and a report that
    adds or misses a finding does not (the generator would copy that difference).
    """
    query, retrieved = _query_and_retrieved(query_positive, retrieved_positive)
    relevant = (retrieved == query[:, None, :]).all(axis=2)  # (Q, k)
    return float(relevant.mean(axis=1).mean())


def tail_labels(train_positive: np.ndarray, fraction: float = 0.05) -> list[int]:
    """The CheXbert label indices positive in at least one but fewer than `fraction` of the training
    reports: the long tail, where retrieval by overall similarity tends to fail."""
    train = _binary(train_positive, "train_positive")
    if train.shape[1] != len(CHEXBERT_LABELS) or len(train) == 0:
        raise ValueError(
            f"train_positive must have shape (N, {len(CHEXBERT_LABELS)}) with N >= 1, got {train.shape}"
        )
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    counts = train.sum(axis=0)  # (14,)
    return [int(label) for label in np.flatnonzero((counts >= 1) & (counts < fraction * len(train)))]


def tail_label_recall(
    query_positive: np.ndarray, retrieved_positive: np.ndarray, labels: Sequence[int]
) -> dict[str, float | None]:
    """Per label (by name): of the queries positive for it, the fraction whose top k retrieved reports
    include at least one positive for it; None when no query is positive for it. "macro": their
    mean over the labels with queries (None when none has).

    query_positive: (Q, 14); retrieved_positive: (Q, k, 14); labels: indices into CHEXBERT_LABELS,
    e.g. from `tail_labels`.
    """
    query, retrieved = _query_and_retrieved(query_positive, retrieved_positive)
    labels = list(labels)
    indices = [
        label for label in labels if isinstance(label, (int, np.integer)) and not isinstance(label, bool)
    ]
    if len(indices) != len(labels) or not all(0 <= label < len(CHEXBERT_LABELS) for label in indices):
        raise ValueError(
            f"labels must be indices into the {len(CHEXBERT_LABELS)} CheXbert labels, got {labels}"
        )
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {labels}")
    recall: dict[str, float | None] = {}
    for label in labels:
        positive_queries = query[:, label]  # (Q,)
        found = retrieved[positive_queries, :, label].any(axis=1)  # (Q_label,)
        recall[CHEXBERT_LABELS[label]] = float(found.mean()) if positive_queries.any() else None
    measured = [value for value in recall.values() if value is not None]
    recall["macro"] = float(np.mean(measured)) if measured else None
    return recall


# -- Argument checks -------------------------------------------------------------------------------


def finite_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """(N, D) float64 of real, finite numbers with N, D >= 1; ValueError naming `what` otherwise."""
    shape = np.shape(values)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"{what} must have shape (N, D) with N, D >= 1, got {shape}")
    return finite_rows(values, shape[1], what)


def paired_unit_rows(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both modalities' embeddings as unit rows of one shape (N, D), row i of each a pair."""
    image = unit_rows(image_embeddings, "image_embeddings")
    text = unit_rows(text_embeddings, "text_embeddings")
    if image.shape != text.shape:
        raise ValueError(
            f"image and text embeddings must have the same shape, got {image.shape} and {text.shape}"
        )
    return image, text


def unit_rows(vectors: np.ndarray, what: str) -> np.ndarray:
    """(N, D) float64 rows scaled to unit length, for cosine; ValueError on a zero row."""
    vectors = finite_matrix(vectors, what)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms[:, 0] == 0)
        raise ValueError(f"{what} contain zero vectors, which have no direction (rows {bad[:5].tolist()})")
    return vectors / norms


def _ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or len(ranks) == 0 or not np.issubdtype(ranks.dtype, np.integer) or (ranks < 1).any():
        raise ValueError(f"ranks must be a non-empty 1-D array of integers >= 1, got {ranks!r}")
    return ranks


def _ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return ks


def _binary(values: np.ndarray, what: str) -> np.ndarray:
    """A 2-D bool array from bools or 0/1 numbers."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array, got shape {values.shape}")
    if (
        not (values.dtype == bool or np.issubdtype(values.dtype, np.number))
        or not np.isin(values, (0, 1)).all()
    ):
        raise ValueError(f"{what} must hold only 0/1 or booleans")
    return values.astype(bool)


def _query_and_retrieved(
    query_positive: np.ndarray, retrieved_positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, 14) and (Q, k, 14) bool arrays of positive labels, checked against each other."""
    labels = len(CHEXBERT_LABELS)
    query = _binary(query_positive, "query_positive")
    if query.shape[1] != labels or len(query) == 0:
        raise ValueError(f"query_positive must have shape (Q, {labels}) with Q >= 1, got {query.shape}")
    shape = np.shape(retrieved_positive)
    if len(shape) != 3 or shape[0] != len(query) or shape[1] == 0 or shape[2] != labels:
        raise ValueError(
            f"retrieved_positive must have shape ({len(query)}, k, {labels}) with k >= 1, got {shape}"
        )
    retrieved = _binary(np.reshape(retrieved_positive, (-1, labels)), "retrieved_positive").reshape(shape)
    return query, retrieved
