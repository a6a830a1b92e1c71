"""The API's door: the API key and the body size, checked before a request body is read or parsed.

An ASGI middleware, so a 50 MB body is refused from its Content-Length (or, when it is sent in
chunks, as soon as it passes the limit) without being read whole, and a request without the
right key never reaches the handler. The key is compared in constant time (hmac.compare_digest).
Only the OpenAI routes (`/v1/...`) are guarded: `/health` and `/metrics` stay open for probes, and
the Gradio page has its own upload limit.
"""

from __future__ import annotations

import hmac
import json

from serving.protocol import APIError

GUARDED_PREFIX = "/v1/"


async def _send_error(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiGuard:
    """ASGI middleware: 401 without the API key (when one is set), 413 for a body over `max_body_bytes`."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    def _key_error(self, headers: dict[bytes, bytes]) -> APIError | None:
        if self.api_key is None:
            return None
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return APIError(401, "Missing API key: send the header 'Authorization: Bearer <key>'.",
                            code="missing_api_key")
        if not hmac.compare_digest(given.strip().encode("latin-1"), self.api_key):
            return APIError(401, "Incorrect API key.", code="invalid_api_key")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        error = self._key_error(headers)
        too_large = APIError(413, f"The request body is larger than the limit of {self.max_body_bytes:,} bytes.")
        if error is None:
            try:
                declared = int(headers.get(b"content-length", b"0"))
            except ValueError:
                declared = 0
            if declared > self.max_body_bytes:
                error = too_large
        if error is not None:
            await _send_error(send, error)
            return

        # Read the body here, stopping at the limit: the handler would hold it whole anyway to parse it.
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_body_bytes:
                await _send_error(send, too_large)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect a streaming response listens for

        await self.app(scope, replay, send)
