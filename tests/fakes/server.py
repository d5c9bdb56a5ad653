"""A loopback HTTP server that hands each request to a Python function.

Fakes of provider APIs (fal, Replicate) are plain functions of a :class:`Request`
returning a :class:`Response`; this module serves them over real sockets on
127.0.0.1 (an ephemeral port), so backends and the real provider SDKs talk real
HTTP to them. Faults are injected by the fake functions themselves, or with
``Response(drop=True)`` (close the connection without answering) and
``Response(delay_s=...)`` (answer late).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as the fake sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        """A header, case-insensitively."""
        return self.headers.get(name.lower())


@dataclass
class Response:
    """What the fake answers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    drop: bool = False
    delay_s: float = 0.0

    @classmethod
    def json(cls, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        """A JSON response."""
        return cls(status=status, body=body, headers=headers or {})


Handler = Callable[[Request], Response]


class LoopbackServer:
    """Serves ``handler`` on 127.0.0.1; ``url`` is its base URL; ``requests`` logs every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms stall

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with server._lock:
                    server.requests.append(request)
                response = server.handler(request)
                if response.delay_s:
                    time.sleep(response.delay_s)
                if response.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = response.raw
                headers = dict(response.headers)
                if payload is None:
                    payload = b"" if response.body is None else json.dumps(response.body).encode()
                    headers.setdefault("content-type", "application/json")
                self.send_response(response.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        class _Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that hangs up mid-request (a cancelled test) is not an error here.
                return

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serve(handler: Handler) -> Iterator[LoopbackServer]:
    """Run ``handler`` on a loopback server for the duration of the block."""
    server = LoopbackServer(handler).start()
    try:
        yield server
    finally:
        server.stop()
