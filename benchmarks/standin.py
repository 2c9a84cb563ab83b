"""The benchmarks' stand-in server: Akto's routes and its OTLP logs sink, near-zero cost.

* ``/api/http-proxy``: the emulator's "allowed" verdict, byte for byte its shape;
  ``/api/ingestData``: acknowledged, its records counted; ``/healthCheck``;
  ``DELETE /_emulator/records`` returns and resets the record count.
* ``POST /v1/logs`` (Akto's OTLP ingestion): each http/protobuf
  ``ExportLogsServiceRequest`` is decoded only to count its log records (upb-backed
  protobuf), the answer is an empty ``ExportLogsServiceResponse``; ``GET /_count``
  returns ``{"records", "requests", "bytes"}`` of ``/v1/logs`` so far.

asyncio protocol, keep-alive, ``Content-Length`` or chunked bodies, one ``write`` per
read, TCP_NODELAY: it measures the client, not itself. Not a test double of Akto's
rules (that is :mod:`akto_otel.emulator`, which maps every OTLP event in Python and
would bound a gateway benchmark itself).

``--soak`` serves the soak instead (Akto with faults, and the model):

* Akto: :class:`akto_otel.emulator.EmulatorServer` (default policy, every record kept,
  re-sent records counted) behind a small HTTP proxy that plays the fault phases:
  ``up`` forwards, ``down`` closes the listening port and every open connection (new
  connections are refused), ``slow`` forwards at once and answers late (the record is
  stored; the answer may outlive the client's timeout, which then sends it again),
  ``5xx`` answers 503 without forwarding.
* The model: :class:`akto_otel.testing.FakeAnthropic` with a scenario of ``--tools``
  Bash calls, so the agent process runs only the SDK, its CLIs and the guard.
* Control, on a port of its own: ``POST /phase/<name>`` switches the phase,
  ``POST /drop`` closes every connection to Akto (pooled keep-alive ones too, so a
  probe of the agent counts no idle socket), ``GET /counts`` answers what the emulator
  received. Closing stdin stops it.

Usage::

    python -m benchmarks.standin --port 0   # prints "listening on http://127.0.0.1:N"
    python -m benchmarks.standin --soak --tools 10 --slow 0.25 1.5
    # prints one JSON line: {"akto": URL, "model": URL, "control": URL}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import threading
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from akto_otel.emulator import EmulatorServer, default_policy
from akto_otel.emulator.policy import allowed_result
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse

__all__ = ["ALLOWED_VERDICT_BODY", "PHASES", "count_records", "main"]

#: The emulator's answer to an allowed /api/http-proxy check, byte for byte the same shape.
ALLOWED_VERDICT_BODY = json.dumps(
    {
        "success": True,
        "message": "guardrails evaluated",
        "data": {"guardrailsResult": allowed_result()},
    },
    separators=(",", ":"),
)
_HEAD_LIMIT = 64 * 1024


def _answer(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("latin-1") + body


_VERDICT = _answer("200 OK", ALLOWED_VERDICT_BODY.encode())
_INGESTED = _answer("200 OK", b'{"success":true,"message":"ingested"}')
_HEALTHY = _answer("200 OK", b'{"status":"ok"}')
# An empty ExportLogsServiceResponse encodes to zero bytes: full success.
_LOGS_ACCEPTED = _answer("200 OK", b"", "application/x-protobuf")
_NOT_FOUND = _answer("404 Not Found", b'{"success":false,"message":"no such endpoint"}')
_BAD = _answer("400 Bad Request", b'{"success":false,"message":"bad request"}')


def count_records(body: bytes) -> int:
    """Log records in an http/protobuf ``ExportLogsServiceRequest`` body."""
    request = ExportLogsServiceRequest.FromString(body)
    return sum(len(scope.log_records) for rl in request.resource_logs for scope in rl.scope_logs)


class _Counts:
    records = 0  # Akto records (guardrail calls and ingested records)
    log_records = 0
    log_requests = 0
    log_bytes = 0


def _header(head: bytes, name: bytes) -> bytes:
    at = head.lower().find(b"\r\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, end offset) of a chunked body starting at ``start``; None if incomplete."""
    body = bytearray()
    at = start
    while True:
        line_end = buf.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buf[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", at)
            return (bytes(body), trailer_end + 2) if trailer_end >= 0 else None
        if len(buf) < at + size + 2:
            return None
        body += buf[at : at + size]
        at += size + 2


class _Connection(asyncio.Protocol):
    def __init__(self, counts: _Counts) -> None:
        self._counts = counts
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buf) > _HEAD_LIMIT:
                    out.append(_BAD)
                    buf.clear()
                break
            head = bytes(buf[: head_end + 2])
            start = head_end + 4
            if b"chunked" in head and _header(head, b"transfer-encoding").lower() == b"chunked":
                got = _dechunk(buf, start)
                if got is None:
                    break
                body, end = got
            else:
                length = _header(head, b"content-length")
                end = start + (int(length) if length.isdigit() else 0)
                if len(buf) < end:
                    break
                body = bytes(buf[start:end])
            del buf[:end]
            out.append(self._route(head.split(b" ", 2), body))
        if out and self._transport is not None:
            self._transport.write(b"".join(out))

    def _route(self, line: list[bytes], body: bytes) -> bytes:
        if len(line) < 2:
            return _BAD
        counts = self._counts
        method, target = line[0], line[1].split(b"?", 1)[0]
        if target == b"/api/http-proxy":
            counts.records += 1
            return _VERDICT
        if target == b"/api/ingestData":
            try:
                counts.records += len(json.loads(body)["batchData"])
            except (ValueError, KeyError, TypeError):
                return _BAD
            return _INGESTED
        if target == b"/v1/logs" and method == b"POST":
            try:
                records = count_records(body)
            except Exception:  # any undecodable body is a 400, counted nowhere
                return _BAD
            counts.log_records += records
            counts.log_requests += 1
            counts.log_bytes += len(body)
            return _LOGS_ACCEPTED
        if target == b"/healthCheck":
            return _HEALTHY
        if target == b"/_emulator/records" and method == b"DELETE":
            cleared, counts.records = counts.records, 0
            return _answer("200 OK", json.dumps({"success": True, "cleared": cleared}).encode())
        if target == b"/_count" and method == b"GET":
            logs = {
                "records": counts.log_records,
                "requests": counts.log_requests,
                "bytes": counts.log_bytes,
            }
            return _answer("200 OK", json.dumps(logs).encode())
        return _NOT_FOUND


