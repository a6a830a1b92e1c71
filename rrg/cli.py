"""The `rrg` command line.

This is the package's composition root: the one module of `rrg` that reaches into `eval` (the
report labeler, for `rrg label` and the demo set's labels) and, later, `serving`. Library modules
of `rrg` never import either; they take what they need as arguments. Imports are made inside
each command so that `rrg --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rrg.jsonl import JsonlError


def _per_report(args: argparse.Namespace, field: str, what: str, describe) -> int:
    """Read {"id", "report"} lines, write {"id", field: describe(report)} lines, with progress."""
    from tqdm import tqdm

    from rrg.jsonl import read_jsonl, write_jsonl

    started = time.perf_counter()
    records = read_jsonl(args.input, required=("id", "report"))
    progress = tqdm(records, desc=what, unit="report", disable=args.quiet or args.output == "-")
    count = write_jsonl(args.output, ({"id": r["id"], field: describe(r["report"])} for r in progress))
    _say(args, f"{what}: {count} reports in {time.perf_counter() - started:.1f} s -> {args.output}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from eval.labeler import RULES_LABELER_NAME, label_report

    return _per_report(args, "labels", f"labelling ({RULES_LABELER_NAME} labeler)", label_report)


def _triplets(args: argparse.Namespace) -> int:
    from prompts.triplets import extract_triplets

    return _per_report(
        args,
        "triplets",
        "extracting triplets",
        lambda report: [t.to_dict() for t in extract_triplets(report)],
    )


def _data_demo(args: argparse.Namespace) -> int:
    from eval.labeler import RULES_LABELER_NAME, label_report
    from rrg.demo import PHANTOM_NOTICE, DemoConfig, build_demo, demo_exists
    from rrg.paths import demo_data_dir

    out = Path(args.out) if args.out else demo_data_dir()
    if demo_exists(out) and not args.force:
        _say(args, f"demo data set already built at {out} (use --force to rebuild)")
        return 0
    config = DemoConfig(
        out=out, annotation=args.annotation, image_size=args.size, workers=args.workers or DemoConfig.workers
    )
    _say(args, f"building the demo data set: {config}")
    _say(args, PHANTOM_NOTICE)
    summary = build_demo(config, label_report, RULES_LABELER_NAME, progress=not args.quiet)
    counts = ", ".join(f"{split} {n}" for split, n in summary["studies"].items())
    _say(
        args, f"demo data set at {out}: {counts}; {summary['build_seconds']} s; look at {out / 'gallery.png'}"
    )
    return 0


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `rrg`."""
    parser = argparse.ArgumentParser(
        prog="rrg",
        description="Retrieval-augmented chest X-ray report generation. Machine drafts, not for clinical use.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, run, output, help_text in (
        ("label", _label, "labels", "label reports with the 14 CheXbert labels (rule-based)"),
        ("triplets", _triplets, "triplets", "extract MedKLIP (entity, position, exist) triplets"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--in", dest="input", required=True, help='JSON Lines of {"id", "report"} ("-": stdin)'
        )
        command.add_argument(
            "--out", dest="output", required=True, help=f'JSON Lines of {{"id", "{output}"}} ("-": stdout)'
        )
        command.set_defaults(run=run)

    data = commands.add_parser("data", help="build data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATASET")
    demo = data_commands.add_parser(
        "demo", help="the demo set: IU X-Ray reports with synthetic phantom radiographs (not patient images)"
    )
    demo.add_argument("--out", help="output folder (default: the rrg cache, $RRG_CACHE or ~/.cache/rrg)")
    demo.add_argument("--annotation", type=Path, help="an R2Gen-format annotation.json (keeps its splits)")
    demo.add_argument("--size", type=int, default=256, help="phantom image size in pixels (default 256)")
    demo.add_argument("--workers", type=int, help="rendering processes (default: up to 4, one per core)")
    demo.add_argument("--force", action="store_true", help="rebuild even if the folder holds a finished set")
    demo.set_defaults(run=_data_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rrg` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (JsonlError, FileNotFoundError, ValueError) as error:
        print(f"rrg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rrg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
