"""The transformers engine (`--engine hf`), the fallback: the prompt embeddings through
`generate(inputs_embeds=...)` on the merged weights, one batch at a time in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import torch

from rrg.bundle import Bundle
from rrg.model.factory import load_generator, load_tokenizer
from rrg.model.generation import Generation, SamplingSettings, generate_hf
from serving.engines.base import Delta, EngineError, engine_info


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
            self._model = load_generator(self.bundle).eval()
            self._tokenizer = load_tokenizer(self.bundle)

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
