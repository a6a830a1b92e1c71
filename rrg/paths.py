"""Where rrg keeps what it builds when the user names no folder."""

from __future__ import annotations

import os
from pathlib import Path


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
