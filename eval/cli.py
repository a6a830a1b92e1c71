"""The `rrg-eval` command: score predicted reports against references.

Today it scores clinical efficacy in score-only mode (`--predictions`), with the rule labeler.
Generating with a bundle (`--bundle`), through a server (`--server`), the CheXbert labeler and
the NLG metrics (BLEU, METEOR, ROUGE-L, CIDEr) arrive with the evaluation issue; the command says
so instead of skipping them silently.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from eval.clinical import clinical_efficacy, per_label_scores
from eval.labeler import RULES_LABELER_NAME, label_report
from rrg.jsonl import JsonlError, read_jsonl, write_jsonl

NOT_YET = "NLG metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) are not implemented yet; this run scores clinical efficacy only."


def score_predictions(predictions: Path, out: Path) -> dict:
    """Label predictions and references, write metrics.json, per_label.csv and predictions.jsonl."""
    records = list(read_jsonl(predictions, required=("id", "prediction", "reference")))
    if not records:
        raise ValueError(f"{predictions} holds no predictions")
    predicted = [label_report(r["prediction"]) for r in records]
    reference = [label_report(r["reference"]) for r in records]
    metrics = {
        "labeler": RULES_LABELER_NAME,
        "reports": len(records),
        **clinical_efficacy(predicted, reference),
    }
    metrics["not_computed"] = NOT_YET
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with (out / "per_label.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["labeler", "label", "mode", "precision", "recall", "f1", "support"]
        )
        writer.writeheader()
        for mode in ("pos", "pos_unc"):
            for row in per_label_scores(predicted, reference, mode):
                writer.writerow({"labeler": RULES_LABELER_NAME, **row})
    write_jsonl(
        out / "predictions.jsonl",
        (
            {**r, "labels": {RULES_LABELER_NAME: {"prediction": p, "reference": ref}}}
            for r, p, ref in zip(records, predicted, reference)
        ),
    )
    return metrics


def _table(metrics: dict) -> str:
    lines = [
        f"clinical efficacy ({metrics['reports']} reports, labeler: {metrics['labeler']})",
        f"{'mode':8} {'average':8} {'labels':6} {'P':>6} {'R':>6} {'F1':>6}",
    ]
    for mode in ("pos", "pos_unc"):
        for average in ("example", "micro", "macro"):
            for labels in ("all14", "top5"):
                p, r, f = (
                    metrics[f"ce/{mode}/{average}/{labels}/{m}"] for m in ("precision", "recall", "f1")
                )
                lines.append(f"{mode:8} {average:8} {labels:6} {p:6.3f} {r:6.3f} {f:6.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rrg-eval` console script."""
    parser = argparse.ArgumentParser(
        prog="rrg-eval", description="Score radiology report drafts (machine drafts, not for clinical use)."
    )
    parser.add_argument("--predictions", type=Path, help='JSON Lines of {"id", "prediction", "reference"}')
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--labeler", choices=["rules", "chexbert"], default="rules")
    parser.add_argument("--bundle", help="generate with a bundle (not available yet)")
    parser.add_argument("--server", help="generate through a running rrg server (not available yet)")
    args = parser.parse_args(argv)
    if args.bundle or args.server or args.labeler != "rules" or not args.predictions:
        parser.error(
            "only score-only mode is available yet: rrg-eval --predictions P.jsonl --out DIR "
            "(generation with --bundle/--server and the CheXbert labeler arrive with the evaluation issue)"
        )
    try:
        metrics = score_predictions(args.predictions, args.out)
    except (JsonlError, FileNotFoundError, ValueError) as error:
        print(f"rrg-eval: error: {error}", file=sys.stderr)
        return 2
    print(_table(metrics))
    print(NOT_YET, file=sys.stderr)
    print(f"wrote {args.out / 'metrics.json'}, per_label.csv, predictions.jsonl", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
