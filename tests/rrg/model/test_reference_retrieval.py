"""Retrieval in a bundle: the cosine/hyperbolic switch, REVTAF's LRE at inference, and `rrg index build`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from retrieval.hyperbolic_index import HyperbolicIndex
from retrieval.lre import RetrievalEnhancer
from rrg.bundle import Bundle, BundleError
from rrg.cli import main
from rrg.config import load_model_config
from rrg.data.imaging import load_image, to_model_input
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter
from rrg.model import factory


def test_hyperbolic_bundle_carries_its_lre_and_a_hyperbolic_index(micro_hyperbolic_bundle):
    bundle = Bundle.open(micro_hyperbolic_bundle)
    assert bundle.config.retrieval.kind == "hyperbolic"
    tensors = load_file(micro_hyperbolic_bundle / "modules.safetensors")
    assert tensors["retriever.first.weight"].shape == (32, 75)
    assert tensors["retriever.second.weight"].shape == (16, 32)
    retriever = factory.load_retriever(bundle)
    assert isinstance(retriever.index, HyperbolicIndex) and len(retriever.index) == 32
    assert isinstance(retriever.enhancer, RetrievalEnhancer) and not retriever.enhancer.training
    index_summary = bundle.facts["training_summary"]["index"]
    assert index_summary["retriever_final_loss"] > 0 and index_summary["val_mean_top1_hamming"] >= 0


def test_draft_references_are_the_lre_neighbours_in_the_ball(micro_hyperbolic_bundle, micro_data):
    """What the drafter retrieves is the nearest training study to the image's LRE point, by
    geoopt's distance to every reference (brute force)."""
    bundle = Bundle.open(micro_hyperbolic_bundle)
    drafter = Drafter(bundle)
    test = [r for r in read_manifest(micro_data) if r["split"] == "test"]
    images = [load_image(micro_data / r["image"]).pixels for r in test]
    plans = drafter.plan(images)
    encoder, heads = drafter.encoder, drafter.heads
    train_ids = [r["id"] for r in read_manifest(micro_data) if r["split"] == "train"]  # the index's rows
    with torch.no_grad():
        batch = torch.from_numpy(np.stack([to_model_input(i, bundle.config.vision.image_size) for i in images]))
        points = drafter.retriever.enhancer(heads(encoder(batch[:, None]).pooled)[1]).double()
    index = drafter.retriever.index
    every_row = np.arange(len(index))
    for plan, point in zip(plans, points.numpy()):
        distances = index.distances(point, every_row)
        assert [n.id for n in plan.neighbors] == [train_ids[int(np.argmin(distances))]]
        assert plan.neighbors[0].distance == pytest.approx(float(distances.min()), abs=1e-9)


def test_index_build_rebuilds_and_adds_without_retraining(micro_hyperbolic_bundle, micro_data, tmp_path):
    bundle_path = tmp_path / "bundle"
    shutil.copytree(micro_hyperbolic_bundle, bundle_path)
    manifest = micro_data / "manifest.jsonl"
    test = [r for r in read_manifest(micro_data) if r["split"] == "test"]
    image = load_image(micro_data / test[0]["image"]).pixels
    before = Drafter(Bundle.open(bundle_path)).plan([image])[0].neighbors

    # The training split again: the same index, so the same neighbours.
    assert main(["-q", "index", "build", "--bundle", str(bundle_path), "--reports", str(manifest), "--split", "train"]) == 0
    again = Drafter(Bundle.open(bundle_path)).plan([image])[0].neighbors
    assert [(n.id, n.distance) for n in again] == [(n.id, n.distance) for n in before]

    # Adding the test split: the test study is now its own nearest reference, at distance ~0.
    assert main(["-q", "index", "build", "--bundle", str(bundle_path), "--reports", str(manifest), "--split", "test",
                 "--add"]) == 0
    bundle = Bundle.open(bundle_path)
    assert len(factory.load_retriever(bundle).index) == 32 + len(test)
    found = Drafter(bundle).plan([image])[0].neighbors[0]
    assert found.id == test[0]["id"] and found.distance < 1e-3
    assert json.loads((bundle_path / "index" / "index.json").read_text())["kind"] == "hyperbolic"


def test_index_build_refuses_bad_input_and_keeps_the_index(micro_bundle, micro_data, tmp_path, capsys):
    bundle_path = tmp_path / "bundle"
    shutil.copytree(micro_bundle, bundle_path)
    reports = tmp_path / "refs.jsonl"
    reports.write_text(json.dumps({"id": "x", "report": "No acute disease.", "image": "missing.png"}) + "\n")
    assert main(["-q", "index", "build", "--bundle", str(bundle_path), "--reports", str(reports)]) == 2
    assert "study x: cannot read image missing.png" in capsys.readouterr().err
    reports.write_text(json.dumps({"id": "x", "report": "No acute disease."}) + "\n")
    assert main(["-q", "index", "build", "--bundle", str(bundle_path), "--reports", str(reports)]) == 2
    assert "missing field(s) image" in capsys.readouterr().err
    assert len(factory.load_retriever(Bundle.open(bundle_path)).index) == 32  # untouched
    # Adding ids already indexed is refused by name.
    assert main(["-q", "index", "build", "--bundle", str(bundle_path), "--reports", str(micro_data / "manifest.jsonl"),
                 "--split", "train", "--add"]) == 2
    assert "already in the index" in capsys.readouterr().err


def test_retrieval_kind_is_checked(micro_bundle, tmp_path):
    with pytest.raises(ValueError, match="retrieval.kind must be one of cosine, hyperbolic"):
        load_model_config("test-micro").replace(retrieval={"kind": "euclidean"})
    # A config that says hyperbolic over a cosine index is refused, not silently mixed.
    bundle_path = tmp_path / "bundle"
    shutil.copytree(micro_bundle, bundle_path)
    config = json.loads((bundle_path / "config.json").read_text())
    config["retrieval"]["kind"] = "hyperbolic"
    (bundle_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="holds a cosine index, but the config says hyperbolic"):
        factory.load_retriever(Bundle.open(bundle_path))
