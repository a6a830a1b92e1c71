"""Errors on the wire: the one table of HTTP statuses, and the last-resort error path.

The handlers (`serving.completions`, `serving.limits`, the page) raise kinds of error that say what
went wrong (`serving.protocol`: `InvalidRequest`, `ServerBusy`, ...) and know nothing of HTTP.
`HTTP_STATUS` here is the only place that says which status each kind is; the router's exception
handlers (`serving.router`), the guard (`serving.guard`) and the boundary below answer through it,
with the headers a kind calls for (`Retry-After`, `Connection: close`).

Anything the router's handlers do not know reaches `ErrorBoundary`, an ASGI middleware just inside
the metrics: it answers a 500 with an OpenAI error object and a Content-Length, so the client's
keep-alive connection carries its next request, and /metrics counts the 500. (Starlette's own
last-resort handler sends its 500 and then re-raises, so uvicorn logs a traceback, which may quote
request content, and drops the connection without `Connection: close`: a client's next request on it
fails.) When the response had already started, no status can be sent any more: the boundary ends the
exchange and uvicorn closes the connection, the only honest signal left. Logs name the exception's
type and the route, never its message, which could quote a request.
"""

from __future__ import annotations

import json
import logging

from serving.protocol import (
    APIError,
    AuthenticationFailed,
    DraftTimeout,
    EngineUnavailable,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServerBusy,
)

log = logging.getLogger("rrg.serving")

# Every kind of error and its HTTP status.
HTTP_STATUS: dict[type[APIError], int] = {
    InvalidRequest: 400,
    AuthenticationFailed: 401,
    NotFound: 404,
    ModelNotFound: 404,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    ServerBusy: 429,
    InternalError: 500,
    EngineUnavailable: 503,
    DraftTimeout: 504,
    APIError: 500,  # an error of no kind above is a failure of ours
}


def status_of(error: APIError | type[APIError]) -> int:
    """The HTTP status of an error, or of a kind of error."""
    kind = error if isinstance(error, type) else type(error)
    return next(HTTP_STATUS[k] for k in kind.__mro__ if k in HTTP_STATUS)


def headers_of(error: APIError) -> dict[str, str]:
    """The HTTP headers an error's response carries besides its body."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, RequestTimeout):
        # The rest of a late body may still come; only closing the connection ends the exchange cleanly.
        headers["Connection"] = "close"
    return headers


def log_error(path: str | None, error: APIError) -> None:
    """One log line per error response: its status and kind, never its message."""
    log.info(json.dumps({"event": "error", "path": path, "status": status_of(error), "type": error.type,
                         "param": error.param, "code": error.code}))


async def send_error(send, error: APIError) -> None:
    """Send `error` as a whole JSON response on a raw ASGI `send`."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in headers_of(error).items()]
    await send({"type": "http.response.start", "status": status_of(error), "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ErrorBoundary:
    """ASGI middleware: an exception the app did not handle becomes a 500 OpenAI error response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as error:  # noqa: BLE001 - the last line of defence: every error gets an answer
            log.error(json.dumps({"event": "unexpected_error", "path": scope["path"],
                                  "exception": type(error).__name__, "response_started": started}))
            if not started:
                failure = InternalError()
                log_error(scope["path"], failure)
                await send_error(send, failure)
            # Started: returning without finishing the body makes uvicorn close the connection.
