"""The HTTP side of the API, as vLLM's `api_server` is to its handlers: routes that call the handler
(`serving.completions`) and turn what it returns into HTTP, and the exception handlers that turn its
errors into OpenAI error responses.

- `POST /v1/completions`: a `CompletionResponse` as JSON, or a `CompletionStream` as server-sent
  events (`data: <chunk>`, a late failure as `data: <error>`, then `data: [DONE]`);
- `GET /v1/models`, `GET /v1/models/{id}`: the base model and its LoRA adapter;
- `GET /health`: 200 while the engine can serve, 503 when it cannot (for probes and balancers);
- `GET /metrics`: Prometheus text (`serving.metrics`).

Every error's status comes from the one table, `serving.errors.HTTP_STATUS`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from serving.completions import CompletionService, CompletionStream
from serving.engines import EngineError
from serving.errors import headers_of, log_error, status_of
from serving.protocol import (
    APIError,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    EngineUnavailable,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    ModelCard,
    ModelList,
    NotFound,
)

# The paths /metrics counts by name; any other (the page's assets) is counted as "other".
API_ROUTES = ("/v1/completions", "/v1/models", "/health", "/metrics")
# What Starlette and FastAPI raise on their own, as a bare status: a body they cannot parse, no such
# route, a route asked with another method.
_STARLETTE_ERRORS: dict[int, type[APIError]] = {400: InvalidRequest, 404: NotFound, 405: MethodNotAllowed}


def build_router(service: CompletionService) -> APIRouter:
    """The API's routes around a service."""
    router = APIRouter()

    @router.post("/v1/completions", response_model=CompletionResponse)
    async def completions(request: CompletionRequest) -> CompletionResponse | Response:
        result = await service.complete(request)
        if isinstance(result, CompletionStream):
            return StreamingResponse(server_sent_events(result), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Request-Id": result.request_id})
        return result

    @router.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return service.models()

    @router.get("/v1/models/{model_id}", response_model=ModelCard)
    async def model(model_id: str) -> ModelCard:
        return service.model(model_id)

    @router.get("/health")
    async def health() -> JSONResponse:
        try:
            await service.engine.check_health()
        except EngineError as error:
            # A probe's answer, not an OpenAI error: balancers read the status, people read the detail.
            return JSONResponse({"status": "unhealthy", "detail": str(error)}, status_code=status_of(EngineUnavailable))
        info = service.engine.info
        return JSONResponse({"status": "ok", "engine": info.kind, "model": info.lora_name, "lora": info.lora})

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    return router


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _chunk_payload(chunk: CompletionStreamResponse) -> dict:
    # As OpenAI's chunks: finish_reason and logprobs null until set; no usage or rrg key where unset.
    return {key: value for key, value in chunk.model_dump().items() if value is not None or key == "choices"}


async def server_sent_events(stream: CompletionStream) -> AsyncIterator[str]:
    """A stream's chunks as server-sent events, a late error as an error event, then `[DONE]`."""
    try:
        async for item in stream:
            yield _event(item.body() if isinstance(item, APIError) else _chunk_payload(item))
    finally:
        await stream.aclose()  # frees the request's slot at once when the client goes away mid-stream
    yield "data: [DONE]\n\n"


def error_response(error: APIError, path: str | None = None) -> JSONResponse:
    """An error as OpenAI's error object, with its status and headers from `serving.errors`; logged."""
    log_error(path, error)
    return JSONResponse(error.body(), status_code=status_of(error), headers=headers_of(error))


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


def add_error_handlers(app: FastAPI) -> None:
    """Answer the handler's errors, a rejected body and Starlette's own errors (no such route, wrong
    method) as OpenAI error objects. Anything else is `serving.errors.ErrorBoundary`'s."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(error, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error)
        return error_response(InvalidRequest(message, param=param), request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = _STARLETTE_ERRORS.get(error.status_code, InternalError)
        return error_response(kind(str(error.detail)), request.url.path)