async def _serve(port: int) -> None:
    counts = _Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counts), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------ --soak

PHASES = ("up", "down", "slow", "5xx")
#: Every record is kept (and remembered for the duplicate count): the soak's volume
#: is tens of thousands, far below this.
_KEEP = 2_000_000
_FORWARDED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
_FAILING = b'{"success":false,"message":"soak: Akto is failing"}'


class _FaultProxy:
    """Forwards to ``upstream`` or plays the current fault phase."""

    def __init__(self, upstream: str, slow: tuple[float, float]) -> None:
        self.upstream = upstream
        self.slow = slow
        self.phase = "up"
        self.requests: Counter[str] = Counter()
        self.port = 0
        self._server = web.Server(self._handle, handler_cancellation=False)
        self._listener: asyncio.AbstractServer | None = None
        self._handlers: set[web.RequestHandler] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        await self._listen()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()

        def accept() -> web.RequestHandler:
            handler = self._server()
            self._handlers.add(handler)
            return handler

        self._listener = await loop.create_server(
            accept, "127.0.0.1", self.port, reuse_address=True, backlog=256
        )
        self.port = int(self._listener.sockets[0].getsockname()[1])

    async def switch(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        was, self.phase = self.phase, phase
        if phase == "down" and self._listener is not None:
            listener, self._listener = self._listener, None
            listener.close()
            self.drop_connections()
        elif was == "down" and phase != "down":
            await self._listen()

    def drop_connections(self) -> None:
        """Close every open connection (idle keep-alive ones too)."""
        for handler in list(self._handlers):
            handler.force_close()
        self._handlers.clear()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        phase = self.phase
        self.requests[phase] += 1
        body = await request.read()
        if phase in ("5xx", "down"):  # "down": a request that raced the close
            return web.Response(status=503, body=_FAILING, content_type="application/json")
        headers = {k: request.headers[k] for k in _FORWARDED_HEADERS if k in request.headers}
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.raw_path, data=body, headers=headers
        ) as answer:
            payload = await answer.read()
            status = answer.status
            content_type = answer.headers.get("Content-Type", "application/json")
        if phase == "slow":
            await asyncio.sleep(random.uniform(*self.slow))
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        await self._server.shutdown(0.5)
        if self._session is not None:
            await self._session.close()


