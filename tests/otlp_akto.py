"""A stand-in for Akto's OTLP ingestion service on 127.0.0.1: ``POST /v1/logs`` only.

Serves each request with the emulator's pure ``handle_logs_request`` (what the
emulator's own route will call) and keeps the records it maps, until the emulator's
server grows the route.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from akto_otel.emulator.otlp_ingest import handle_logs_request


class OtlpAkto:
    def __init__(self, token: str | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/logs":
                    self.send_error(404)
                    return
                answer = handle_logs_request(
                    body,
                    content_type=self.headers.get("content-type", ""),
                    authorization=self.headers.get("authorization"),
                    token=token,
                )
                with service._lock:
                    service.statuses.append(answer.status)
                    service.records.extend(answer.records)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpAkto:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
