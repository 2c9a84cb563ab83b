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
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.standin_http import StandInServer, send_json

#: status, status+headers, "hang" (never answer) or "slow" (take the records, answer
#: 200 after SLOW_S: a client with a shorter timeout retries what was stored)
Step = int | tuple[int, dict[str, str]] | str
SLOW_S = 1.5


class ScriptedAkto(StandInServer):
    def __init__(self, script: list[Step] | None = None, port: int = 0) -> None:
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.unavailable = False
        self._lock = threading.Lock()
        super().__init__(port)

    def respond(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("content-length", "0"))
        body = json.loads(request.rfile.read(length) or b"null")
        status, headers = self._next(request.path, dict(request.headers), body)
        if status == -1:
            self._stop.wait(60)
            return
        if status == -2:
            self._stop.wait(SLOW_S)
            status = 200
        send_json(request, status, b'{"success": false, "message": "ok"}', headers)

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
