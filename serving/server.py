"""`rrg serve`: load a bundle, start an engine, serve the API and the Gradio page with uvicorn."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from rrg.bundle import Bundle
from rrg.data.imaging import ImageLimits
from rrg.data.imaging.limits import MIB
from serving.app import build_app
from serving.completions import CompletionService
from serving.engines import make_engine
from serving.http_server import http_server, run
from serving.limits import ServerLimits


@dataclass(frozen=True)
class ServeOptions:
    """Everything `rrg serve` takes besides the bundle (README: serving options)."""

    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "vllm"  # vllm, hf or remote
    engine_url: str | None = None  # remote: the vLLM server
    engine_api_key: str | None = None  # remote: its API key
    kv_cache_gib: int | None = None  # vLLM's KV cache on CPU
    lora: str = "auto"  # how vLLM applies the adapter: auto, adapter or merged
    api_key: str | None = None  # required on /v1/ when set
    max_upload_mb: float = 40
    max_concurrent: int = 16
    max_queue: int = 64
    request_timeout: float = 300  # seconds from admission to the whole draft
    header_timeout: float = 10  # seconds a client has to send a request's headers
    read_timeout: float = 30  # seconds a client has to send a request's body
    front_batch: int = 8
    front_wait_ms: float = 5


def build_service(bundle: Bundle, options: ServeOptions) -> CompletionService:
    """The bundle's front and an engine (not started), with the options' limits."""
    engine = make_engine(options.engine, bundle, kv_cache_gib=options.kv_cache_gib, engine_url=options.engine_url,
                         engine_api_key=options.engine_api_key, lora=options.lora)
    return CompletionService(
        bundle, engine, limits=ImageLimits(max_bytes=int(options.max_upload_mb * MIB)),
        server_limits=ServerLimits(max_concurrent=options.max_concurrent, max_queue=options.max_queue,
                                   request_timeout=options.request_timeout),
        front_batch=options.front_batch, front_wait=options.front_wait_ms / 1000,
    )


def serve(bundle_path: str | Path, options: ServeOptions = ServeOptions()) -> None:
    """Serve until interrupted (SIGINT or SIGTERM): then new requests are refused, in-flight ones
    finish (for up to 30 s), and the engine stops."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bundle = Bundle.open(bundle_path)
    service = build_service(bundle, options)
    app = build_app(service, api_key=options.api_key, read_timeout=options.read_timeout)
    shown = "localhost" if options.host in ("127.0.0.1", "0.0.0.0") else options.host
    print(f"rrg: serving {bundle.lora_name()} ({options.engine} engine) from {bundle.path}\n"
          f"rrg: page http://{shown}:{options.port}/   API http://{shown}:{options.port}/v1/completions   "
          f"metrics /metrics\n"
          f"rrg: API key {'required' if options.api_key else 'not set (open API: keep it on loopback)'}\n"
          f"rrg: {service.notice}", file=sys.stderr, flush=True)
    run(http_server(app, options.host, options.port, header_timeout=options.header_timeout))
