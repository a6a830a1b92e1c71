"""Demo bundle quality: what the demo bundle the user gets drafts, and how it scores on the demo test split.

  phantoms    phantoms the bundle never saw in training (study ids in no split of the demo data), 3
              with a large right pleural effusion, 3 with a pacemaker under the left clavicle, and
              the same 6 drawn with no finding as negative controls; each through PNG bytes and the
              upload decoder, drafted greedily. The rule labeler judges each draft: the effusion must be
              stated, and in a sentence that names the right side alone ("bilateral" or "left" does
              not count); the pacemaker must be stated (Support Devices) in a sentence with the word
              "pacemaker" or "pacer", its side (left) a column of its own; a control must state neither.
              A miss is measured, not failed on.
  test split  `rrg-eval` of the bundle, the majority baseline and the nearest-neighbour baseline on the
              test split, side by side (`rrg-eval --compare ... --bootstrap 2000`), and the bundle's
              recall of each label with at least 10 test positives.
  signal      where the image's signal goes on the test split: the finding heads' AUC per label beside
              the highest AUC the phantoms allow (a study whose phantom shows nothing cannot be told
              from another such), the heads' suggestions, and greedy drafts with the heads' findings
              line against drafts with the reports' own labels as the line.
  time        each part's seconds.

Eval folders go to --out (default: demo-quality/<bundle and data fingerprint> beside the bundle,
~/.cache/rrg/demo-quality/... for the demo bundle), so a rerun reuses finished evals.

    uv run python bench/demo_quality.py [--bundle B] [--data D] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from prompts.labeler import POSITIVE, label_report
from prompts.report_text import split_sentences

EFFUSION, DEVICES = "Pleural Effusion", "Support Devices"
STUDIES_PER_FINDING = 3
MIN_SUPPORT, MIN_RECALL = 10, 0.5
BOOTSTRAP = 2000
_WORDS = re.compile(r"[a-z]+")
_PACEMAKER = re.compile(r"\bpace(?:makers?|rs?)\b", re.IGNORECASE)
_SIDE_WORDS = {"left", "right", "bilateral", "bilaterally", "bibasilar", "biapical", "both"}


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _sentences_stating(text: str, label: str) -> list[str]:
    """The sentences of a draft that the rule labeler finds `label` positive in."""
    return [s for s in split_sentences(text) if label_report(s)[label] == POSITIVE]


def only_side(sentence: str, side: str) -> bool:
    """Whether a sentence names `side` ("left" or "right") and no other side ("bilateral", "both", ...)."""
    words = set(_WORDS.findall(sentence.lower())) & _SIDE_WORDS
    return words == {side}


def effusion_named(text: str) -> bool:
    """The draft states a pleural effusion (rule labeler, positive)."""
    return label_report(text)[EFFUSION] == POSITIVE


def effusion_side_named(text: str, side: str = "right") -> bool:
    """A sentence that states the effusion names `side` alone: "Small right pleural effusion." does;
    "Bilateral pleural effusions." and "No pleural effusion." do not."""
    return any(only_side(s, side) for s in _sentences_stating(text, EFFUSION))


def _pacemaker_sentences(text: str) -> list[str]:
    return [s for s in _sentences_stating(text, DEVICES) if _PACEMAKER.search(s)]


def pacemaker_named(text: str) -> bool:
    """The draft states a support device (rule labeler, positive) in a sentence saying pacemaker or pacer."""
    return label_report(text)[DEVICES] == POSITIVE and bool(_pacemaker_sentences(text))


def pacemaker_side_named(text: str, side: str = "left") -> bool:
    """A sentence that states the pacemaker says `side` (its leads may be said to reach the right heart:
    "Left chest wall pacer, leads in the right atrium and ventricle." names the left)."""
    return any(side in _WORDS.findall(s.lower()) for s in _pacemaker_sentences(text))


def false_mentions(text: str) -> list[str]:
    """What a negative control's draft states that its phantom does not show."""
    return [name for name, named in (("effusion", effusion_named(text)), ("pacemaker", pacemaker_named(text))) if named]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "(empty)"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _fingerprint(bundle: Path, data: Path) -> str:
    """A short name for the pair: the bundle's config.json (its training summary differs every run)
    and the data's manifest."""
    digest = hashlib.sha256((bundle / "config.json").read_bytes())
    manifest = data / "manifest.jsonl"
    digest.update(str(data.resolve()).encode())
    if manifest.is_file():
        digest.update(manifest.read_bytes())
    return f"{bundle.name}-{digest.hexdigest()[:12]}"