def _counts(emulator: EmulatorServer, proxy: _FaultProxy) -> dict[str, Any]:
    records = emulator.records
    ingested = sum(1 for r in records if r.endpoint == "ingestData")
    return {
        "ingest_records": ingested,
        "ingest_unique": ingested - emulator.duplicates,
        "duplicates": emulator.duplicates,
        "proxy_records": sum(1 for r in records if r.endpoint == "http-proxy"),
        "emulator_dropped": emulator.dropped,
        "judge_timeouts": emulator.judge_timeouts,
        "requests_by_phase": dict(proxy.requests),
        "phase": proxy.phase,
    }


def _scenario(tools: int) -> Scenario:
    steps = [ToolUse("Bash", {"command": f"echo soak step {i}"}) for i in range(tools)]
    return Scenario(None, [*steps, Text("All soak steps done.")])


async def _serve_soak(tools: int, slow: tuple[float, float]) -> None:
    emulator = EmulatorServer(default_policy(), max_records=_KEEP)
    await emulator.start_async()
    proxy = _FaultProxy(emulator.url, slow)
    await proxy.start()
    stopped = asyncio.Event()

    async def phase(request: web.Request) -> web.Response:
        try:
            await proxy.switch(request.match_info["name"])
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"phase": proxy.phase})

    async def drop(request: web.Request) -> web.Response:
        proxy.drop_connections()
        return web.json_response({"dropped": True})

    async def counts(request: web.Request) -> web.Response:
        return web.json_response(_counts(emulator, proxy))

    app = web.Application()
    app.router.add_post("/phase/{name}", phase)
    app.router.add_post("/drop", drop)
    app.router.add_get("/counts", counts)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = int(runner.addresses[0][1])
    with FakeAnthropic(_scenario(tools)) as model:
        print(
            json.dumps(
                {
                    "akto": f"http://127.0.0.1:{proxy.port}",
                    "model": model.url,
                    "control": f"http://127.0.0.1:{control_port}",
                }
            ),
            flush=True,
        )
        loop = asyncio.get_running_loop()

        def wait_for_eof() -> None:
            # The parent closes our stdin to stop us (or it exited).
            sys.stdin.read()
            loop.call_soon_threadsafe(stopped.set)

        threading.Thread(target=wait_for_eof, daemon=True).start()
        await stopped.wait()
    await runner.cleanup()
    await proxy.close()
    await emulator.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.standin")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--soak", action="store_true", help="the soak's servers instead")
    parser.add_argument("--tools", type=int, default=10, help="--soak: Bash calls per session")
    parser.add_argument(
        "--slow",
        type=float,
        nargs=2,
        default=(0.25, 1.5),
        metavar=("MIN_S", "MAX_S"),
        help="--soak: delay of an answer in the slow phase, uniform between these",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        if args.soak:
            asyncio.run(_serve_soak(args.tools, (args.slow[0], args.slow[1])))
        else:
            asyncio.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
