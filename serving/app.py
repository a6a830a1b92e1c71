"""The FastAPI app, assembled: the engine's lifetime, the API's routes and error handlers
(`serving.router`), the middleware, and the Gradio page mounted at `/`. Nothing is decided here: the
handler (`serving.completions`), the engines (`serving.engines`), the router, the door (`serving.guard`:
refused paths, API key, body limit and read timeout), the last-resort error path (`serving.errors`)
and the instruments (`serving.metrics`) are apart.

Middleware, outermost first: metrics (so every answer is counted, 500s included), the error
boundary, the guard, then FastAPI's routes and handlers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI

from serving.completions import CompletionService
from serving.errors import ErrorBoundary
from serving.guard import ApiGuard
from serving.limits import max_body_bytes
from serving.metrics import MetricsMiddleware
from serving.router import API_ROUTES, add_error_handlers, build_router
from serving.ui import REFUSED_PAGE_ROUTES, build_ui

log = logging.getLogger("rrg.serving")


def build_app(service: CompletionService, mount_ui: bool = True, api_key: str | None = None,
              read_timeout: float = 30.0) -> FastAPI:
    """The server's app around a service; the engine starts with the app and stops with it.

    api_key: when set, every /v1/ route needs `Authorization: Bearer <api_key>`; read_timeout: seconds
    a client has to send a request's body.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        info = service.engine.info
        log.info("starting the %s engine for %s (LoRA: %s)", info.kind, info.lora_name, info.lora)
        await service.engine.start()
        log.info("engine ready")
        yield
        await service.close()
        await service.engine.shutdown()

    app = FastAPI(title="rrg", summary="Machine drafts of chest X-ray reports, not for clinical use.",
                  lifespan=lifespan)
    app.include_router(build_router(service))
    add_error_handlers(app)
    # add_middleware wraps what is there, so the last added is the outermost.
    app.add_middleware(ApiGuard, api_key=api_key, max_body_bytes=max_body_bytes(service.limits.max_bytes),
                       read_timeout=read_timeout, refused_prefixes=REFUSED_PAGE_ROUTES)
    app.add_middleware(ErrorBoundary)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=API_ROUTES)  # outermost: counts every status
    if mount_ui:
        # No run history: Gradio 6 would keep every draft's image and text in the browser's localStorage.
        app = gr.mount_gradio_app(app, build_ui(service), path="/", max_file_size=service.limits.max_bytes,
                                  run_history=False)
    return app