def _study_ids(data: Path) -> set[str]:
    from rrg.data.jsonl import read_jsonl

    return {row["id"] for row in read_jsonl(data / "manifest.jsonl", required=("id",))}


def _phantoms():
    from rrg.demo.phantom import PhantomFinding

    return {
        "effusion": ("right pleural effusion", PhantomFinding("pleural_effusion", "right", "basal", 0.9), EFFUSION),
        "pacemaker": ("pacemaker", PhantomFinding("pacemaker", "left", "whole", 1.0), DEVICES),
    }


def _as_uploaded(pixels):
    """A rendered phantom through PNG bytes and the decoder, as an upload would be read."""
    from PIL import Image

    from rrg.data.imaging import decode_image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return decode_image(buffer.getvalue()).pixels


def phantom_section(bundle_path: Path, data: Path) -> list[str]:
    """Draft the phantoms and their controls; the table and the summary line."""
    from rrg.bundle import Bundle
    from rrg.demo.phantom import render_phantom
    from rrg.drafting import LocalDrafter, disclaimer
    from rrg.model.generation import SamplingSettings

    size = int(json.loads((data / "demo.json").read_text())["config"]["image_size"])
    known = _study_ids(data)
    cases = []  # (phantom name, study id, finding or None, the label to show the head's probability of)
    for key, (name, finding, label) in _phantoms().items():
        for i in range(STUDIES_PER_FINDING):
            study = f"QUALITY-{key.upper()}-{i}"
            if study in known:
                raise SystemExit(f"{study} is a study of {data}: pick phantom ids in no split")
            cases.append((key, name, study, finding, label))
    controls = [(key, f"none (control of {name})", study, None, label) for key, name, study, _, label in cases]
    cases += controls
    images = [_as_uploaded(render_phantom(study, [finding] if finding else [], size)) for _, _, study, finding, _ in cases]
    bundle = Bundle.open(bundle_path)
    drafter = LocalDrafter(bundle)
    drafts = drafter.draft(images, SamplingSettings(max_tokens=bundle.config.prompt.max_report_tokens))
    del drafter
    gc.collect()

    heading = (f"{len(cases)} phantoms at {size} px, study ids in no split of the demo data, drafted greedily by "
               f"{bundle_path} ({bundle.config.name})")
    lines = [heading, "", f"**{disclaimer(bundle)}**", "",
             "| phantom | study id | finding named | side named | head p | suggested findings | draft |",
             "|---|---|---|---|---:|---|---|"]
    counts = {"effusion": 0, "pacemaker": 0, "false": 0}
    for (key, name, study, finding, label), draft in zip(cases, drafts):
        text = draft.text
        if finding is None:
            wrong = false_mentions(text)
            counts["false"] += bool(wrong)
            named, side = (", ".join(wrong) + " (false)" if wrong else "none"), "-"
        elif key == "effusion":
            found, right = effusion_named(text), effusion_side_named(text, "right")
            counts["effusion"] += found and right
            named, side = _yes(found), f"right: {_yes(right)}"
        else:
            found = pacemaker_named(text)
            counts["pacemaker"] += found
            named, side = _yes(found), f"left: {_yes(pacemaker_side_named(text, 'left'))}"
        suggested = ", ".join(draft.suggested) or "none"
        lines.append(f"| {name} | {study} | {named} | {side} | {draft.findings[label]:.2f} | {suggested} | "
                     f"{_cell(text)} |")
    n = STUDIES_PER_FINDING
    note = ("head p: the finding head's probability of the phantom's label (Pleural Effusion or Support Devices; "
            "a control shows its twin's).")
    summary = (f"effusion named with side in {counts['effusion']}/{n}, pacemaker named in {counts['pacemaker']}/{n}, "
               f"false mentions in the controls: {counts['false']}/{len(controls)}")
    return [*lines, "", note, "", summary]


def auc_ceiling(positive: Sequence[bool], blank: Sequence[bool]) -> float:
    """The highest ROC AUC any reader of the images can reach for one label: a positive study whose
    phantom shows nothing (`blank`) cannot be told from a negative one that shows nothing, so each such
    pair counts one half at best."""
    import numpy as np

    positive, blank = np.asarray(positive, dtype=bool), np.asarray(blank, dtype=bool)
    pairs = positive.sum() * (~positive).sum()
    tied = (positive & blank).sum() * (~positive & blank).sum()
    return float(1.0 - 0.5 * tied / pairs) if pairs else float("nan")


