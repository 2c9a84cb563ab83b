"""A near-zero-cost stand-in for Akto's OTLP ingestion (``POST /v1/logs``), for fig_gateway.

It decodes each http/protobuf ``ExportLogsServiceRequest`` only to count its log
records (upb-backed protobuf), answers an empty ``ExportLogsServiceResponse``, and
``GET /_count`` returns ``{"records", "requests", "bytes"}`` so far. Keep-alive,
``Content-Length`` or chunked bodies, one ``write`` per answer, TCP_NODELAY. Not
Akto's mapping: that is :mod:`akto_otel.emulator.otlp_ingest` (the emulator maps
every event in Python and would be the bound of a gateway benchmark, not the gateway).

Usage::

    python -m benchmarks.otlp_sink --port 0   # prints "listening on http://127.0.0.1:N"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

__all__ = ["count_records", "main"]

_HEAD_LIMIT = 64 * 1024


def _answer(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("latin-1") + body


# An empty ExportLogsServiceResponse encodes to zero bytes: full success.
_ACCEPTED = _answer("200 OK", "application/x-protobuf", b"")
_NOT_FOUND = _answer("404 Not Found", "application/json", b'{"message":"no such endpoint"}')
_BAD = _answer("400 Bad Request", "application/json", b'{"message":"bad request"}')


def count_records(body: bytes) -> int:
    """Log records in an http/protobuf ``ExportLogsServiceRequest`` body."""
    request = ExportLogsServiceRequest.FromString(body)
    return sum(len(scope.log_records) for rl in request.resource_logs for scope in rl.scope_logs)


class _Counts:
    records = 0
    requests = 0
    bytes = 0


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
        self._buf += data
        while self._transport is not None:
            head_end = self._buf.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self._buf) > _HEAD_LIMIT:
                    self._transport.close()
                return
            head = bytes(self._buf[:head_end])
            start = head_end + 4
            if _header(head, b"transfer-encoding").lower() == b"chunked":
                got = _dechunk(self._buf, start)
                if got is None:
                    return
                body, end = got
            else:
                length = _header(head, b"content-length")
                end = start + (int(length) if length.isdigit() else 0)
                if len(self._buf) < end:
                    return
                body = bytes(self._buf[start:end])
            del self._buf[:end]
            self._transport.write(self._respond(head, body))

    def _respond(self, head: bytes, body: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0].split()
        method, path = (line[0], line[1].split(b"?")[0]) if len(line) >= 2 else (b"", b"")
        if method == b"POST" and path == b"/v1/logs":
            try:
                records = count_records(body)
            except Exception:  # any undecodable body is a 400, counted nowhere
                return _BAD
            self._counts.records += records
            self._counts.requests += 1
            self._counts.bytes += len(body)
            return _ACCEPTED
        if method == b"GET" and path == b"/_count":
            counts = {
                "records": self._counts.records,
                "requests": self._counts.requests,
                "bytes": self._counts.bytes,
            }
            return _answer("200 OK", "application/json", json.dumps(counts).encode())
        return _NOT_FOUND


async def _serve(port: int) -> None:
    counts = _Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counts), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_sink")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
