"""`rrg-eval --compare DIR...`: finished runs side by side, one column per run (the ablation table)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

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


def compare_table(folders: Sequence[Path]) -> str:
    """A Markdown table of the runs' metrics, a column per run, and a warning where runs differ in
    labeler or report count (their numbers then do not compare)."""
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
    return "\n".join(lines)
