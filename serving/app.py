"""The FastAPI app: OpenAI-compatible routes, OpenAI error objects, the engine's lifetime, /health,
/metrics, and the Gradio page mounted at `/`. The handler (`completions.py`), the engine
(`engine.py`), the door (`guard.py`: refused paths, API key, body limit and read timeout), the
last-resort error path (`errors.py`) and the instruments (`metrics.py`) are apart.

Middleware, outermost first: metrics (so every answer is counted, 500s included), the error
boundary, the guard, then FastAPI's routes and handlers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from serving.completions import CompletionService
from serving.engine import EngineError
from serving.errors import ErrorBoundary, log_error
from serving.guard import ApiGuard
from serving.limits import max_body_bytes
from serving.metrics import MetricsMiddleware
from serving.protocol import APIError, CompletionRequest, CompletionResponse, ModelCard, ModelList
from serving.ui import REFUSED_PAGE_ROUTES, build_ui

log = logging.getLogger("rrg.serving")


API_ROUTES = ("/v1/completions", "/v1/models", "/health", "/metrics")


def _error(error: APIError, request: Request | None = None) -> JSONResponse:
    log_error(request.url.path if request else None, error)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _is_union_branch(part: str | int) -> bool:
    """Pydantic's name for a member of a union in an error's location (`str`, `list[str]`), not a field."""
    return isinstance(part, str) and (not part.isidentifier() or part in ("str", "int", "float", "bool"))


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """The first problem of a rejected body, in words, and the field it concerns."""
    first = error.errors()[0] if error.errors() else {}
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    location = [str(part) for part in first.get("loc", ()) if part != "body" and not _is_union_branch(part)]
    param = ".".join(location) or None
    message = first.get("msg", "invalid request")
    if first.get("type") == "missing" and param == "image":
        return "image is required: the X-ray as base64 or a data URL (OpenAI clients: extra_body={'image': ...})", param
    return (f"{param}: {message}" if param else message), param


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

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return _error(error, request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error)
        return _error(APIError(400, message, param=param), request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(APIError(error.status_code, str(error.detail)), request)

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, error: EngineError) -> JSONResponse:
        return _error(APIError(503, f"The engine is not available: {error}", headers={"Retry-After": "5"}), request)

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(request: CompletionRequest) -> CompletionResponse | StreamingResponse:
        return await service.complete(request)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    def model_cards() -> list[ModelCard]:
        info = service.engine.info
        return [
            ModelCard(id=info.base_model, root=str(service.bundle.llm_path)),
            ModelCard(id=info.lora_name, root=str(service.bundle.lora_path), parent=info.base_model),
        ]

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=model_cards())

    @app.get("/v1/models/{model_id}", response_model=ModelCard)
    async def model(model_id: str) -> ModelCard:
        service.check_model(model_id)  # 404 for a model not served here
        return next(card for card in model_cards() if card.id == model_id)

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            await service.engine.check_health()
        except EngineError as error:
            return JSONResponse({"status": "unhealthy", "detail": str(error)}, status_code=503)
        info = service.engine.info
        return JSONResponse({"status": "ok", "engine": info.kind, "model": info.lora_name, "lora": info.lora})

    app.add_middleware(ApiGuard, api_key=api_key, max_body_bytes=max_body_bytes(service.limits.max_bytes),
                       read_timeout=read_timeout, refused_prefixes=REFUSED_PAGE_ROUTES)
    app.add_middleware(ErrorBoundary)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=API_ROUTES)  # outermost: counts every status
    if mount_ui:
        # No run history: Gradio 6 would keep every draft's image and text in the browser's localStorage.
        app = gr.mount_gradio_app(app, build_ui(service), path="/", max_file_size=service.limits.max_bytes,
                                  run_history=False)
    return app
