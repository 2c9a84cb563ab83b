"""A stand-in HTTP server for tests: Akto's endpoints answered by a method.

``StandInServer`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a
daemon thread; a subclass decides each POST's answer in :meth:`answer` (bytes, sent
as a 200 JSON body, or None to accept the request and never answer it).

Usage::

    class AllowAll(StandInServer):
        def answer(self, path: str, body: bytes) -> bytes | None:
            return b'{"success": true}'

    with AllowAll() as akto:
        ...  # akto.url
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StandInServer:
    def __init__(self, port: int = 0) -> None:
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                owner.respond(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def respond(self, request: BaseHTTPRequestHandler) -> None:
        """Answer one POST; by default with :meth:`answer` (a subclass may take over)."""
        body = request.rfile.read(int(request.headers.get("content-length", "0")))
        answer = self.answer(request.path, body)
        if answer is None:
            self._stop.wait(30)  # accepted, never answered
            return
        send_json(request, 200, answer)

    def answer(self, path: str, body: bytes) -> bytes | None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def send_json(
    request: BaseHTTPRequestHandler,
    status: int,
    payload: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    """Send ``payload`` as a JSON answer with ``status`` and any extra ``headers``."""
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(payload)
