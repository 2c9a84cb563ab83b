"""A near-zero-cost Akto stand-in for the benchmarks (asyncio protocol, fixed answers).

It answers every ``/api/http-proxy`` call with the emulator's "allowed" verdict,
acknowledges ``/api/ingestData`` batches (counting their records), answers
``/healthCheck``, and ``DELETE /_emulator/records`` returns and resets the count.
Keep-alive, ``Content-Length`` bodies only, one ``write`` per answer, TCP_NODELAY:
it measures the client, not itself. Not a test double of Akto's rules: that is
:mod:`akto_otel.emulator`.

Usage::

    python -m benchmarks.stub_server --port 0   # prints "listening on http://127.0.0.1:N"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys

from akto_otel.emulator.policy import allowed_result

__all__ = ["ALLOWED_VERDICT_BODY", "main"]

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


def _answer(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("latin-1") + body


_VERDICT = _answer("200 OK", ALLOWED_VERDICT_BODY.encode())
_INGESTED = _answer("200 OK", b'{"success":true,"message":"ingested"}')
_HEALTHY = _answer("200 OK", b'{"status":"ok"}')
_NOT_FOUND = _answer("404 Not Found", b'{"success":false,"message":"no such endpoint"}')
_BAD = _answer("400 Bad Request", b'{"success":false,"message":"bad request"}')


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    value = head[at + 17 : head.find(b"\r\n", at + 2)].strip()
    return int(value) if value.isdigit() else 0


class _Counter:
    records = 0


class _Connection(asyncio.Protocol):
    def __init__(self, counter: _Counter) -> None:
        self._counter = counter
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
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _HEAD_LIMIT:
                    out.append(_BAD)
                    buf.clear()
                break
            head = bytes(buf[: end + 2])
            length = _content_length(head)
            if len(buf) < end + 4 + length:
                break
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            out.append(self._route(head.split(b" ", 2), body))
        if out and self._transport is not None:
            self._transport.write(b"".join(out))

    def _route(self, line: list[bytes], body: bytes) -> bytes:
        if len(line) < 2:
            return _BAD
        method, target = line[0], line[1].split(b"?", 1)[0]
        if target == b"/api/http-proxy":
            self._counter.records += 1
            return _VERDICT
        if target == b"/api/ingestData":
            try:
                self._counter.records += len(json.loads(body)["batchData"])
            except (ValueError, KeyError, TypeError):
                return _BAD
            return _INGESTED
        if target == b"/healthCheck":
            return _HEALTHY
        if target == b"/_emulator/records" and method == b"DELETE":
            cleared, self._counter.records = self._counter.records, 0
            return _answer("200 OK", json.dumps({"success": True, "cleared": cleared}).encode())
        return _NOT_FOUND


async def _serve(port: int) -> None:
    counter = _Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counter), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stub_server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
