"""How relevant the retrieved reference reports are, judged by their labels (REVTAF section 3.3).

Prediction records made by a bundle carry `neighbors`, the ids of the reference studies retrieved
for each study, best first. The data folder's manifest has every study's CheXbert-style label
statuses (the rule labeler's, written when the set was built), so each query can be compared with
what it retrieved:

- retrieval/mean_top1_hamming: the Hamming distance between the 14 x 4 status vectors of a study
  and of its top reference (REVTAF eq. 6), averaged; 0 is the same statuses for every label.
- retrieval/label_precision@k: the fraction of the top k references whose positive labels are
  exactly the study's (retrieval.metrics.label_precision_at_k).
- retrieval/tail_recall/<label>, retrieval/tail_recall/macro: for the labels positive in fewer
  than 5 % of the training reports, the fraction of studies with the label that get at least one
  reference with it.
"""

from __future__ import annotations

from pathlib import Path

from prompts.vocabulary import CHEXBERT_LABELS
from retrieval.metrics import (
    label_precision_at_k,
    mean_top1_hamming,
    positive_sets,
    status_vectors,
    tail_label_recall,
    tail_labels,
)
from rrg.data.manifest import read_manifest


def retrieval_quality(records: list[dict], data: Path) -> dict:
    """The label agreement of the records' retrieved neighbours; {} when no record has neighbours."""
    queries = [r for r in records if r.get("neighbors")]
    if not queries:
        return {}
    manifest = {r["id"]: r for r in read_manifest(data)}
    unknown = sorted({n for r in queries for n in [r["id"], *r["neighbors"]] if n not in manifest})
    if unknown:
        raise ValueError(
            f"{len(unknown)} retrieved or query ids are not studies of {data} (e.g. {unknown[:3]}): retrieval "
            "quality needs the labels of the index's studies"
        )
    k = min(len(r["neighbors"]) for r in queries)
    query_labels = [manifest[r["id"]]["labels"] for r in queries]
    retrieved_labels = [[manifest[n]["labels"] for n in r["neighbors"][:k]] for r in queries]
    query_positive = positive_sets(query_labels)  # (Q, 14)
    retrieved_positive = positive_sets([labels for row in retrieved_labels for labels in row]).reshape(len(queries), k, -1)
    top1 = status_vectors([row[0] for row in retrieved_labels])
    train_positive = positive_sets([r["labels"] for r in manifest.values() if r["split"] == "train"])
    tail = tail_labels(train_positive)
    metrics = {
        "retrieval/queries": len(queries),
        "retrieval/mean_top1_hamming": round(mean_top1_hamming(status_vectors(query_labels), top1), 4),
        f"retrieval/label_precision@{k}": round(label_precision_at_k(query_positive, retrieved_positive), 4),
        "retrieval/label_precision@1": round(label_precision_at_k(query_positive, retrieved_positive[:, :1]), 4),
        "retrieval/tail_labels": [CHEXBERT_LABELS[label] for label in tail],
    }
    for label, recall in tail_label_recall(query_positive, retrieved_positive, tail).items():
        metrics[f"retrieval/tail_recall@{k}/{label}"] = None if recall is None else round(recall, 4)
    return metrics


def retrieval_lines(metrics: dict) -> list[str]:
    """The retrieval quality for the printed table (nothing when there is none)."""
    if "retrieval/queries" not in metrics:
        return []
    lines = [f"retrieved references, judged by their labels ({metrics['retrieval/queries']} studies)"]
    for key, value in metrics.items():
        if key.startswith("retrieval/") and key != "retrieval/queries":
            shown = ", ".join(value) if isinstance(value, list) else ("n/a" if value is None else f"{value:.3f}")
            lines.append(f"{key.removeprefix('retrieval/'):36} {shown}")
    return lines

