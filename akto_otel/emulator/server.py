"""A local, fast, Akto-compatible data-ingestion server (asyncio, stdlib only).

Speaks the wire contract of ``/work/shared/akto-contract.md``:
``POST /api/http-proxy``, ``POST /api/ingestData``, ``GET /healthCheck``, plus
``GET``/``DELETE /_emulator/records`` to inspect what it received.

The HTTP/1.1 layer is a hand-written ``asyncio.Protocol`` (keep-alive,
pipelining, ``Content-Length`` and chunked bodies, ``Expect: 100-continue``);
each response is one ``write``. It answers in a few tens of microseconds.

Example::

    from akto_otel.emulator import EmulatorServer, default_policy

    with EmulatorServer(default_policy(), token="secret") as server:
        ...  # point AKTO_DATA_INGESTION_URL at server.url
        records = server.wait_for_records(2, timeout=5.0)
        assert records[0].verdict is not None
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qsl

from .policy import Policy, allowed_result

__all__ = ["EmulatorServer", "ReceivedRecord"]

_log = logging.getLogger("akto_otel.emulator")

Endpoint = Literal["http-proxy", "ingestData"]

_MiB = 1024 * 1024
_PROXY_MAX_STRING = 256 * 1024
_PROXY_MAX_BODY = 2 * _MiB
_INGEST_MAX_STRING = 5 * _MiB
_INGEST_MAX_BODY = 10 * _MiB
_HEADER_LIMIT = 64 * 1024
_CHUNK_LINE_LIMIT = 4096
_LINGER_S = 2.0
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")

_REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_PROXY = "/api/http-proxy"
_INGEST = "/api/ingestData"
_ROUTES: dict[str, tuple[str, ...]] = {
    _PROXY: ("POST",),
    _INGEST: ("POST",),
    "/healthCheck": ("GET",),
    "/_emulator/records": ("GET", "DELETE"),
}

_Answer = tuple[int, bytes, str, str]  # status, body, content type, extra header lines


@dataclass
class ReceivedRecord:
    """One record the emulator received (ingestData batches are split)."""

    endpoint: Endpoint
    flags: dict[str, str]
    headers: dict[str, str]
    record: dict[str, Any]
    verdict: dict[str, Any] | None
    received_at: float = field(default_factory=time.time)

    @property
    def hook(self) -> str:
        """The ``x-claude-hook`` of the record's ``requestHeaders`` ("" if none)."""
        raw = self.record.get("requestHeaders")
        try:
            headers = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return ""
        value = headers.get("x-claude-hook") if isinstance(headers, dict) else None
        return value if isinstance(value, str) else ""

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dict of the dataclass fields."""
        return dataclasses.asdict(self)


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Request:
    __slots__ = (
        "body",
        "chunked",
        "expect",
        "headers",
        "keep_alive",
        "length",
        "method",
        "path",
        "query",
    )

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = b""
        self.length = 0
        self.chunked = False
        self.expect = False


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json_bytes(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def _parse_query(query: str) -> dict[str, str]:
    if not query:
        return {}
    if "%" in query or "+" in query:
        return dict(parse_qsl(query, keep_blank_values=True))
    flags: dict[str, str] = {}
    for item in query.split("&"):
        if item:
            name, _, value = item.partition("=")
            flags[name] = value
    return flags


def _error_body(message: str) -> bytes:
    return _json_bytes({"success": False, "message": message})


def _response(
    status: int, body: bytes, content_type: str, *, close: bool, extra: str = ""
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Server: akto-emulator\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _parse_head(head: bytes, max_body: int) -> _Request:
    """Parse a request head (without the blank line) and its body framing."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise _HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise _HttpError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.lower()
        if not sep or not name or name != name.strip() or " " in name:
            raise _HttpError(400, f"malformed header line {line[:80]!r}")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    path, _, query = target.partition("?")
    connection = headers.get("connection", "").lower()
    keep_alive = (
        ("close" not in connection) if version == "HTTP/1.1" else ("keep-alive" in connection)
    )
    request = _Request(method, path, query, headers, keep_alive)
    request.expect = headers.get("expect", "").lower() == "100-continue"
    te = headers.get("transfer-encoding")
    length_text = headers.get("content-length")
    if te is not None:
        if te.lower() != "chunked":
            raise _HttpError(400, f"unsupported Transfer-Encoding {te[:40]!r}")
        if length_text is not None:
            raise _HttpError(400, "both Content-Length and Transfer-Encoding given")
        request.chunked = True
    elif length_text is None:
        if method in ("POST", "PUT", "PATCH"):
            raise _HttpError(400, "missing Content-Length")
    elif not (length_text.isascii() and length_text.isdigit()):
        raise _HttpError(400, f"invalid Content-Length {length_text[:40]!r}")
    else:
        request.length = int(length_text)
        if request.length > max_body:
            raise _HttpError(413, f"body of {request.length} bytes exceeds {max_body}")
    return request


