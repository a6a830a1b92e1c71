"""`rrg-eval` scoring speed: 10,000 prediction pairs with the rule labeler, against the one-minute target.

Pairs of IU X-Ray reports (a random report as the prediction of another), scored stage by stage in
one process, then end to end by `rrg-eval --predictions` in a fresh process (its start, the METEOR
jar's start, report.html and every file included).

    uv run python bench/scoring.py [--pairs 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eval.cider import cider_scores
from eval.clinical import clinical_efficacy
from eval.meteor import MeteorScorer
from eval.nlg import bleu_scores, rouge_l_score, tokenized_pairs
from prompts.labeler import RulesLabeler
from rrg.data.datasets import packaged_iu_annotation, read_r2gen_annotation

TARGET_SECONDS = 60.0


def _timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=10_000)
    args = parser.parse_args()
    annotation = read_r2gen_annotation(packaged_iu_annotation())
    reports = [e["report"] for split in annotation.values() for e in split]
    rng = random.Random(0)
    pairs = [(rng.choice(reports), rng.choice(reports)) for _ in range(args.pairs)]
    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]

    labeler = RulesLabeler()
    rows = []
    predicted, seconds = _timed(labeler.label_reports, predictions)
    reference, seconds_ref = _timed(labeler.label_reports, references)
    rows.append(("rule labeler, both sides", seconds + seconds_ref))
    rows.append(("clinical efficacy, every variant", _timed(clinical_efficacy, predicted, reference)[1]))
    rows.append(("BLEU-1..4", _timed(bleu_scores, predictions, references)[1]))
    rows.append(("ROUGE-L", _timed(rouge_l_score, predictions, references)[1]))
    rows.append(("CIDEr-D", _timed(cider_scores, predictions, references)[1]))
    with MeteorScorer() as scorer:
        _, start = _timed(scorer.score_tokens, [(["a"], [["a"]])])  # waits for the paraphrase table
        _, warm = _timed(scorer.score_tokens, tokenized_pairs(predictions, references))
    rows.append(("METEOR jar start (once per process)", start))
    rows.append(("METEOR", warm))
    stages = sum(seconds for _, seconds in rows)

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "pairs.jsonl"
        source.write_text("".join(
            json.dumps({"id": f"p{i}", "prediction": p, "reference": r}) + "\n" for i, (p, r) in enumerate(pairs)
        ))
        command = [sys.executable, "-m", "eval.cli", "--predictions", str(source), "--out", str(Path(folder) / "o")]
        _, end_to_end = _timed(lambda: subprocess.run(command, check=True, capture_output=True))

    print(f"{args.pairs:,} prediction pairs (IU X-Ray reports), rule labeler")
    print("| stage | seconds |")
    print("|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| sum of stages | {stages:.1f} |")
    print(f"| `rrg-eval --predictions` end to end (process, jar start, files) | {end_to_end:.1f} |")
    print(f"target {TARGET_SECONDS:.0f} s: end to end takes {end_to_end / TARGET_SECONDS:.2f} of it")


if __name__ == "__main__":
    main()
