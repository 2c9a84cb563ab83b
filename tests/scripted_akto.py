"""A scriptable Akto stand-in on 127.0.0.1 for delivery tests.

``ScriptedAkto(script=[500, 500, (429, {"Retry-After": "1"})])`` answers the first
requests from the script, then 200. A batch holding a record whose requestPayload
contains ``OVERSIZED`` gets 413. Every request (path, headers, decoded body) and
every accepted record is kept. While ``unavailable`` is true every request gets 503
(an Akto behind a load balancer with no healthy backend).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: status, status+headers, "hang" (never answer) or "slow" (take the records, answer
#: 200 after SLOW_S: a client with a shorter timeout retries what was stored)
Step = int | tuple[int, dict[str, str]] | str
SLOW_S = 1.5


class ScriptedAkto:
    def __init__(self, script: list[Step] | None = None, port: int = 0) -> None:
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.unavailable = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                status, headers = owner._next(self.path, dict(self.headers), body)
                if status == -1:
                    owner._stop.wait(60)
                    return
                if status == -2:
                    owner._stop.wait(SLOW_S)
                    status = 200
                payload = b'{"success": false, "message": "ok"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str]]:
        records = (
            body.get("batchData", []) if isinstance(body, dict) and "batchData" in body else [body]
        )
        with self._lock:
            self.requests.append(
                {"path": path, "headers": headers, "records": records, "at": time.monotonic()}
            )
            if self.unavailable:
                return 503, {}
            if self.script:
                step = self.script.pop(0)
                if step == "hang":
                    return -1, {}
                if step == "slow":
                    self.accepted.extend(records)
                    return -2, {}
                if isinstance(step, tuple):
                    return step
                assert isinstance(step, int)
                if step != 200:
                    return step, {}
            if any("OVERSIZED" in str(r.get("requestPayload", "")) for r in records):
                return 413, {}
            self.accepted.extend(records)
            return 200, {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ScriptedAkto:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
