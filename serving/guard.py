"""The server's door: what may come in, checked before a handler sees a request.

An ASGI middleware, in this order:
- paths the server never serves (the page's file routes, `serving.ui.REFUSED_PAGE_ROUTES`: an
  X-ray must not be stored or readable by another client) answer 404;
- the OpenAI routes (`/v1/...`) need the API key when one is set, compared in constant time
  (hmac.compare_digest); `/health`, `/metrics` and the page stay open for probes and people;
- every request body is read here, up to the body limit: an oversize one is refused from its
  Content-Length, or as soon as it passes the limit when sent in chunks, without being read whole
  (413); a body that does not arrive within the read timeout is a 408 and the connection is closed,
  so a client that stalls cannot hold a connection and a slot for ever.
(How long a client may take to send its headers is set one layer down, in `serving.http`.)
"""

from __future__ import annotations

import asyncio
import hmac

from serving.errors import log_error, send_error
from serving.protocol import APIError, AuthenticationFailed, NotFound, PayloadTooLarge, RequestTimeout

GUARDED_PREFIX = "/v1/"


class ApiGuard:
    """ASGI middleware: 404 for refused paths, 401 without the API key (when one is set), 413 for a body
    over `max_body_bytes`, 408 for a body not received within `read_timeout` seconds."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, read_timeout: float = 30.0,
                 refused_prefixes: tuple[str, ...] = ()):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.refused_prefixes = refused_prefixes

    def _key_error(self, headers: dict[bytes, bytes]) -> APIError | None:
        if self.api_key is None:
            return None
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return AuthenticationFailed("Missing API key: send the header 'Authorization: Bearer <key>'.",
                                        code="missing_api_key")
        if not hmac.compare_digest(given.strip().encode("latin-1"), self.api_key):
            return AuthenticationFailed("Incorrect API key.", code="invalid_api_key")
        return None

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The request body is larger than the limit of {self.max_body_bytes:,} bytes.")

    def _door_error(self, scope, headers: dict[bytes, bytes]) -> APIError | None:
        """What refuses the request from its path and headers alone, if anything."""
        path = scope["path"]
        if path.startswith(self.refused_prefixes):
            return NotFound("Not found: this server neither stores nor serves uploaded files.")
        if path.startswith(GUARDED_PREFIX) and (error := self._key_error(headers)) is not None:
            return error
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        return self._too_large() if declared > self.max_body_bytes else None

    async def _read_body(self, receive) -> bytes | APIError | None:
        """The whole body; an error to answer instead (too large, or too late); None when the client went away."""
        chunks, received = [], 0
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None
                    chunks.append(message.get("body", b""))
                    received += len(chunks[-1])
                    if received > self.max_body_bytes:
                        return self._too_large()
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            # The connection is closed with the answer (`serving.errors.headers_of`): the rest may still come.
            return RequestTimeout(f"The request body did not arrive within {self.read_timeout:g} s.")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._door_error(scope, dict(scope["headers"]))
        body = await self._read_body(receive) if error is None else None
        if isinstance(body, APIError):
            error = body
        if error is not None:
            log_error(scope["path"], error)
            await send_error(send, error)
            return
        if body is None:
            return  # the client went away
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a streaming response listens for

        await self.app(scope, replay, send)