def _parse_chunked(buf: bytearray, pos: int, max_body: int) -> tuple[bytes, int] | None:
    """Decode a complete chunked body at ``buf[pos:]``: (body, end) or None if incomplete."""
    spans: list[tuple[int, int]] = []
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > _CHUNK_LINE_LIMIT:
                raise _HttpError(400, "chunk size line too long")
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        if not size_text or not _HEXDIGITS.issuperset(size_text):
            raise _HttpError(400, "invalid chunk size")
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailer section, ends with an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if len(buf) - pos > _HEADER_LIMIT:
                        raise _HttpError(400, "trailers too long")
                    return None
                if eol == pos:
                    return b"".join(bytes(buf[a:b]) for a, b in spans), eol + 2
                pos = eol + 2
        total += size
        if total > max_body:
            raise _HttpError(413, f"body exceeds {max_body} bytes")
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise _HttpError(400, "malformed chunk")
        spans.append((pos, pos + size))
        pos += size + 2


def _longest_string_over(value: Any, limit: int) -> bool:
    """True if any string (key or value) in a parsed JSON value is longer than limit."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) > limit:
                return True
        elif isinstance(item, dict):
            for key, sub in item.items():
                if len(key) > limit:
                    return True
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _HttpError(500, f"malformed JSON body: {exc}") from None


def _flag(flags: dict[str, str], name: str) -> bool:
    return flags.get(name, "").lower() == "true"


def _fail_open_result() -> dict[str, Any]:
    result = allowed_result()
    result["failOpen"] = True
    result["error"] = "guardrail engine unavailable"
    return result


_EVALUATED = "guardrails evaluated"
_ALLOWED_VERDICT = allowed_result()
_ALLOWED_ANSWER = _json_bytes(
    {"success": True, "message": _EVALUATED, "data": {"guardrailsResult": _ALLOWED_VERDICT}}
)
_INGESTED_ANSWER = _json_bytes({"success": True, "message": "ingested", "data": {}})


class _Connection(asyncio.Protocol):
    """One client connection: buffers bytes, parses requests, answers in order."""

    def __init__(self, app: EmulatorServer) -> None:
        self._app = app
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._request: _Request | None = None  # parsed head waiting for its body
        self._body_start = 0
        self._continue_sent = False
        self._busy = False  # a delayed (latency_s) answer is in flight
        self._write_paused = False
        self._reading_paused = False
        self._closing = False  # no further requests: lingering close or closed
        self._eof = False

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._app._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._buf.clear()
        self._app._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # discard what a rejected client still sends
        self._buf += data
        if not self._busy:
            self._process()

    def eof_received(self) -> bool:
        self._eof = True
        if self._closing:
            if self._transport is not None:
                self._transport.close()
        elif not self._busy:
            self._process()
        return True  # we close the transport ourselves once answers are written

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- helpers
    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        pause = self._busy or self._write_paused
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _process(self) -> None:
        try:
            self._process_buffer()
        except Exception:  # pragma: no cover - defensive: never crash the server
            _log.exception("akto emulator: unexpected error on a connection")
            self.abort()
            return
        if self._eof and not self._busy and not self._closing and self._transport is not None:
            self._closing = True
            self._transport.close()

    def _process_buffer(self) -> None:
        app = self._app
        buf = self._buf
        while not self._busy and not self._closing:
            request = self._request
            if request is None:
                while buf.startswith(b"\r\n"):  # stray CRLFs between requests are allowed
                    del buf[:2]
                end = buf.find(b"\r\n\r\n", 0, _HEADER_LIMIT + 4)
                if end < 0:
                    if len(buf) > _HEADER_LIMIT:
                        self._reject(_HttpError(431, "request head too large"))
                    return
                try:
                    request = _parse_head(bytes(buf[:end]), app.max_body_bytes)
                except _HttpError as err:
                    self._reject(err)
                    return
                self._request = request
                self._body_start = end + 4
                self._continue_sent = False
            if request.chunked:
                try:
                    decoded = _parse_chunked(buf, self._body_start, app.max_body_bytes)
                except _HttpError as err:
                    self._reject(err)
                    return
                if decoded is None:
                    self._send_continue(request)
                    return
                request.body, end = decoded
            else:
                end = self._body_start + request.length
                if len(buf) < end:
                    self._send_continue(request)
                    return
                if request.length:
                    request.body = bytes(buf[self._body_start : end])
            del buf[:end]
            self._request = None
            self._handle(request)

    def _send_continue(self, request: _Request) -> None:
        if request.expect and not self._continue_sent and self._transport is not None:
            self._continue_sent = True
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _handle(self, request: _Request) -> None:
        app = self._app
        latency = app.latency_s
        if latency > 0 and request.path in (_PROXY, _INGEST):
            self._busy = True
            self._update_reading()
            task = asyncio.get_running_loop().create_task(self._answer_later(request, latency))
            app._tasks.add(task)
            task.add_done_callback(app._tasks.discard)
            return
        self._send(request, app._dispatch(request))

    async def _answer_later(self, request: _Request, delay: float) -> None:
        await asyncio.sleep(delay)
        self._send(request, self._app._dispatch(request))
        self._busy = False
        self._update_reading()
        self._process()

    def _send(self, request: _Request, answer: _Answer) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        status, body, ctype, extra = answer
        close = not request.keep_alive
        transport.write(_response(status, body, ctype, close=close, extra=extra))
        if close:
            self._closing = True
            transport.close()

    def _reject(self, err: _HttpError) -> None:
        """Answer an error, half-close, and discard input for a while (no RST)."""
        self._closing = True
        self._request = None
        self._buf.clear()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_response(err.status, _error_body(err.message), _JSON, close=True))
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(_LINGER_S, transport.close)


class EmulatorServer:
    """Akto-compatible HTTP server; run it on a background thread or in a loop.

    ``start()``/``stop()`` (or ``with EmulatorServer(...) as server:``) run it on
    a daemon thread with its own event loop; ``await serve_forever()`` runs it
    in the current loop. ``policy``, ``token``, ``latency_s``, ``fail_open`` and
    ``ingest_success_false`` may be changed while it runs.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        latency_s: float = 0.0,
        fail_open: bool = False,
        ingest_success_false: bool = False,
        max_body_bytes: int = 12 * _MiB,
    ) -> None:
        self.policy: Policy = policy if policy is not None else Policy(())
        self.host = host
        self.token = token
        self.latency_s = latency_s
        self.fail_open = fail_open
        self.ingest_success_false = ingest_success_false
        self.max_body_bytes = max_body_bytes
        self._requested_port = port
        self._port: int | None = None
        self._records: list[ReceivedRecord] = []
        self._cond = threading.Condition()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lifecycle = threading.Lock()

    # ------------------------------------------------------------------ info
    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._port is None:
            raise RuntimeError("EmulatorServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # --------------------------------------------------------------- records
    @property
    def records(self) -> list[ReceivedRecord]:
        """A snapshot of every record received so far, oldest first."""
        with self._cond:
            return list(self._records)

    def clear(self) -> int:
        """Forget all received records; returns how many were dropped."""
        with self._cond:
            count = len(self._records)
            self._records.clear()
            return count

    def wait_for_records(self, n: int, timeout: float = 5.0) -> list[ReceivedRecord]:
        """Block until at least ``n`` records arrived (all of them are returned).

        Raises TimeoutError if fewer than ``n`` arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._records) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {n} records within {timeout}s, got {len(self._records)}"
                    )
                self._cond.wait(remaining)
            return list(self._records)

    def _store(self, items: list[ReceivedRecord]) -> None:
        with self._cond:
            self._records.extend(items)
            self._cond.notify_all()

    # ------------------------------------------------------------- lifecycle
    async def start_async(self) -> None:
        """Bind and start serving in the running loop (returns once listening)."""
        if self._server is not None:
            raise RuntimeError("EmulatorServer is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self._requested_port
        )
        self._loop = loop
        self._stop_event = asyncio.Event()
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def serve_forever(self) -> None:
        """Serve in the current loop until cancelled or ``stop()`` is called."""
        if self._server is None:
            await self.start_async()
        assert self._stop_event is not None
        try:
            await self._stop_event.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and close every connection (call in the server's loop)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)
        self._connections.clear()

    def start(self) -> EmulatorServer:
        """Start on a daemon thread with its own loop; blocks until listening."""
        with self._lifecycle:
            if self._thread is not None or self._server is not None:
                raise RuntimeError("EmulatorServer is already started")
            ready = threading.Event()
            self._start_error = None
            thread = threading.Thread(
                target=self._thread_main, args=(ready,), name="akto-emulator", daemon=True
            )
            thread.start()
            ready.wait()
            if self._start_error is not None:
                thread.join()
                error, self._start_error = self._start_error, None
                raise error
            self._thread = thread
        return self

    def stop(self) -> None:
        """Stop the server (closing its connections) and join its thread. Idempotent."""
        with self._lifecycle:
            loop, event, thread = self._loop, self._stop_event, self._thread
            if loop is not None and event is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)
            if thread is not None and thread is not threading.current_thread():
                thread.join()
                self._thread = None
                self._loop = None
                self._stop_event = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event) -> None:
        async def main() -> None:
            try:
                await self.start_async()
            except BaseException as exc:
                self._start_error = exc
                ready.set()
                return
            ready.set()
            await self.serve_forever()

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - defensive
            if not ready.is_set():
                self._start_error = exc
                ready.set()
            else:
                _log.exception("akto emulator loop crashed")

    # ------------------------------------------------------------- endpoints
    def _dispatch(self, request: _Request) -> _Answer:
        try:
            return self._route(request)
        except _HttpError as err:
            return err.status, _error_body(err.message), _JSON, ""
        except Exception as exc:
            _log.exception("akto emulator: error while handling %s", request.path)
            return 500, _error_body(f"internal error: {exc}"), _JSON, ""

    def _route(self, request: _Request) -> _Answer:
        path = request.path
        methods = _ROUTES.get(path)
        if methods is None:
            raise _HttpError(404, f"no such endpoint: {path[:200]}")
        if request.method not in methods:
            message = _error_body(f"method {request.method} not allowed on {path}")
            return 405, message, _JSON, f"Allow: {', '.join(methods)}\r\n"
        if path in (_PROXY, _INGEST):
            token = self.token
            if token is not None and request.headers.get("authorization") != token:
                return 401, b"Unauthorized", _TEXT, ""
            return self._http_proxy(request) if path == _PROXY else self._ingest_data(request)
        if path == "/healthCheck":
            return 200, b'{"status":"ok"}', _JSON, ""
        if request.method == "DELETE":
            return 200, _json_bytes({"success": True, "cleared": self.clear()}), _JSON, ""
        return 200, _json_bytes([r.to_dict() for r in self.records]), _JSON, ""

    def _http_proxy(self, request: _Request) -> _Answer:
        body = request.body
        if len(body) > _PROXY_MAX_BODY:
            raise _HttpError(422, f"request body exceeds {_PROXY_MAX_BODY} bytes")
        data = _parse_json(body)
        if len(body) > _PROXY_MAX_STRING and _longest_string_over(data, _PROXY_MAX_STRING):
            raise _HttpError(422, f"a string exceeds {_PROXY_MAX_STRING} characters")
        if not isinstance(data, dict):
            raise _HttpError(422, "body must be a JSON object")
        payload = data.get("requestPayload")
        if not isinstance(payload, str) or not payload:
            raise _HttpError(422, "requestPayload is required and must be a non-empty string")
        flags = _parse_query(request.query)
        want_request = _flag(flags, "guardrails")
        want_response = _flag(flags, "response_guardrails")
        verdict: dict[str, Any] | None = None
        if want_request or want_response:
            policy = self.policy
            fail_open = self.fail_open
            req = resp = None
            if want_request:
                req = _fail_open_result() if fail_open else policy.evaluate(data, "request")
            if want_response:
                resp = _fail_open_result() if fail_open else policy.evaluate(data, "response")
            if req is not None and resp is not None:
                verdict = {**req, "requestResult": req, "responseResult": resp}
            else:
                verdict = req if req is not None else resp
        self._store([ReceivedRecord("http-proxy", flags, request.headers, data, verdict)])
        if verdict is None:
            return 200, _INGESTED_ANSWER, _JSON, ""
        if verdict == _ALLOWED_VERDICT:
            return 200, _ALLOWED_ANSWER, _JSON, ""
        answer = {"success": True, "message": _EVALUATED, "data": {"guardrailsResult": verdict}}
        return 200, _json_bytes(answer), _JSON, ""

    def _ingest_data(self, request: _Request) -> _Answer:
        body = request.body
        if len(body) > _INGEST_MAX_BODY:
            raise _HttpError(422, f"request body exceeds {_INGEST_MAX_BODY} bytes")
        data = _parse_json(body)
        if len(body) > _INGEST_MAX_STRING and _longest_string_over(data, _INGEST_MAX_STRING):
            raise _HttpError(422, f"a string exceeds {_INGEST_MAX_STRING} characters")
        batch = data.get("batchData") if isinstance(data, dict) else None
        if not isinstance(batch, list):
            raise _HttpError(422, "body must be a JSON object with a list 'batchData'")
        for index, item in enumerate(batch):
            if not isinstance(item, dict):
                raise _HttpError(422, f"batchData[{index}] must be an object")
        flags = _parse_query(request.query)
        now = time.time()
        self._store(
            [
                ReceivedRecord("ingestData", dict(flags), dict(request.headers), item, None, now)
                for item in batch
            ]
        )
        answer = {
            "success": not self.ingest_success_false,
            "message": f"ingested {len(batch)} records",
        }
        return 200, _json_bytes(answer), _JSON, ""
