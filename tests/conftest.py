"""Shared fixtures: a micro demo data set and a micro bundle trained from it, built once per run.

The bundle uses the `test-micro` config (a 1-layer ViT on 32-pixel images, a 1-layer Mistral of
width 128): every stage of `rrg train` runs for real, in seconds. Its drafts are not meant to be
good; tests that need a model that knows a finding train their own, on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.labeler import RULES_LABELER_NAME, label_report
from rrg.config import load_model_config
from rrg.datasets import packaged_iu_annotation, read_r2gen_annotation
from rrg.demo import DemoConfig, build_demo
from rrg.train import train_bundle

MICRO_STUDIES = {"train": 32, "val": 8, "test": 8}


def micro_annotation() -> dict[str, list[dict]]:
    """A few real IU reports per split (the first of each), for a fast data set."""
    annotation = read_r2gen_annotation(packaged_iu_annotation())
    train, val = annotation["train"], annotation["val"]
    return {
        "train": train[: MICRO_STUDIES["train"]],
        "val": train[MICRO_STUDIES["train"] : MICRO_STUDIES["train"] + MICRO_STUDIES["val"]],
        "test": val[: MICRO_STUDIES["test"]],
    }


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("micro-data")
    annotation = folder / "annotation.json"
    annotation.write_text(json.dumps(micro_annotation()))
    out = folder / "set"
    build_demo(DemoConfig(out=out, annotation=annotation, image_size=64, workers=1), label_report, RULES_LABELER_NAME,
               progress=False)
    return out


@pytest.fixture(scope="session")
def micro_bundle(micro_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("micro-bundle") / "bundle"
    train_bundle(micro_data, out, load_model_config("test-micro"), progress=False, log=lambda _: None)
    return out
