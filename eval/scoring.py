"""Score prediction records and write an `rrg-eval` output folder.

Records are `{"id", "prediction", "reference"}` (plus `neighbors` where a bundle retrieved them).
The folder gets:
- metrics.json: every CE variant from the main labeler, NLG (BLEU-1..4, METEOR, ROUGE-L, CIDEr),
  retrieval quality where neighbours and the data folder are known, what made the predictions, and
  under `not_computed` each metric that could not run here and why (METEOR without Java). When a
  second labeler ran, its CE variants sit under `labelers/<name>` with the two labelers' agreement.
- per_label.csv: precision, recall, F1 and support per label, mode and labeler.
- predictions.jsonl: the records with every labeler's labels and each report's own scores.
- report.html: eval/html_report.py.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from eval.cider import cider_scores
from eval.clinical import clinical_efficacy, example_f1, per_label_scores
from eval.html_report import write_report
from eval.meteor import MeteorUnavailable, shared_scorer
from eval.nlg import bleu_scores, prepare_report, rouge_l_score, sentence_bleu4, tokenized_pairs
from eval.retrieval_quality import retrieval_quality
from prompts.labeler import RulesLabeler
from prompts.vocabulary import CHEXBERT_LABELS
from rrg.paths import write_atomically

METRICS, PER_LABEL, PREDICTIONS, REPORT = "metrics.json", "per_label.csv", "predictions.jsonl", "report.html"
NLG_KEYS = (*(f"nlg/bleu{n}" for n in range(1, 5)), "nlg/meteor", "nlg/rouge_l", "nlg/cider")


def _atomic_write(path: Path, text: str) -> None:
    """Replace `path` whole or not at all: a kill leaves the old file or the new one, never half."""
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def nlg_metrics(predictions: Sequence[str], references: Sequence[str]) -> tuple[dict, dict, dict]:
    """(corpus NLG metrics, per-report NLG scores by name, {metric: why it was not computed})."""
    # R2Gen's cleaning once per report, not once per metric: every scorer below takes the prepared text.
    predictions = [prepare_report(p) for p in predictions]
    references = [prepare_report(r) for r in references]
    metrics = bleu_scores(predictions, references, prepared=True) | rouge_l_score(predictions, references, prepared=True)
    cider = cider_scores(predictions, references, prepared=True)
    metrics["nlg/cider"] = sum(cider) / len(cider)
    per_report = {
        "bleu4": [sentence_bleu4(p, r, prepared=True) for p, r in zip(predictions, references)],
        "cider": cider,
    }
    not_computed = {}
    try:
        metrics["nlg/meteor"], per_report["meteor"] = shared_scorer().score_tokens(
            tokenized_pairs(predictions, references, prepared=True)
        )
    except MeteorUnavailable as error:
        not_computed["nlg/meteor"] = str(error)
    return metrics, per_report, not_computed


def labeler_agreement(first: Sequence[dict], second: Sequence[dict]) -> float:
    """The fraction of (report, label) statuses on which two labelers agree."""
    same = sum(a.get(label) == b.get(label) for a, b in zip(first, second) for label in CHEXBERT_LABELS)
    return same / (len(first) * len(CHEXBERT_LABELS))


def score_records(
    records: list[dict], out: Path, source: dict, notice: str | None = None, data: Path | None = None,
    labelers: Sequence | None = None, unscored: Sequence[dict] = (),
) -> dict:
    """Label predictions and references, score them, and write the output folder; returns the metrics.

    source: what made the predictions (into metrics.json); notice: the demo bundle's notice;
    data: the studies' data folder, to judge the retrieved neighbours by their labels;
    labelers: the main labeler first (default: the rule labeler), then any other to run beside it;
    unscored: finished predictions of the same run outside this scoring (a rerun with a smaller
    --limit), kept at the end of predictions.jsonl without labels or scores so no work is lost.
    """
    if not records:
        raise ValueError("no predictions to score")
    labelers = list(labelers or [RulesLabeler()])
    predictions = [r["prediction"] for r in records]
    references = [r["reference"] for r in records]
    labels = {
        labeler.name: (labeler.label_reports(predictions), labeler.label_reports(references))
        for labeler in labelers
    }
    main = labelers[0].name
    metrics = {"labeler": main, "reports": len(records), "source": source}
    if notice:
        metrics["notice"] = notice
    metrics |= clinical_efficacy(*labels[main])
    nlg, per_report, not_computed = nlg_metrics(predictions, references)
    metrics |= {key: nlg[key] for key in NLG_KEYS if key in nlg}
    if data is not None:
        try:
            metrics |= retrieval_quality(records, data)
        except ValueError as error:  # neighbours from an index of other studies (a server's bundle)
            not_computed["retrieval"] = str(error)
    for labeler in labelers[1:]:
        metrics.setdefault("labelers", {})[labeler.name] = clinical_efficacy(*labels[labeler.name]) | {
            f"agreement_with_{main}/{side}": labeler_agreement(labels[main][i], labels[labeler.name][i])
            for i, side in enumerate(("predictions", "references"))
        }
    if not_computed:
        metrics["not_computed"] = not_computed
    per_report["example_f1"] = example_f1(*labels[main])

    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    rows = [
        {"labeler": name, **row}
        for name, (predicted, reference) in labels.items()
        for mode in ("pos", "pos_unc")
        for row in per_label_scores(predicted, reference, mode)
    ]
    with open(out / PER_LABEL, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    scored = [
        {
            **{k: v for k, v in record.items() if k not in ("labels", "scores")},
            "labels": {name: {"prediction": p[i], "reference": r[i]} for name, (p, r) in labels.items()},
            "scores": {name: round(values[i], 6) for name, values in sorted(per_report.items())},
        }
        for i, record in enumerate(records)
    ]
    kept = [{k: v for k, v in record.items() if k not in ("labels", "scores")} for record in unscored]
    _atomic_write(out / PREDICTIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*scored, *kept]))
    write_report(out / REPORT, metrics, rows, scored, labels[main])
    return metrics
