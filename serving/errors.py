"""One error path: every failure becomes a well-formed OpenAI error response, and the connection
stays usable.

FastAPI's handlers (`serving.app`) turn the errors it knows (`APIError`, a rejected body, an
engine that is down) into responses. Anything else reaches `ErrorBoundary`, an ASGI middleware
just inside the metrics: it answers a 500 with an OpenAI error object and a Content-Length, so
the client's keep-alive connection carries its next request, and /metrics counts the 500.
(Starlette's own last-resort handler sends its 500 and then re-raises, so uvicorn logs a
traceback, which may quote request content, and drops the connection without `Connection:
close`: a client's next request on it fails.) When the response had already started, no status
can be sent any more: the boundary ends the exchange and uvicorn closes the connection, the only
honest signal left. Logs name the exception's type and the route, never its message, which
could quote a request.
"""

from __future__ import annotations

import json
import logging

from serving.protocol import APIError

log = logging.getLogger("rrg.serving")

INTERNAL_ERROR = "Internal error; the server keeps serving."


def log_error(path: str | None, error: APIError) -> None:
    """One log line per error response: its status and kind, never its message."""
    log.info(json.dumps({"event": "error", "path": path, "status": error.status, "type": error.kind,
                         "param": error.param, "code": error.code}))


async def send_error(send, error: APIError) -> None:
    """Send `error` as a whole JSON response on a raw ASGI `send`."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
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
                failure = APIError(500, INTERNAL_ERROR)
                log_error(scope["path"], failure)
                await send_error(send, failure)
            # Started: returning without finishing the body makes uvicorn close the connection.
