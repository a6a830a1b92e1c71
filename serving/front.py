"""The front's micro-batches: concurrent requests' images go through vision, retrieval and fusion together.

The front (the bundle's vision encoder, finding heads, retriever and visual prompt) runs on the
server's CPU or GPU one batch at a time. Planning each request alone would leave it idle between
small calls while the queue grows; instead, the first waiting request opens a batch, requests that
arrive within `max_wait` seconds join it (up to `max_batch` images), and the batch runs as one call
in a worker thread. Under light load a request waits at most `max_wait`; under heavy load the
batches fill at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from rrg.drafting import Drafter, DraftPlan


@dataclass
class _Waiting:
    pixels: np.ndarray
    instruction: str | None
    done: asyncio.Future = field(repr=False)


class FrontBatcher:
    """Plans (prompt embeddings, neighbours, findings, clues) for images, batched across callers."""

    def __init__(self, drafter: Drafter, max_batch: int = 8, max_wait: float = 0.005, on_batch=None):
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch}, {max_wait}")
        self.drafter = drafter
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch  # called with (batch size, stage timings) after each batch
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def plan(self, pixels: np.ndarray, instruction: str | None = None) -> tuple[DraftPlan, dict[str, float]]:
        """This image's plan and the stage timings of the batch it ran in."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (tests start several)
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._work())
        waiting = _Waiting(pixels, instruction, loop.create_future())
        await self._queue.put(waiting)
        return await waiting.done

    async def _next_batch(self) -> list[_Waiting]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            try:
                batch.append(self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left))
            except (asyncio.QueueEmpty, TimeoutError):
                break
        return batch

    def _run(self, batch: list[_Waiting]) -> tuple[list[DraftPlan], dict[str, float]]:
        timings: dict[str, float] = {}
        plans = self.drafter.plan([w.pixels for w in batch], [w.instruction for w in batch], timings)
        return plans, timings

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            batch = [w for w in batch if not w.done.cancelled()]  # callers that gave up (timeout)
            if not batch:
                continue
            try:
                plans, timings = await asyncio.to_thread(self._run, batch)
            except Exception as error:  # noqa: BLE001 - every caller of the batch learns why, whatever it was
                for waiting in batch:
                    if not waiting.done.done():
                        waiting.done.set_exception(error)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), timings)
            for waiting, plan in zip(batch, plans):
                if not waiting.done.done():
                    waiting.done.set_result((plan, timings))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
            self._loop = None
