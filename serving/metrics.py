"""GET /metrics: Prometheus counters, gauges and histograms of the server, in its own registry.

- rrg_requests_total{route, status}: requests answered, by route and HTTP status;
- rrg_request_seconds{route}: latency until the response starts (a stream's first chunk);
- rrg_stage_seconds{stage}: time per stage of a draft: decode, vision, retrieval, fusion, generation;
- rrg_front_batch_size: images per micro-batch of the vision/retrieval/fusion front;
- rrg_prompt_tokens_total, rrg_generated_tokens_total: tokens in and out;
- rrg_requests_in_flight, rrg_queue_depth: requests being drafted, and waiting for a slot.
No label carries request content: routes are the app's fixed paths.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

STAGES = ("decode", "vision", "retrieval", "fusion", "generation")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


class ServerMetrics:
    """The server's instruments; one per app, so tests can run several apps in one process."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rrg_requests", "Requests answered", ["route", "status"], registry=self.registry)
        self.latency = Histogram("rrg_request_seconds", "Seconds until the response starts", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.stages = Histogram("rrg_stage_seconds", "Seconds per stage of a draft", ["stage"],
                                buckets=_STAGE_BUCKETS, registry=self.registry)
        self.front_batch = Histogram("rrg_front_batch_size", "Images per front micro-batch",
                                     buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.prompt_tokens = Counter("rrg_prompt_tokens", "Prompt tokens", registry=self.registry)
        self.generated_tokens = Counter("rrg_generated_tokens", "Tokens generated", registry=self.registry)
        self.in_flight = Gauge("rrg_requests_in_flight", "Requests being drafted", registry=self.registry)
        self.queue_depth = Gauge("rrg_queue_depth", "Requests waiting for a slot", registry=self.registry)
        for stage in STAGES:  # every stage shows from the start, at 0
            self.stages.labels(stage)

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage in STAGES:
            if stage in timings:
                self.stages.labels(stage).observe(timings[stage])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting every answered request by route and status, with its latency."""

    def __init__(self, app, metrics: ServerMetrics, routes: tuple[str, ...]):
        self.app = app
        self.metrics = metrics
        self.routes = routes  # counted paths; anything else (the page's assets) is "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        started = time.perf_counter()

        async def observed_send(message):
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, observed_send)
