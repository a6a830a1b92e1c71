"""Building a data set folder from a data set's studies, resumably.

Each study's record is prepared (its files checked, its report read), labelled with the 14 CheXbert
labels unless the data set brings its own, and its MedKLIP triplets extracted, in a pool of processes,
chunk by chunk. Each finished chunk is kept as a part file under `OUT/.building/` (written whole or not
at all), so a killed build, run again with the same sources and options, labels only the chunks it had
not finished. Then `dataset.json` (what the set is, what was kept and left out, and why) and, last,
`manifest.jsonl`; the parts are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from prompts.labeler import RULES_LABELER_NAME, label_report
from prompts.triplets import extract_triplets
from rrg.data.datasets import DatasetError
from rrg.data.manifest import DATASET_SUMMARY, MANIFEST, write_manifest
from rrg.paths import write_atomically

BUILDING = ".building"  # the parts of an unfinished build, inside the output folder
_PLAN = "build.json"  # what the parts were made from: a resumed build must match it
_BUILD_FORMAT = 1
DEFAULT_WORKERS = max(1, min(16, os.cpu_count() or 1))
DEFAULT_CHUNK_SIZE = 500

# prepare(job) -> a study's record (with "labels" None where the data set brings none) or why it is left out
Prepare = Callable[[Any], "dict | str"]


def studies_fingerprint(study_ids: Sequence[str]) -> str:
    """A short digest of the studies to build, in order: a resumed build with other studies starts over."""
    digest = hashlib.sha256()
    for study_id in study_ids:
        digest.update(study_id.encode() + b"\n")
    return digest.hexdigest()[:16]


def _labelled_chunk(prepare: Prepare, jobs: Sequence[Any]) -> dict:
    """Prepare, label and extract triplets for one chunk: its records and its counts."""
    records, skipped, kept, positive = [], Counter(), Counter(), Counter()
    images = rules_labelled = 0
    for job in jobs:
        record = prepare(job)
        if isinstance(record, str):
            skipped[record] += 1
            continue
        if record.get("labels") is None:
            record["labels"] = label_report(record["report"])
            rules_labelled += 1
        record["triplets"] = [t.to_dict() for t in extract_triplets(record["report"])]
        records.append(record)
        kept[record["split"]] += 1
        images += len(record.get("images") or [record["image"]])
        positive.update(label for label, status in record["labels"].items() if status == "positive")
    counts = {"kept": dict(kept), "skipped": dict(skipped), "images": images,
              "rules_labelled": rules_labelled, "positive_labels": dict(positive)}
    return {"counts": counts, "records": records}


def _part_path(building: Path, index: int) -> Path:
    return building / f"part-{index:05d}.jsonl"


def _write_part(building: Path, index: int, chunk: dict) -> None:
    def write(partial: Path) -> None:
        with partial.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"chunk": index, **chunk["counts"]}) + "\n")
            for record in chunk["records"]:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    write_atomically(_part_path(building, index), write)


def _part_counts(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return json.loads(handle.readline())


def _part_records(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as handle:
        handle.readline()  # the chunk's counts
        for line in handle:
            yield json.loads(line)


def _finished_chunks(building: Path, plan: dict, chunks: int, log: Callable[[str], None]) -> set[int]:
    """The chunks an interrupted build of the same plan finished; anything else there is cleared."""
    plan_path = building / _PLAN
    if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
        log(f"{building} holds an unfinished build of other sources or options: starting over")
        shutil.rmtree(building)
    building.mkdir(parents=True, exist_ok=True)
    for leftover in building.glob("*.partial"):
        leftover.unlink()
    write_atomically(plan_path, lambda partial: partial.write_text(json.dumps(plan, indent=2) + "\n"))
    return {index for index in range(chunks) if _part_path(building, index).is_file()}


def _label_in_pool(
    prepare: Prepare, chunks: dict[int, Sequence[Any]], workers: int, finished: Callable[[int, dict], None]
) -> None:
    """Label the chunks in `workers` processes, at most two chunks a worker in flight (bounded memory)."""
    pending = iter(chunks.items())
    pool = ProcessPoolExecutor(max_workers=workers)
    in_flight: dict[Future, int] = {}
    try:
        def submit_next() -> None:
            for index, jobs in pending:
                in_flight[pool.submit(_labelled_chunk, prepare, jobs)] = index
                return

        for _ in range(2 * workers):
            submit_next()
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                finished(in_flight.pop(future), future.result())
                submit_next()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def build_dataset(
    out: Path,
    jobs: Sequence[Any],
    prepare: Prepare,
    about: dict,
    plan: dict,
    workers: int = DEFAULT_WORKERS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    log: Callable[[str], None] = print,
    started: float | None = None,
) -> dict:
    """Build the data set folder `out` from `jobs` (one per study) and return its summary.

    Args:
        prepare: a module-level function (it runs in worker processes) turning a job into the study's
            record, or into the reason it is left out ("report file missing"...).
        about: what the set is (name, sources, labeler...), the first fields of `dataset.json`.
        plan: what the records are made from (sources, options, studies_fingerprint): an unfinished
            build in `out` resumes only if its plan is the same.
        started: when the build began (`time.perf_counter()`, before reading the data set), for its
            `build_seconds`.
    """
    started = time.perf_counter() if started is None else started
    if workers < 1 or chunk_size < 1:
        raise DatasetError(f"workers and chunk size must be at least 1 (got {workers} and {chunk_size})")
    out = Path(out)
    building = out / BUILDING
    chunk_count = (len(jobs) + chunk_size - 1) // chunk_size
    plan = {"format": _BUILD_FORMAT, **plan, "studies": len(jobs), "chunk_size": chunk_size}
    done = _finished_chunks(building, plan, chunk_count, log)
    if done:
        log(f"resuming: {len(done)} of {chunk_count} chunks already labelled in {building}")
    todo = {
        index: jobs[index * chunk_size : (index + 1) * chunk_size]
        for index in range(chunk_count)
        if index not in done
    }
    done_studies = len(jobs) - sum(len(chunk) for chunk in todo.values())
    bar = tqdm(total=len(jobs), initial=done_studies, desc="labelling studies", unit=" studies",
               disable=not progress)

    def finished(index: int, chunk: dict) -> None:
        _write_part(building, index, chunk)
        bar.update(len(todo[index]))

    with bar:
        if workers == 1 or len(todo) == 1:
            for index, chunk_jobs in todo.items():
                finished(index, _labelled_chunk(prepare, chunk_jobs))
        elif todo:
            _label_in_pool(prepare, todo, min(workers, len(todo)), finished)

    parts = [_part_path(building, index) for index in range(chunk_count)]
    summary = _summary(about, [_part_counts(part) for part in parts])
    if not summary["studies"]:
        shutil.rmtree(building)
        reasons = ", ".join(f"{reason}: {count}" for reason, count in summary["skipped"].items())
        raise DatasetError(f"none of the {len(jobs)} studies listed could be kept ({reasons or 'none listed'}); "
                           f"nothing written to {out}")
    summary["build_seconds"] = round(time.perf_counter() - started, 1)
    write_atomically(
        out / DATASET_SUMMARY, lambda partial: partial.write_text(json.dumps(summary, indent=2) + "\n")
    )

    def records() -> Iterator[dict]:
        for part in tqdm(parts, desc="writing the manifest", unit=" chunks", disable=not progress):
            yield from _part_records(part)

    write_manifest(out, records())
    shutil.rmtree(building)
    return summary


def clear_dataset(out: Path) -> None:
    """Remove a finished or unfinished build from `out` (`--force`)."""
    for name in (MANIFEST, DATASET_SUMMARY):
        (Path(out) / name).unlink(missing_ok=True)
    shutil.rmtree(Path(out) / BUILDING, ignore_errors=True)


def _summary(about: dict, chunk_counts: list[dict]) -> dict:
    kept, skipped, positive = Counter(), Counter(), Counter()
    for counts in chunk_counts:
        kept.update(counts["kept"])
        skipped.update(counts["skipped"])
        positive.update(counts["positive_labels"])
    return {
        **about,
        "studies": {split: kept[split] for split in ("train", "val", "test") if kept[split]},
        "images": sum(counts["images"] for counts in chunk_counts),
        "skipped": dict(skipped.most_common()),
        "labelled_by_rules": sum(counts["rules_labelled"] for counts in chunk_counts),
        "positive_labels": dict(positive.most_common()),
    }


def summary_lines(summary: dict, out: Path) -> list[str]:
    """What a build kept and left out, and why, as lines for the terminal (counts only, no study ids)."""
    kept = sum(summary["studies"].values())
    splits = ", ".join(f"{split} {count:,}" for split, count in summary["studies"].items())
    images = summary["images"]
    lines = [f"{summary['dataset']}: kept {kept:,} studies ({splits or 'none'}), {images:,} images; "
             + f"labels by {summary['labeler']}"]
    if summary["labeler"] != RULES_LABELER_NAME and summary["labelled_by_rules"]:
        lines.append(f"  {summary['labelled_by_rules']:,} studies the labels file lacks: labelled by the rules")
    skipped = sum(summary["skipped"].values())
    if skipped:
        lines.append(f"left out {skipped:,} studies:")
        width = max(len(reason) for reason in summary["skipped"])
        lines += [f"  {reason:<{width}}  {count:>9,}" for reason, count in summary["skipped"].items()]
    lines.append(f"-> {out / MANIFEST} ({summary['build_seconds']} s)")
    return lines
