"""Engines: what turns prompt embeddings into report text. They know nothing of HTTP.

- `base`: the `Engine` protocol every engine follows, `EngineInfo`, `Delta` (a piece of a streamed
  draft) and `EngineError`;
- `vllm`: `VllmEngine`, vLLM's async engine in the server process (`--engine vllm`, the default),
  with its LoRA modes and the CPU KV-cache default;
- `hf`: `HfEngine`, the transformers fallback (`--engine hf`);
- `remote`: `RemoteEngine`, generation on a separately run `vllm serve` (`--engine remote`), and
  `vllm_serve_command` to start one.

All take the prompt as embeddings (the visual tokens between the LLM's own embedding of the
instruction text, DESIGN.md section 6), so all see exactly the same prompt. Imports point one way:
this package imports the engines, the engines import `base` (and `remote` imports `vllm` for the
adapter's rank), `base` imports none of them.
"""

from __future__ import annotations

from rrg.bundle import Bundle
from serving.engines.base import Delta, Engine, EngineError, EngineInfo, engine_info
from serving.engines.hf import HfEngine
from serving.engines.remote import RemoteEngine, vllm_serve_command
from serving.engines.vllm import (
    DEFAULT_CPU_KV_CACHE_GIB,
    LORA_MODES,
    VllmEngine,
    resolve_lora_mode,
    vllm_lora_rank,
)

ENGINES = ("vllm", "hf", "remote")

__all__ = [
    "DEFAULT_CPU_KV_CACHE_GIB", "ENGINES", "LORA_MODES", "Delta", "Engine", "EngineError", "EngineInfo", "HfEngine",
    "RemoteEngine", "VllmEngine", "engine_info", "make_engine", "resolve_lora_mode", "vllm_lora_rank",
    "vllm_serve_command",
]


def make_engine(kind: str, bundle: Bundle, kv_cache_gib: int | None = None, engine_url: str | None = None,
                engine_api_key: str | None = None, lora: str = "auto") -> Engine:
    """An engine of `kind` ("vllm", "hf" or "remote", which needs `engine_url`) for a bundle; not started yet.

    lora: how the vLLM engine applies the adapter (LORA_MODES; the transformers engine always merges it).
    """
    if kind == "vllm":
        return VllmEngine(bundle, kv_cache_gib=kv_cache_gib, lora=lora)
    if kind == "hf":
        return HfEngine(bundle)
    if kind == "remote":
        if not engine_url:
            raise ValueError("--engine remote needs --engine-url, the vLLM server's address (http://HOST:PORT)")
        return RemoteEngine(bundle, engine_url, engine_api_key)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {kind!r}")
