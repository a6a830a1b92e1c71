"""How much the server takes on: requests in flight and waiting, time per request, body size.

A server that queues without bound answers everyone late; this one drafts `max_concurrent`
requests at once, lets `max_queue` more wait for a slot, and refuses the rest at once with a 429
and `Retry-After`, as OpenAI's servers do, so clients back off instead of timing out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from serving.protocol import ServerBusy

# A JSON body carries the image base64-encoded (4 characters per 3 bytes) plus a little else.
JSON_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """The server's limits; `rrg serve` sets them from its options."""

    max_concurrent: int = 16  # requests being drafted at once (the engine batches them)
    max_queue: int = 64  # requests waiting for a slot beyond those
    request_timeout: float = 300.0  # seconds from admission to the whole draft
    retry_after: int = 2  # seconds a refused client is told to wait

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "request_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {self.max_queue}")


def max_body_bytes(max_upload_bytes: int) -> int:
    """The largest request body for an image of `max_upload_bytes`: base64-encoded, and the rest of the JSON."""
    return -(-max_upload_bytes // 3) * 4 + JSON_OVERHEAD_BYTES


class Admission:
    """Slots for requests in flight, a bounded wait for one, and the count of both for /metrics."""

    def __init__(self, limits: ServerLimits):
        self.limits = limits
        self.active = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None

    async def acquire(self) -> None:
        """Take a slot for one request, waiting in the queue if need be; ServerBusy (a 429 with
        Retry-After) when slots and queue are full. Every acquire needs its `release`."""
        if self._slots is None:  # made in the serving loop, on first use
            self._slots = asyncio.Semaphore(self.limits.max_concurrent)
        if self.active + self.waiting >= self.limits.max_concurrent + self.limits.max_queue:
            raise ServerBusy(
                f"The server is busy: {self.active} requests in flight and {self.waiting} waiting. "
                f"Retry after {self.limits.retry_after} s.",
                retry_after=self.limits.retry_after,
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._slots.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A slot held for the block (`acquire` and `release` around it)."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()
