"""`rrg-eval --compare DIR...`: finished runs side by side, one column per run (the ablation table),
and with `--bootstrap N` each run's CE difference from the first with a paired bootstrap interval."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from eval.bootstrap import BOOTSTRAPPED, LEVEL, PairedBootstrap, StudyLabels, paired_bootstrap
from rrg.data.jsonl import read_jsonl

# The rows, in order: the CE variants papers report, then NLG, then retrieval where a run has it.
COMPARED = (
    "ce/pos/example/all14/f1",
    "ce/pos/micro/all14/f1",
    "ce/pos/micro/top5/f1",
    "ce/pos/macro/all14/f1",
    "ce/pos_unc/micro/all14/f1",
    "nlg/bleu1",
    "nlg/bleu4",
    "nlg/meteor",
    "nlg/rouge_l",
    "nlg/cider",
    "retrieval/label_precision@1",
    "retrieval/mean_top1_hamming",
)


def read_run(folder: Path) -> dict:
    """The metrics.json of a finished `rrg-eval --out` folder."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise ValueError(f"--compare {folder}: no metrics.json there (not an rrg-eval output folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--compare {path}: not valid JSON ({error})") from error


def read_study_labels(folder: Path, labeler: str) -> dict[str, StudyLabels]:
    """{study id: (predicted labels, reference labels)} by `labeler` from a finished `rrg-eval --out`
    folder's predictions.jsonl; records kept there without labels (outside the scoring) are left out."""
    path = folder / "predictions.jsonl"
    if not path.is_file():
        raise ValueError(f"--bootstrap: no predictions.jsonl in {folder} (the studies' labels are needed to resample them)")
    studies: dict[str, StudyLabels] = {}
    for record in read_jsonl(path, required=("id",)):
        if "labels" not in record:
            continue
        if labeler not in record["labels"]:
            raise ValueError(f"--bootstrap: {path}: study {record['id']} has no labels by {labeler}, "
                             f"the first run's labeler (it has {', '.join(record['labels']) or 'none'})")
        if record["id"] in studies:
            raise ValueError(f"--bootstrap: {path}: study {record['id']} is scored twice")
        labels = record["labels"][labeler]
        if not isinstance(labels, dict) or not {"prediction", "reference"} <= labels.keys():
            raise ValueError(f"--bootstrap: {path}: study {record['id']}: labels by {labeler} need "
                             '"prediction" and "reference"')
        studies[record["id"]] = (labels["prediction"], labels["reference"])
    if not studies:
        raise ValueError(f"--bootstrap: {path} holds no labelled studies")
    return studies


def _signed(value: float) -> str:
    return f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: a -0.0 prints as +0.000


def _bootstrap_table(folders: Sequence[Path], names: Sequence[str], labeler: str, resamples: int) -> str:
    """A Markdown table of each run's CE difference from the first run (on the studies the two share)
    with its paired bootstrap interval, under a heading that says how it was computed."""
    if len(folders) < 2:
        raise ValueError("--bootstrap needs at least two runs: the first, and one to set against it")
    first = read_study_labels(folders[0], labeler)
    results: list[PairedBootstrap] = [
        paired_bootstrap(first, read_study_labels(folder, labeler), resamples, names=(names[0], name))
        for folder, name in zip(folders[1:], names[1:])
    ]
    counts = sorted({result.studies for result in results})
    same = len(counts) == 1
    studies = f"the {counts[0]} shared studies" if same else "the studies each run shares with it"
    heading = (
        f"Paired bootstrap against {names[0]} ({resamples} resamples of {studies}; labeler {labeler}; "
        f"{LEVEL * 100:.0f} % intervals)"
    )
    lines = [
        heading,
        "",
        f"| run minus {names[0]} | " + ("" if same else "shared studies | ") + " | ".join(BOOTSTRAPPED) + " |",
        "|---|" + "---:|" * (len(BOOTSTRAPPED) + (not same)),
    ]
    for name, result in zip(names[1:], results):
        cells = [] if same else [str(result.studies)]
        for key in BOOTSTRAPPED:
            d = result.differences[key]
            cells.append(f"{_signed(d.observed)} [{_signed(d.low)}, {_signed(d.high)}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_table(folders: Sequence[Path], bootstrap: int = 0) -> str:
    """A Markdown table of the runs' metrics, a column per run, and a warning where runs differ in
    labeler or report count (their numbers then do not compare). With `bootstrap` > 0, a second table
    follows: each later run's CE F1 minus the first run's, with the 95 % paired bootstrap interval of
    `bootstrap` resamples of the studies the two share, labelled by the first run's labeler."""
    runs = [read_run(folder) for folder in folders]
    names = [folder.name or str(folder) for folder in folders]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(runs)]
    lines.append("| reports | " + " | ".join(str(run.get("reports", "?")) for run in runs) + " |")
    lines.append("| labeler | " + " | ".join(str(run.get("labeler", "?")) for run in runs) + " |")
    for key in COMPARED:
        if any(key in run for run in runs):
            cells = [f"{run[key]:.3f}" if key in run else "-" for run in runs]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for what in ("labeler", "reports"):
        if len({str(run.get(what)) for run in runs}) > 1:
            lines.append(f"\nwarning: the runs differ in {what}; their numbers do not compare")
    if bootstrap > 0:
        lines += ["", _bootstrap_table(folders, names, str(runs[0].get("labeler", "rules")), bootstrap)]
    return "\n".join(lines)
