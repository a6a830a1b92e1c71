"""End to end: a bundle trained on effusion and normal phantoms drafts an effusion for a phantom
with a large right effusion, and no effusion for the same study drawn without it.

The bundle (`test-effusion`) is trained here on purpose, on the IU X-Ray reports that lead with a
pleural effusion and as many normal ones. Each effusion report is rendered as many phantoms (study
ids with a variant suffix: other anatomy, exposure and effusion size), so that the vision encoder
and the drafting adapter learn what an effusion looks like rather than which patient said it; and
a report that states the effusion in its first sentence means the draft must commit to it from its
first words, which a language model this small can learn in a minute. The drafting stage runs 8
epochs: with 4, once training images became 8-bit (the image cache), the adapter wrote the report of a
finding suggested beside the effusion (cardiomegaly) for one of the two studies and stopped.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prompts.labeler import label_report
from prompts.report_text import split_sentences
from rrg.bundle import Bundle
from rrg.config import ModelConfig, load_model_config
from rrg.data.datasets import packaged_iu_annotation, read_r2gen_annotation
from rrg.data.imaging import decode_image
from rrg.demo.data import DemoConfig, build_demo
from rrg.demo.phantom import PhantomFinding, render_phantom
from rrg.drafting import Draft, LocalDrafter
from rrg.model.generation import SamplingSettings
from rrg.training.train import train_bundle

EFFUSION = "Pleural Effusion"
PHANTOMS_PER_EFFUSION_REPORT = 36
VAL_STUDIES_PER_CLASS = 4
IMAGE_SIZE = 64
# Study ids in no split of the data set: anatomy and exposure the bundle has never seen.
TEST_STUDIES = ("PHANTOM-0", "PHANTOM-1")
LARGE_RIGHT_EFFUSION = PhantomFinding("pleural_effusion", "right", "basal", 0.9)


def _leads_with_effusion(report: str) -> bool:
    sentences = split_sentences(report)
    return bool(sentences) and label_report(sentences[0])[EFFUSION] == "positive"


def effusion_annotation() -> dict[str, list[dict]]:
    """IU reports leading with an effusion (each as many phantoms), as many normal ones, a small val."""
    iu = read_r2gen_annotation(packaged_iu_annotation())
    effusions = [e for e in iu["train"] + iu["val"] if label_report(e["report"])[EFFUSION] == "positive"]
    leading = [e for e in effusions if _leads_with_effusion(e["report"])]
    train_effusions = [
        dict(e, id=e["id"] + (f"~{variant}" if variant else ""))
        for e in leading
        for variant in range(PHANTOMS_PER_EFFUSION_REPORT)
    ]
    normals = [e for e in iu["train"] if label_report(e["report"])["No Finding"] == "positive"]
    train_normals = normals[: len(train_effusions)]
    val = [e for e in effusions if e not in leading][:VAL_STUDIES_PER_CLASS]
    val += normals[len(train_effusions) :][:VAL_STUDIES_PER_CLASS]
    return {"train": train_effusions + train_normals, "val": val, "test": []}


def _as_uploaded(pixels: np.ndarray) -> np.ndarray:
    """A rendered phantom through PNG bytes and the decoder, as `rrg generate` would read it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return decode_image(buffer.getvalue()).pixels


def train_and_draft(folder: Path, config: ModelConfig) -> tuple[list[Draft], list[Draft]]:
    """Build the data set, train a bundle, and draft the test studies with and without the effusion."""
    annotation = folder / "annotation.json"
    annotation.write_text(json.dumps(effusion_annotation()))
    data = folder / "set"
    build_demo(DemoConfig(out=data, annotation=annotation, image_size=IMAGE_SIZE, workers=1), progress=False)
    threads = torch.get_num_threads()
    try:  # training sets the process's thread count; later tests get theirs back
        train_bundle(data, folder / "bundle", config, progress=False, log=lambda _: None)
        drafter = LocalDrafter(Bundle.open(folder / "bundle"))
        with_effusion = [_as_uploaded(render_phantom(s, [LARGE_RIGHT_EFFUSION], IMAGE_SIZE)) for s in TEST_STUDIES]
        normal = [_as_uploaded(render_phantom(s, [], IMAGE_SIZE)) for s in TEST_STUDIES]
        drafts = drafter.draft(with_effusion + normal, SamplingSettings(max_tokens=config.prompt.max_report_tokens))
    finally:
        torch.set_num_threads(threads)
    return drafts[: len(TEST_STUDIES)], drafts[len(TEST_STUDIES) :]


@pytest.mark.slow
def test_effusion_phantom_draft_mentions_effusion(tmp_path):
    effusion_drafts, normal_drafts = train_and_draft(tmp_path, load_model_config("test-effusion"))
    for draft in effusion_drafts:
        assert label_report(draft.text)[EFFUSION] == "positive", draft.text
    # The negative control: the same studies drawn without the effusion are not drafted with one.
    for draft in normal_drafts:
        assert label_report(draft.text)[EFFUSION] != "positive", draft.text