def _drafted_ce(drafter, images, findings, reference_labels, max_tokens: int) -> dict[str, float]:
    """CE example / micro / top-5 micro F1 (pos) of greedy drafts, with the heads' findings line (None)
    or the one given."""
    from eval.clinical import clinical_efficacy
    from rrg.model.generation import SamplingSettings

    texts = []
    for start in range(0, len(images), 32):
        lines = None if findings is None else findings[start : start + 32]
        drafts = drafter.draft(images[start : start + 32], SamplingSettings(max_tokens=max_tokens), findings=lines)
        texts += [d.text for d in drafts]
    metrics = clinical_efficacy([label_report(t) for t in texts], reference_labels)
    return {key: metrics[f"ce/pos/{key}/f1"] for key in ("example/all14", "micro/all14", "micro/top5")}


def signal_section(bundle_path: Path, data: Path) -> list[str]:
    """Where the image's signal goes on the test split: the finding heads (AUC per label beside what the
    phantoms allow), the suggestions cut from them, and the drafts with the heads' findings line against
    drafts with the reports' own labels as the line (what the language model does with a right line)."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from prompts.vocabulary import CHEXBERT_LABELS
    from rrg.bundle import Bundle
    from rrg.data.jsonl import read_jsonl
    from rrg.data.training_data import load_split
    from rrg.demo.phantom import findings_from_report
    from rrg.drafting import LocalDrafter
    from rrg.model.suggested_findings import example_f1, finding_names, suggest, with_no_finding

    bundle = Bundle.open(bundle_path)
    test = load_split(data, "test", bundle.config.vision.image_size, progress=False, log=_log)
    records = {r["id"]: r for r in read_jsonl(data / "manifest.jsonl", required=("id",))}
    blank = np.array([not findings_from_report(i, records[i]["labels"], records[i]["triplets"]) for i in test.ids])
    batches = list(test.images.in_order(128))  # (B, 1, S, S) each, read from the image cache once
    images = [image[0].numpy() for batch in batches for image in batch]
    drafter = LocalDrafter(bundle)
    with torch.no_grad():
        probabilities = np.concatenate([
            torch.sigmoid(drafter.drafter.heads(drafter.drafter.encoder(batch).pooled)[0]).numpy() for batch in batches
        ])
    truth = test.label_targets.numpy() > 0
    lines = [f"Finding heads on the {len(test)} test studies (labels with at least {MIN_SUPPORT} positives)", "",
             "| label | positives | AUC | highest AUC the phantoms allow |", "|---|---:|---:|---:|"]
    aucs = []
    for j, name in enumerate(CHEXBERT_LABELS):
        if truth[:, j].sum() < MIN_SUPPORT:
            continue
        auc = roc_auc_score(truth[:, j], probabilities[:, j])
        aucs.append(auc)
        lines.append(f"| {name} | {int(truth[:, j].sum())} | {auc:.3f} | {auc_ceiling(truth[:, j], blank):.3f} |")
    lines.append(f"| mean | | {np.mean(aucs):.3f} | |")
    suggested = with_no_finding(suggest(probabilities, drafter.drafter.heads.thresholds.numpy()))
    references = [label_report(r) for r in test.reports]
    max_tokens = bundle.config.prompt.max_report_tokens
    heads_line = _drafted_ce(drafter, images, None, references, max_tokens)
    true_line = _drafted_ce(drafter, images, [finding_names(row) for row in truth], references, max_tokens)
    agreement = example_f1(suggested, truth)
    lines += ["", f"Example F1 of the heads' suggestions against the reports' labels: {agreement:.3f}", "",
              "| drafts (greedy) | CE example F1 | CE micro F1 | CE micro F1 top 5 |", "|---|---:|---:|---:|"]
    for name, scores in (("findings line from the heads", heads_line),
                         ("findings line from the reports' own labels", true_line)):
        lines.append(f"| {name} | {scores['example/all14']:.3f} | {scores['micro/all14']:.3f} | "
                     f"{scores['micro/top5']:.3f} |")
    return lines


def _eval_command() -> list[str]:
    script = Path(sys.executable).parent / "rrg-eval"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "eval.cli"]


def _rrg_eval(arguments: Sequence[str], echo: bool = True) -> str:
    """Run rrg-eval; its stdout is returned (and echoed to stderr with `echo`), its progress goes to stderr."""
    command = [*_eval_command(), *arguments]
    _log("demo_quality: " + " ".join(command))
    result = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True)
    if echo:
        print(result.stdout, file=sys.stderr, end="")
    if result.returncode != 0:
        raise SystemExit(f"rrg-eval failed (exit {result.returncode}): {' '.join(command)}")
    return result.stdout


def recall_lines(per_label: Path) -> list[str]:
    """The bundle's pos-mode recall of every label with at least MIN_SUPPORT test positives (main labeler)."""
    with open(per_label, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    main = rows[0]["labeler"] if rows else ""
    kept = [r for r in rows if r["labeler"] == main and r["mode"] == "pos" and int(r["support"]) >= MIN_SUPPORT]
    lines = [f"Bundle recall per label with at least {MIN_SUPPORT} test positives (labeler: {main}, mode pos)",
             "", f"| label | positives | precision | recall | F1 | recall >= {MIN_RECALL} |", "|---|---:|---:|---:|---:|---|"]
    for r in sorted(kept, key=lambda r: -int(r["support"])):
        recall = float(r["recall"])
        lines.append(f"| {r['label']} | {r['support']} | {float(r['precision']):.3f} | {recall:.3f} | "
                     f"{float(r['f1']):.3f} | {_yes(recall >= MIN_RECALL)} |")
    met = sum(float(r["recall"]) >= MIN_RECALL for r in kept)
    lines += ["", f"{met}/{len(kept)} of these labels reach recall {MIN_RECALL}"]
    return lines


def main() -> int:
    began = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="the bundle to measure (default: the cached demo bundle)")
    parser.add_argument("--data", type=Path, help="the data set (default: the cached demo data)")
    parser.add_argument("--out", type=Path, help="where the eval folders go (default: demo-quality/<fingerprint> "
                                                 "beside the bundle; a rerun resumes them)")
    args = parser.parse_args()
    from rrg.demo.bundle import ensure_demo_bundle, ensure_demo_data

    seconds = {}
    started = time.perf_counter()
    bundle = args.bundle or ensure_demo_bundle(progress=True, log=_log)
    data = args.data or ensure_demo_data(progress=True, log=_log)
    seconds["demo bundle and data (built or trained only if missing)"] = time.perf_counter() - started
    out = args.out or bundle.parent / "demo-quality" / _fingerprint(bundle, data)
    _log(f"demo_quality: bundle {bundle}, data {data}, eval folders in {out}")

    started = time.perf_counter()
    phantoms = phantom_section(bundle, data)
    seconds["phantoms: load the bundle, render and draft 12"] = time.perf_counter() - started

    started = time.perf_counter()
    signal = signal_section(bundle, data)
    seconds["where the signal goes: heads, suggestions, drafts with two findings lines"] = time.perf_counter() - started

    common = ["--data", str(data), "--split", "test", "--quiet"]
    runs = {
        "majority": ["--baseline", "majority", *common, "--out", str(out / "majority")],
        "nearest": ["--baseline", "nearest", "--bundle", str(bundle), *common, "--out", str(out / "nearest")],
        "bundle": ["--bundle", str(bundle), *common, "--out", str(out / "bundle")],
    }
    for name, arguments in runs.items():
        started = time.perf_counter()
        _rrg_eval(arguments)
        seconds[f"rrg-eval {name} (test split; resumed where finished)"] = time.perf_counter() - started
    started = time.perf_counter()
    compared = _rrg_eval(["--compare", *(str(out / name) for name in runs), "--bootstrap", str(BOOTSTRAP)], echo=False)
    seconds[f"rrg-eval --compare --bootstrap {BOOTSTRAP}"] = time.perf_counter() - started

    print("\n".join(phantoms))
    print()
    print(f"Demo test split (from {data}): majority baseline, nearest-neighbour baseline, the bundle")
    print()
    print(compared.rstrip("\n"))
    print()
    print("\n".join(recall_lines(out / "bundle" / "per_label.csv")))
    print()
    print("\n".join(signal))
    print()
    print("| part | seconds |")
    print("|---|---:|")
    for part, value in seconds.items():
        print(f"| {part} | {value:.1f} |")
    print(f"| all parts | {sum(seconds.values()):.1f} |")
    print(f"| main() wall time (torch and transformers imports included) | {time.perf_counter() - began:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
