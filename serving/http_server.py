"""The HTTP server under the app: uvicorn (httptools), with a deadline on a request's headers.

uvicorn times out a connection that sits idle between requests (`timeout_keep_alive`), but not a
client that opens a connection and sends its headers a byte at a time, or never: each such
connection is held for ever (slowloris). `HeaderDeadlineProtocol` gives every request
`header_timeout` seconds from its first byte (or from the connection's opening) to the end of its
headers; past that the server answers 408 with `Connection: close` and closes. The body's own
deadline is the guard's (`serving.guard`), where the body is read.
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = json.dumps({"error": {"message": "The request headers did not arrive in time.",
                                      "type": "timeout_error", "param": None, "code": "request_timeout"}}).encode()
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
                     + _TIMEOUT_BODY)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request headers take longer than
    `header_timeout` seconds."""

    header_timeout: float = 10.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMEOUT_RESPONSE)  # no response in progress: the 408 is well-formed
        self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()  # a client that connects and says nothing

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # each request's first byte, keep-alive or pipelined

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


def http_server(app, host: str, port: int, header_timeout: float = 10.0, keep_alive: float = 5.0,
                log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for the app, with the header deadline, a 30 s graceful shutdown, and uvicorn's
    keep-alive timeout between requests."""
    if header_timeout <= 0:
        raise ValueError(f"header_timeout must be positive, got {header_timeout}")
    protocol = type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout})
    config = uvicorn.Config(app, host=host, port=port, http=protocol, log_level=log_level,
                            timeout_keep_alive=keep_alive, timeout_graceful_shutdown=30)
    return uvicorn.Server(config)


def run(server: uvicorn.Server) -> None:
    """Serve until interrupted; exit with uvicorn's start-up failure code if the server never started."""
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on, once it has shut down
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as `uvicorn.run` exits
