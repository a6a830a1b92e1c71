"""Where rrg keeps what it builds when the user names no folder, and how it writes a file so that a
kill never leaves half of it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """`write(partial)` fills `<path>.partial`, which then replaces `path` in one rename: readers (and a
    run resumed after a kill) see the old file or the new one, never half of either. The data is on
    disk (fsync) before the rename."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    write(partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def cache_dir() -> Path:
    """`$RRG_CACHE`, else `$XDG_CACHE_HOME/rrg`, else `~/.cache/rrg`."""
    if os.environ.get("RRG_CACHE"):
        return Path(os.environ["RRG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rrg"


def demo_data_dir() -> Path:
    """The default demo data set folder."""
    return cache_dir() / "demo-data"


def demo_bundle_dir() -> Path:
    """The default demo bundle folder."""
    return cache_dir() / "demo-bundle"
