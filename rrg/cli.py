"""The `rrg` command line.

This is the package's composition root: the one module of `rrg` that reaches into `serving` (for
`rrg serve`); library modules of `rrg` never do. It and `eval/cli.py` are also the only modules outside
`rrg/demo/` that use the phantom demo (as the default data and bundle). Imports are made inside each
command so that `rrg --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from rrg.config import ABLATIONS
from rrg.data.jsonl import JsonlError


def _per_report(args: argparse.Namespace, field: str, what: str, describe) -> int:
    """Read {"id", "report"} lines, write {"id", field: describe(report)} lines, with progress."""
    from tqdm import tqdm

    from rrg.data.jsonl import read_jsonl, write_jsonl

    started = time.perf_counter()
    records = read_jsonl(args.input, required=("id", "report"))
    progress = tqdm(records, desc=what, unit="report", disable=args.quiet or args.output == "-")
    count = write_jsonl(args.output, ({"id": r["id"], field: describe(r["report"])} for r in progress))
    _say(args, f"{what}: {count} reports in {time.perf_counter() - started:.1f} s -> {args.output}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from prompts.labeler import RULES_LABELER_NAME, label_report

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
    from rrg.demo.data import PHANTOM_NOTICE, DemoConfig, build_demo, demo_exists
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
    summary = build_demo(config, progress=not args.quiet)
    counts = ", ".join(f"{split} {n}" for split, n in summary["studies"].items())
    _say(
        args, f"demo data set at {out}: {counts}; {summary['build_seconds']} s; look at {out / 'gallery.png'}"
    )
    return 0


def _build_data_set(args: argparse.Namespace, name: str, config, build) -> int:
    """Run a data set build unless `--out` holds a finished one; a kill leaves what can be resumed."""
    from rrg.data.manifest import manifest_exists

    out = Path(args.out)
    if manifest_exists(out) and not args.force:
        _say(args, f"a data set is already built at {out} (use --force to rebuild it)")
        return 0
    settings = " ".join(
        f"--{field.name.replace('_', '-')} {','.join(value) if isinstance(value, tuple) else value}"
        for field in dataclasses.fields(config)
        if (value := getattr(config, field.name)) is not None
    )
    _say(args, f"rrg data {name} {settings}")
    try:
        build(config, force=args.force, progress=not args.quiet, log=lambda m: _say(args, m))
    except KeyboardInterrupt:
        _say(args, f"rrg data {name}: stopped; the same command resumes from the chunks finished in {out}")
        raise
    return 0


def _data_mimic(args: argparse.Namespace) -> int:
    from rrg.data.dataset_build import DEFAULT_WORKERS
    from rrg.data.mimic_cxr import MimicBuild, build_mimic_cxr, parse_views

    build = MimicBuild(root=Path(args.root), out=Path(args.out), reports=args.reports, section=args.section,
                       views=parse_views(args.views), workers=args.workers or DEFAULT_WORKERS,
                       chunk_size=args.chunk_size)
    return _build_data_set(args, "mimic", build, build_mimic_cxr)


def _data_iu(args: argparse.Namespace) -> int:
    from rrg.data.dataset_build import DEFAULT_WORKERS
    from rrg.data.iu_xray import IuBuild, build_iu_xray

    build = IuBuild(root=Path(args.root), out=Path(args.out), workers=args.workers or DEFAULT_WORKERS,
                    chunk_size=args.chunk_size)
    return _build_data_set(args, "iu", build, build_iu_xray)


def _overrides(pairs: list[str]) -> dict[str, dict]:
    """`--set training.lm_epochs=1` pairs as config sections; values are read as JSON when they parse."""
    import json

    sections: dict[str, dict] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        section, _, field = key.partition(".")
        if not field or not value:
            raise ValueError(f"--set takes section.field=value, not {pair!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        sections.setdefault(section, {})[field] = parsed
    return sections


def _train(args: argparse.Namespace) -> int:
    import json

    from rrg.config import load_model_config, with_ablation
    from rrg.training.train import train_bundle

    config = load_model_config(args.config)
    if args.ablation:
        config = with_ablation(config, args.ablation)
    config = config.replace(**_overrides(args.set or []))
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all
    if main_rank:
        _say(args, f"rrg train: {args.data} -> {args.out}\nconfig:\n{json.dumps(config.to_dict(), indent=2)}")
    facts = train_bundle(Path(args.data), Path(args.out), config, progress=not args.quiet,
                         log=lambda m: _say(args, m), force=args.force)
    if main_rank:
        _say(args, f"bundle ready at {args.out} ({facts['training_seconds_this_run']} s this run)")
        if config.demo:
            _say(args, config.notice)
    return 0


def ensure_demo_bundle(args: argparse.Namespace) -> Path:
    """The demo bundle in the cache, built (demo data, then training) if it is not there yet."""
    from rrg.demo.bundle import ensure_demo_bundle as ensure

    return ensure(progress=not args.quiet, log=lambda m: _say(args, m))


def _generate(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from rrg.bundle import Bundle
    from rrg.data.imaging import load_image
    from rrg.drafting import LocalDrafter, disclaimer
    from rrg.model.generation import SamplingSettings

    bundle = Bundle.open(args.bundle or ensure_demo_bundle(args))
    drafter = LocalDrafter(bundle)
    images = [load_image(path, longest_side=drafter.drafter.decode_side).pixels for path in args.images]
    settings = SamplingSettings(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    drafts = drafter.draft(images, settings)
    notice = disclaimer(bundle)
    for path, draft in zip(args.images, drafts):
        if args.json:
            neighbors = [{"id": n.id, "report": n.report, "distance": round(n.distance, 4)} for n in draft.neighbors]
            record = {"image": str(path), "draft": draft.text, "finish_reason": draft.finish_reason,
                      "neighbors": neighbors, "findings": draft.findings,
                      "suggested_findings": draft.suggested,
                      "clues": [asdict(c) for c in draft.clues],
                      "disclaimer": notice}
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(f"== {path}\n[{notice}]\n{draft.text}\n")
    return 0


def _index_build(args: argparse.Namespace) -> int:
    from rrg.training.reference_index import build_bundle_index

    build_bundle_index(Path(args.bundle), Path(args.reports), split=args.split, add=args.add,
                       progress=not args.quiet, log=lambda m: _say(args, m))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from serving.server import ServeOptions, serve

    bundle = Path(args.bundle) if args.bundle else ensure_demo_bundle(args)
    chosen = {field.name: getattr(args, field.name) for field in dataclasses.fields(ServeOptions)}
    chosen["engine_api_key"] = args.engine_api_key or os.environ.get("VLLM_API_KEY") or None
    chosen["api_key"] = args.api_key or os.environ.get("RRG_API_KEY") or None
    serve(bundle, ServeOptions(**chosen))
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

    train = commands.add_parser(
        "train", help="train a bundle from a data set folder (resumable; under torchrun, data parallel over its ranks)"
    )
    train.add_argument("--data", required=True, help="a data set folder with manifest.jsonl (e.g. from rrg data demo)")
    train.add_argument("--out", required=True, help="the bundle folder to write")
    train.add_argument("--config", default="demo-tiny", help="a named model config or a .json path (default demo-tiny)")
    train.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a config field")
    train.add_argument("--ablation", choices=list(ABLATIONS),
                       help="keep only some parts of the method (v1, lre, fusion, clues, full, no-fcc, no-grp, "
                            "no-lrp, no-dc); --set applies after it")
    train.add_argument("--force", action="store_true", help="discard what --out holds and train from scratch")
    train.set_defaults(run=_train)

    generate = commands.add_parser("generate", help="draft reports for X-ray images (PNG, JPEG, DICOM)")
    generate.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    generate.add_argument("--bundle", help="a trained bundle (default: the demo bundle, built if missing)")
    generate.add_argument("--json", action="store_true", help="one JSON object per image, with neighbours and findings")
    generate.add_argument("--max-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=0.0)
    generate.add_argument("--seed", type=int)
    generate.set_defaults(run=_generate)

    index = commands.add_parser("index", help="a bundle's reference index")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    build = index_commands.add_parser(
        "build", help="(re)build a bundle's index from a set of studies with images, without retraining"
    )
    build.add_argument("--bundle", required=True, help="the trained bundle whose index to write")
    build.add_argument("--reports", required=True,
                       help='JSON Lines of {"id", "report", "image"}, image paths relative to the file (a manifest.jsonl)')
    build.add_argument("--split", help="only the studies of this split (a manifest's split field)")
    build.add_argument("--add", action="store_true", help="add the studies to the index instead of replacing it")
    build.set_defaults(run=_index_build)

    serve = commands.add_parser("serve", help="serve the API (/v1/completions) and the Gradio page")
    serve.add_argument("--bundle", help="a trained bundle (default: the demo bundle, built if missing)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--engine", choices=["vllm", "hf", "remote"], default="vllm",
                       help="vllm (default, in process), hf (the transformers fallback) or remote (a separate "
                            "`vllm serve`, at --engine-url)")
    serve.add_argument("--engine-url", help="with --engine remote: the vLLM server (http://HOST:PORT)")
    serve.add_argument("--engine-api-key", help="with --engine remote: the vLLM server's API key (default: $VLLM_API_KEY)")
    serve.add_argument("--kv-cache-gib", type=int, help="vLLM's KV cache size on CPU, in whole GiB (default 1)")
    serve.add_argument("--lora", choices=["auto", "adapter", "merged"], default="auto",
                       help="how the vllm engine applies the LoRA adapter: as a LoRARequest with each request "
                            "(adapter), or merged into a copy of the base weights at start (merged); auto "
                            "(default): adapter on a GPU, merged on CPU, where vLLM's LoRA ops are slow")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ routes (default: $RRG_API_KEY; "
                                         "none: open, for loopback use)")
    serve.add_argument("--max-upload-mb", type=float, default=40, help="largest image file accepted, in MiB (default 40)")
    serve.add_argument("--max-concurrent", type=int, default=16, help="requests drafted at once (default 16)")
    serve.add_argument("--max-queue", type=int, default=64,
                       help="requests waiting for a slot beyond those; more get 429 with Retry-After (default 64)")
    serve.add_argument("--request-timeout", type=float, default=300, help="seconds per request before a 504 (default 300)")
    serve.add_argument("--header-timeout", type=float, default=10,
                       help="seconds a client has to send a request's headers; then 408 and the connection closes "
                            "(default 10)")
    serve.add_argument("--read-timeout", type=float, default=30,
                       help="seconds a client has to send a request's body; then 408 and the connection closes "
                            "(default 30)")
    serve.add_argument("--front-batch", type=int, default=8,
                       help="images per micro-batch of the vision/retrieval/fusion front (default 8)")
    serve.add_argument("--front-wait-ms", type=float, default=5,
                       help="how long a micro-batch waits for more requests, in ms (default 5)")
    serve.set_defaults(run=_serve)

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

    mimic = data_commands.add_parser(
        "mimic", help="MIMIC-CXR: MIMIC-CXR-JPG images with the MIMIC-CXR reports, labelled (resumable)"
    )
    mimic.add_argument("--root", required=True, type=Path,
                       help="the MIMIC-CXR-JPG folder: files/ and the mimic-cxr-2.0.0-*.csv(.gz) files")
    mimic.add_argument("--reports", type=Path,
                       help="the folder mimic-cxr-reports.zip unpacks into (it holds files/), or that files/ "
                            "folder (default: ROOT/files)")
    mimic.add_argument("--out", required=True, help="the data set folder to write")
    mimic.add_argument("--section", choices=["findings", "impression", "both"], default="findings",
                       help="the report section a study's report is (default findings); studies without it are "
                            "left out")
    mimic.add_argument("--views", default="PA,AP",
                       help="the ViewPositions kept, the first preferred for a study's image (default PA,AP)")
    mimic.add_argument("--workers", type=int, help="labelling processes (default: one per core, up to 16)")
    mimic.add_argument("--chunk-size", type=int, default=500,
                       help="studies labelled per part file, the unit a killed build resumes from (default 500)")
    mimic.add_argument("--force", action="store_true", help="rebuild from scratch even if --out holds a set")
    mimic.set_defaults(run=_data_mimic)

    iu = data_commands.add_parser("iu", help="IU X-Ray in R2Gen's layout (annotation.json, images/), labelled")
    iu.add_argument("--root", required=True, type=Path, help="R2Gen's iu_xray folder: annotation.json and images/")
    iu.add_argument("--out", required=True, help="the data set folder to write")
    iu.add_argument("--workers", type=int, help="labelling processes (default: one per core, up to 16)")
    iu.add_argument("--chunk-size", type=int, default=500,
                    help="studies labelled per part file, the unit a killed build resumes from (default 500)")
    iu.add_argument("--force", action="store_true", help="rebuild from scratch even if --out holds a set")
    iu.set_defaults(run=_data_iu)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rrg` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (JsonlError, FileNotFoundError, ValueError) as error:  # ImageError is a ValueError
        print(f"rrg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rrg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
