"""`rrg train` makes a complete bundle, resumes after a kill, and the bundle drafts from images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rrg.bundle import Bundle, save_modules, save_vision
from rrg.data.imaging import load_image
from rrg.data.manifest import read_manifest
from rrg.drafting import Drafter, LocalDrafter
from rrg.model import factory
from rrg.model.generation import SamplingSettings


def _tensors(bundle: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for part in ("vision/model.safetensors", "modules.safetensors", "lora/adapter_model.safetensors", "llm/model.safetensors"):
        tensors |= {f"{part}:{k}": v for k, v in load_file(bundle / part).items()}
    return tensors


def test_bundle_has_every_part_and_says_it_is_a_demo(micro_bundle):
    bundle = Bundle.open(micro_bundle)
    assert bundle.config.name == "test-micro" and bundle.config.demo
    assert "phantom" in bundle.config.notice
    assert bundle.facts["labeler"] == "rules"
    stages = {"tokenizer", "contrastive", "vision", "index", "language", "drafting"}
    assert set(bundle.facts["training_summary"]) == stages
    assert "skipped" in bundle.facts["training_summary"]["contrastive"]  # test-micro: clip_epochs 0
    assert not (micro_bundle / ".train").exists()
    assert (micro_bundle / "lora" / "adapter_config.json").is_file()
    assert len(factory.load_retriever(bundle).index) == 32


def test_bundle_save_and_load_round_trip_exactly(micro_bundle, micro_data, tmp_path):
    bundle = Bundle.open(micro_bundle)
    encoder = factory.load_vision(bundle)
    heads, projector = factory.load_heads(bundle), factory.load_visual_prompt(bundle)
    save_vision(tmp_path, encoder.clip_config, encoder)
    save_modules(tmp_path, heads, projector)
    for part in ("vision/model.safetensors", "modules.safetensors"):
        before, after = load_file(micro_bundle / part), load_file(tmp_path / part)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
    image = load_image(micro_data / read_manifest(micro_data)[0]["image"]).pixels
    first, second = Drafter(bundle).plan([image])[0], Drafter(bundle).plan([image])[0]
    assert torch.equal(first.prompt_embeds, second.prompt_embeds)
    assert [n.id for n in first.neighbors] == [n.id for n in second.neighbors]


def test_merged_lora_gives_the_adapters_logits_and_saves_a_loadable_model(micro_bundle, tmp_path):
    from peft import PeftModel

    from rrg.model.generator import load_llm

    bundle = Bundle.open(micro_bundle)
    dtype = bundle.config.generator.dtype
    with_adapter = PeftModel.from_pretrained(load_llm(bundle.llm_path, dtype), str(bundle.lora_path)).eval()
    merged = factory.load_generator(bundle)
    assert not any("lora" in name for name, _ in merged.named_parameters())  # no adapter matmuls left
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)
        # the adapter changes the logits, so the comparison above sees it
        assert not torch.allclose(load_llm(bundle.llm_path, dtype)(input_ids=ids).logits, expected, atol=1e-3)
    folder = factory.write_merged_llm(bundle, tmp_path / "merged")
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    with torch.no_grad():
        assert torch.allclose(load_llm(folder, dtype)(input_ids=ids).logits, expected, atol=1e-5)


def test_training_resumes_after_kill_and_reproduces_the_uninterrupted_bundle(micro_bundle, micro_data, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "rrg.cli", "-q", "train", "--data", str(micro_data), "--out", str(out),
               "--config", "test-micro"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
    state = out / ".train" / "state.json"
    deadline = time.monotonic() + 240
    # Kill it without warning once the language stage has saved a checkpoint mid-stage.
    while not (out / ".train" / "language.pt").is_file():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "training never reached a language-stage checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert "vision" in json.loads(state.read_text())["done"] and not (out / "config.json").exists()

    resumed = subprocess.run(command[:3] + ["train"] + command[5:], capture_output=True, text=True, timeout=300,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "language: resuming at step" in resumed.stderr
    expected, got = _tensors(micro_bundle), _tensors(out)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_an_unfinished_run_with_another_config_is_refused(micro_data, tmp_path):
    from rrg.config import load_model_config
    from rrg.training.train import train_bundle

    out = tmp_path / "b"
    (out / ".train").mkdir(parents=True)
    (out / ".train" / "state.json").write_text(json.dumps({"fingerprint": "other", "done": {}}))
    with pytest.raises(ValueError, match="another config"):
        train_bundle(micro_data, out, load_model_config("test-micro"), progress=False, log=lambda _: None)


def test_rrg_generate_json_drafts_png_and_dicom(micro_bundle, micro_data, tmp_path, make_dicom):
    png = micro_data / read_manifest(micro_data)[0]["image"]
    dicom = tmp_path / "study.dcm"
    dicom.write_bytes(make_dicom(load_image(png).pixels))
    result = subprocess.run(
        [sys.executable, "-m", "rrg.cli", "generate", "--bundle", str(micro_bundle), "--json", "--max-tokens", "12",
         str(png), str(dicom)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert isinstance(row["draft"], str) and row["finish_reason"] in ("stop", "length")
        assert len(row["neighbors"]) == 1 and {"id", "report", "distance"} <= set(row["neighbors"][0])
        assert len(row["findings"]) == 14
        assert "not for clinical use" in row["disclaimer"] and "phantom" in row["disclaimer"]
    # The DICOM holds the PNG's picture: the same neighbour is retrieved.
    assert rows[0]["neighbors"][0]["id"] == rows[1]["neighbors"][0]["id"]


def test_local_drafter_is_deterministic_under_greedy_decoding(micro_bundle, micro_data):
    drafter = LocalDrafter(Bundle.open(micro_bundle))
    image = load_image(micro_data / read_manifest(micro_data)[1]["image"]).pixels
    settings = SamplingSettings(max_tokens=10)
    assert drafter.draft([image], settings)[0].text == drafter.draft([image], settings)[0].text


def test_a_pretrained_base_is_loaded_from_a_folder_and_stays_frozen(micro_bundle, micro_data, tmp_path):
    """The mistral-7b-lora path (base from a folder or hub id), on a tiny Mistral in the same HF format."""
    from rrg.config import load_model_config
    from rrg.training.train import train_bundle

    base = micro_bundle / "llm"
    config = load_model_config("test-micro").replace(generator={"base": str(base)}, training={"lm_epochs": 0})
    out = tmp_path / "on-a-base"
    train_bundle(micro_data, out, config, progress=False, log=lambda _: None)
    bundle = Bundle.open(out)
    assert bundle.facts["training_summary"]["language"] == {"base": str(base), "trained": False,
                                                             "seconds": bundle.facts["training_summary"]["language"]["seconds"]}
    before, after = load_file(base / "model.safetensors"), load_file(out / "llm" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    image = load_image(micro_data / read_manifest(micro_data)[0]["image"]).pixels
    assert isinstance(LocalDrafter(bundle).draft([image], SamplingSettings(max_tokens=5))[0].text, str)
