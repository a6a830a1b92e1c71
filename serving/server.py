"""`rrg serve`: load a bundle, start an engine, serve the API and the Gradio page with uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import uvicorn

from rrg.bundle import Bundle
from serving.app import build_app
from serving.completions import CompletionService
from serving.engine import make_engine


def serve(bundle_path: str | Path, host: str = "127.0.0.1", port: int = 8000, engine: str = "vllm",
          kv_cache_gib: int | None = None) -> None:
    """Serve until interrupted; in-flight requests finish before the engine stops."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bundle = Bundle.open(bundle_path)
    service = CompletionService(bundle, make_engine(engine, bundle, kv_cache_gib=kv_cache_gib))
    app = build_app(service)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    print(f"rrg: serving {bundle.lora_name()} ({engine} engine) from {bundle.path}\n"
          f"rrg: page http://{shown}:{port}/   API http://{shown}:{port}/v1/completions\n"
          f"rrg: {service.notice}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
