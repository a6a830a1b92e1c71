"""Bundles: widths recorded in config.json, modules built at those widths, older formats read or refused
with what to do, and a width that does not fit a saved tensor is an error naming it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from rrg.bundle import BUNDLE_FORMAT, CONFIG, Bundle, BundleError, OutdatedBundleError
from rrg.data.imaging import load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter
from rrg.model import factory


def _copy_with_config(bundle, tmp_path, change) -> Bundle:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    data = json.loads((copy / CONFIG).read_text())
    change(data)
    (copy / CONFIG).write_text(json.dumps(data))
    return copy


def test_a_fused_bundle_records_every_width_it_was_built_with(micro_fused_bundle):
    bundle = Bundle.open(micro_fused_bundle)
    recorded = json.loads((micro_fused_bundle / CONFIG).read_text())
    assert recorded["format"] == BUNDLE_FORMAT and "widths" not in recorded["training_summary"]["drafting"]
    widths = bundle.widths
    encoder = factory.load_vision(bundle)
    assert (widths.vision_embed, widths.vision_tokens) == (encoder.embed_dim, encoder.token_width)
    assert widths.llm_hidden == json.loads((bundle.llm_path / "config.json").read_text())["hidden_size"]
    assert widths.text == factory.load_prompt_texts(bundle).dim
    assert recorded["widths"] == widths.to_dict()


def test_a_bundle_of_the_previous_format_loads_with_the_same_modules(micro_fused_bundle, micro_data, tmp_path):
    def to_format_2(data):
        data["format"] = 2
        del data["widths"]

    old = Bundle.open(_copy_with_config(micro_fused_bundle, tmp_path, to_format_2))
    current = Bundle.open(micro_fused_bundle)
    assert old.widths == current.widths  # read off the parts that recorded them
    image = load_image(micro_data / read_manifest(micro_data)[0]["image"]).pixels
    before, after = Drafter(current).plan([image])[0], Drafter(old).plan([image])[0]
    assert torch.equal(before.prompt_embeds, after.prompt_embeds)


def test_a_bundle_older_than_that_is_refused_with_how_to_train_it_again(micro_bundle, tmp_path):
    copy = _copy_with_config(micro_bundle, tmp_path, lambda data: data.update(format=1))
    with pytest.raises(OutdatedBundleError, match="rrg train --force"):
        Bundle.open(copy)


@pytest.mark.parametrize(("width", "tensor"), [
    ("llm_hidden", "projector.mlp.0.weight"),  # the visual prompt's output width
    ("text", "grp_attention.phi_k.weight"),  # the prompt text encoder's width
    ("vision_embed", "labels.weight"),  # the finding heads' input
])
def test_a_recorded_width_that_does_not_fit_the_saved_tensors_is_an_error_naming_them(
    micro_fused_bundle, tmp_path, width, tensor,
):
    copy = _copy_with_config(micro_fused_bundle, tmp_path, lambda data: data["widths"].update({width: 24}))
    with pytest.raises(BundleError) as error:
        Drafter(Bundle.open(copy))
    message = str(error.value)
    assert tensor in message and "saved (" in message and "built (" in message, message
