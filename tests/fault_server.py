"""A deliberately misbehaving HTTP server on 127.0.0.1 for fault tests.

Each accepted connection is served on its own thread according to ``mode``; the
server records how many requests it saw. Real sockets, no mocks.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Mode = str  # see _RESPONDERS


def _http(
    status: int, body: bytes, content_type: str = "application/json", extra: str = ""
) -> bytes:
    reason = {
        200: "OK",
        401: "Unauthorized",
        413: "Payload Too Large",
        422: "Unprocessable",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


ALLOW = b'{"success": true, "data": {"guardrailsResult": {"Allowed": true}}}'
DENY = b'{"success": true, "data": {"guardrailsResult": {"Allowed": false, "Reason": "no"}}}'


@dataclass
class FaultServer:
    mode: Mode
    hold_s: float = 30.0
    huge_bytes: int = 10 * 1024 * 1024
    requests: int = 0
    _sock: socket.socket | None = field(default=None, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def url(self) -> str:
        assert self._sock is not None
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> FaultServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        accept = threading.Thread(target=self._accept_loop, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._sock is not None
        self._sock.close()
        for t in self._threads:
            t.join(timeout=2)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_request(self, conn: socket.socket) -> bool:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            rest += chunk
        self.requests += 1
        return True

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.mode == "refuse_after_accept":
                conn.close()
                return
            if not self._read_request(conn):
                return
            _RESPONDERS[self.mode](self, conn)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _hold(self) -> None:
        self._stop.wait(self.hold_s)


def _send(data: bytes) -> Callable[[FaultServer, socket.socket], None]:
    def respond(_server: FaultServer, conn: socket.socket) -> None:
        conn.sendall(data)

    return respond


def _no_answer(server: FaultServer, conn: socket.socket) -> None:
    server._hold()


def _slow_body(server: FaultServer, conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    for _ in range(int(server.hold_s * 10)):
        if server._stop.is_set():
            return
        conn.sendall(b" ")
        time.sleep(0.1)


def _reset(_server: FaultServer, conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _reset_mid_body(_server: FaultServer, conn: socket.socket) -> None:
    conn.sendall(
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"succ'
    )
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _huge(server: FaultServer, conn: socket.socket) -> None:
    conn.sendall(
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {server.huge_bytes}\r\n\r\n".encode()
    )
    chunk = b" " * 65536
    sent = 0
    while sent < server.huge_bytes and not server._stop.is_set():
        conn.sendall(chunk)
        sent += len(chunk)


def _huge_chunked(server: FaultServer, conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 65536
    sent = 0
    while sent < server.huge_bytes and not server._stop.is_set():
        conn.sendall(b"10000\r\n" + chunk + b"\r\n")
        sent += len(chunk)
    conn.sendall(b"0\r\n\r\n")


_RESPONDERS: dict[str, Callable[[FaultServer, socket.socket], None]] = {
    "allow": _send(_http(200, ALLOW)),
    "deny": _send(_http(200, DENY)),
    "no_answer": _no_answer,
    "slow_body": _slow_body,
    "status_500": _send(_http(500, b'{"error": "boom"}')),
    "status_502": _send(_http(502, b"<html>bad gateway</html>", "text/html")),
    "status_503": _send(_http(503, b"unavailable", "text/plain")),
    "status_401_html": _send(_http(401, b"<html><body>Unauthorized</body></html>", "text/html")),
    "status_413": _send(_http(413, b"too large", "text/plain")),
    "status_422": _send(_http(422, b'{"success": false, "message": "requestPayload missing"}')),
    "status_429": _send(_http(429, b"slow down", "text/plain", "Retry-After: 2\r\n")),
    "invalid_json": _send(_http(200, b"{not json at all")),
    "html_200": _send(_http(200, b"<html>hello</html>", "text/html")),
    "wrong_shape": _send(_http(200, b'["a", "list"]')),
    # 200s that are not verdicts (issue 22): the fail mode decides, never an allow.
    "empty_200": _send(_http(200, b"")),
    "empty_object": _send(_http(200, b"{}")),
    "success_false": _send(_http(200, b'{"success": false, "message": "guardrail engine error"}')),
    "data_null": _send(_http(200, b'{"success": true, "data": null}')),
    "unreadable_allowed": _send(
        _http(200, b'{"success": true, "data": {"guardrailsResult": {"Allowed": "deny"}}}')
    ),
    "akto_fail_open": _send(
        _http(
            200,
            b'{"success": true, "data": {"guardrailsResult": '
            b'{"Allowed": true, "failOpen": true, "error": "engine down"}}}',
        )
    ),
    "reset": _reset,
    "reset_mid_body": _reset_mid_body,
    "huge_body": _huge,
    "huge_chunked": _huge_chunked,
}
MODES = (*tuple(_RESPONDERS), "refuse_after_accept")
