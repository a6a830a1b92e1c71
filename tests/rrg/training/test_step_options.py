"""How a training step runs: loss shares that add up to the whole batch's loss (what makes accumulation
and data parallel exact), gradient checkpointing, bf16 autocast on the CPU, the learning rate schedule,
and one micro bundle trained with every option on, its logs and its validation passes."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from rrg.config import GeneratorConfig, load_model_config
from rrg.model.generator import enable_gradient_checkpointing, with_new_lora
from rrg.training.losses import FindingLoss
from rrg.training.schedule import rate_factor
from rrg.training.train import train_bundle


def test_finding_loss_shares_add_up_to_the_whole_batch_loss():
    generator = torch.Generator().manual_seed(0)
    label_logits, entity_logits = torch.randn(8, 14, generator=generator), torch.randn(8, 75, generator=generator)
    labels = (torch.rand(8, 14, generator=generator) > 0.7).float()
    entities = torch.randint(-1, 2, (8, 75), generator=generator)
    entities[:4] = -1  # the first half mentions no entity: the shares must still weigh studies right
    whole = FindingLoss()(label_logits, entity_logits, labels, entities)
    shares = sum(FindingLoss()(label_logits[s], entity_logits[s], labels[s], entities[s], entities)
                 for s in (slice(0, 3), slice(3, 8)))
    assert torch.allclose(shares, whole, atol=1e-6)


def _tiny_mistral() -> MistralForCausalLM:
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return MistralForCausalLM(config)


def _batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (4, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt is not scored
    labels[mask == 0] = -100
    labels[3, 5:] = -100  # a study whose report is short
    labels[3, 5:7] = ids[3, 5:7]
    return ids, mask, labels


def test_task_loss_shares_over_the_whole_batch_tokens_add_up_to_its_mean():
    model = _tiny_mistral()
    ids, mask, labels = _batch()
    whole = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    items = torch.tensor(int((labels[:, 1:] != -100).sum()))
    shares = sum(model(input_ids=ids[s], attention_mask=mask[s], labels=labels[s], num_items_in_batch=items).loss
                 for s in (slice(0, 1), slice(1, 4)))
    assert torch.allclose(shares, whole, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    ids, mask, labels = _batch()
    results = []
    for checkpointing in (False, True):
        model = with_new_lora(_tiny_mistral(), GeneratorConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
        torch.manual_seed(3)
        for p in model.parameters():  # LoRA's B starts at 0: give the adapter something to pass on
            if p.requires_grad:
                p.data.normal_(0, 0.1)
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert model.is_gradient_checkpointing
    assert torch.allclose(loss_a, loss_b, atol=1e-6) and grads_a.keys() == grads_b.keys() and grads_a
    assert all(torch.allclose(grads_a[n], grads_b[n], atol=1e-6) for n in grads_a)


def test_warmup_then_cosine_to_zero_and_constant():
    rates = [rate_factor(s, 100, "cosine", 0.1) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0) and rates[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:])) and rates[-1] < 0.001
    assert [rate_factor(s, 10, "constant", 0.0) for s in range(10)] == [1.0] * 10


def test_training_options_are_checked():
    with pytest.raises(ValueError, match="precision"):
        load_model_config("test-micro").replace(training={"precision": "fp16"})
    with pytest.raises(ValueError, match="device"):
        load_model_config("test-micro").replace(training={"device": "tpu"})
    with pytest.raises(ValueError, match="accumulate"):
        load_model_config("test-micro").replace(training={"accumulate": 0})
    with pytest.raises(ValueError, match="draft_references"):
        load_model_config("test-micro").replace(training={"draft_references": "oracle"})
    with pytest.raises(ValueError, match="findings_last"):
        load_model_config("test-micro").replace(prompt={"findings_last": "yes"})


@pytest.mark.slow
def test_every_option_on_trains_a_bundle_with_logs_on_the_cpu(micro_data, tmp_path):
    """bf16 autocast (the CUDA path, on the CPU), gradient checkpointing, accumulation, clipping, warmup and
    cosine, and validation passes: the bundle drafts, says how it was trained, and its logs read back."""
    config = load_model_config("test-micro").replace(training={
        "device": "cpu", "precision": "bf16", "gradient_checkpointing": True, "accumulate": 2, "clip_norm": 1.0,
        "schedule": "cosine", "warmup_fraction": 0.25, "eval_every": 4, "eval_studies": 4,
    })
    out = tmp_path / "bundle"
    train_bundle(micro_data, out, config, progress=False, log=lambda _: None)
    facts = json.loads((out / "config.json").read_text())
    assert facts["trained_with"] == {
        "ranks": 1, "device": "cpu", "precision": "bf16", "gradient_checkpointing": True, "accumulate": 2,
        "clip_norm": 1.0, "schedule": "cosine", "warmup_fraction": 0.25, "base_4bit": False,
    }
    assert np.isfinite(facts["training_summary"]["drafting"]["final_loss"])
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["stage"] == "drafting" and r["kind"] == "train"]
    assert all({"loss", "task", "lr", "samples_per_s", "tokens_per_s", "grad_norm"} <= r.keys() for r in train)
    assert train[0]["lr"] < train[1]["lr"] and train[-1]["lr"] < max(r["lr"] for r in train)  # warmup, then decay
    val = [r for r in rows if r["stage"] == "drafting" and r["kind"] == "val"]
    assert [r["step"] for r in val] == [4, 8] and all(0.0 <= r["draft_example_f1"] <= 1.0 for r in val)
    assert any(r["stage"] == "vision" and r["kind"] == "val" and "mean_auc_14" in r for r in rows)
    assert any(r["stage"] == "language" and r["kind"] == "val" for r in rows)
    assert list((out / "logs" / "tensorboard" / "drafting").glob("events.out.tfevents.*"))

    from rrg.bundle import Bundle
    from rrg.data.imaging import load_image
    from rrg.data.manifest import read_manifest
    from rrg.drafting import LocalDrafter

    record = next(r for r in read_manifest(micro_data) if r["split"] == "test")
    draft = LocalDrafter(Bundle.open(out)).draft([load_image(micro_data / record["image"]).pixels])[0]
    assert draft.text.strip()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine 4-bit loading is allowed")
def test_a_4bit_base_without_cuda_is_a_clear_error():
    from rrg.model.generator import four_bit_config

    with pytest.raises(ValueError, match="needs a CUDA device"):
        four_bit_config()
