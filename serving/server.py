"""`rrg serve`: load a bundle, start an engine, serve the API and the Gradio page with uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import uvicorn

from rrg.bundle import Bundle
from rrg.imaging import ImageLimits
from rrg.imaging.limits import MIB
from serving.app import build_app
from serving.completions import CompletionService
from serving.engine import make_engine
from serving.limits import ServerLimits


def serve(bundle_path: str | Path, host: str = "127.0.0.1", port: int = 8000, engine: str = "vllm",
          kv_cache_gib: int | None = None, engine_url: str | None = None, engine_api_key: str | None = None,
          api_key: str | None = None, max_upload_mb: float = 32,
          max_concurrent: int = 16, max_queue: int = 64, request_timeout: float = 300, front_batch: int = 8,
          front_wait_ms: float = 5, lora: str = "auto") -> None:
    """Serve until interrupted (SIGINT or SIGTERM): then new requests are refused, in-flight ones
    finish (for up to 30 s), and the engine stops."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bundle = Bundle.open(bundle_path)
    limits = ImageLimits(max_bytes=int(max_upload_mb * MIB))
    server_limits = ServerLimits(max_concurrent=max_concurrent, max_queue=max_queue, request_timeout=request_timeout)
    service = CompletionService(bundle, make_engine(engine, bundle, kv_cache_gib=kv_cache_gib, engine_url=engine_url,
                                                   engine_api_key=engine_api_key, lora=lora), limits=limits,
                                server_limits=server_limits, front_batch=front_batch, front_wait=front_wait_ms / 1000)
    app = build_app(service, api_key=api_key)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    print(f"rrg: serving {bundle.lora_name()} ({engine} engine) from {bundle.path}\n"
          f"rrg: page http://{shown}:{port}/   API http://{shown}:{port}/v1/completions   metrics /metrics\n"
          f"rrg: API key {'required' if api_key else 'not set (open API: keep it on loopback)'}\n"
          f"rrg: {service.notice}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
