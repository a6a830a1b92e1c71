"""JSON Lines in and out, with errors that name the file and line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class JsonlError(ValueError):
    """A JSON Lines input that cannot be read as the command expects."""


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Objects from a JSON Lines file ('-' for standard input); each must have the `required` keys."""
    if str(path) == "-":
        yield from _parse_lines(sys.stdin, "<stdin>", required)
        return
    with open(path, encoding="utf-8") as handle:
        yield from _parse_lines(handle, str(path), required)


def _parse_lines(lines: Iterable[str], name: str, required: tuple[str, ...]) -> Iterator[dict]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise JsonlError(f"{name}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise JsonlError(f"{name}:{number}: expected a JSON object per line")
        missing = [key for key in required if key not in record]
        if missing:
            raise JsonlError(f"{name}:{number}: missing field(s) {', '.join(missing)}")
        yield record


@contextmanager
def jsonl_writer(path: str | Path) -> Iterator[IO[str]]:
    """A text handle for JSON Lines output ('-' for standard output)."""
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records as JSON Lines; returns how many."""
    count = 0
    with jsonl_writer(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
