"""The demo bundle in the cache: what every command uses when the user names no `--bundle`.

Built on first use (demo data set, then `rrg train` with the `demo-tiny` config) and reused after;
a cached bundle of an older format, or trained with another `demo-tiny` config than this rrg's (say
cosine retrieval where the config now says hyperbolic), is trained again.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from rrg.bundle import CONFIG, Bundle, OutdatedBundleError
from rrg.config import load_model_config
from rrg.demo.data import DemoConfig, build_demo, demo_exists
from rrg.paths import demo_bundle_dir, demo_data_dir
from rrg.training.train import train_bundle


def ensure_demo_bundle(progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """The cached demo bundle's folder, building the demo data and training the bundle if missing."""
    bundle = demo_bundle_dir()
    config = load_model_config("demo-tiny")
    if (bundle / CONFIG).is_file():
        try:
            if Bundle.open(bundle).config == config:
                return bundle
            log(f"the cached demo bundle at {bundle} was trained with another demo-tiny config; replacing it")
        except OutdatedBundleError as error:
            log(f"{error}; replacing the cached demo bundle")
        shutil.rmtree(bundle)
    data = ensure_demo_data(progress, log)
    log(f"no demo bundle in the cache: training one at {bundle} (resumable if interrupted)")
    train_bundle(data, bundle, config, progress=progress, log=log)
    return bundle


def ensure_demo_data(progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """The cached demo data set's folder, building it if missing."""
    data = demo_data_dir()
    if not demo_exists(data):
        log(f"no demo data in the cache: building it at {data}")
        build_demo(DemoConfig(out=data), progress=progress)
    return data
