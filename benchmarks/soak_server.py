"""The soak's servers, in a process of their own: the emulator behind a fault proxy, and the model.

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

    python -m benchmarks.soak_server --tools 10 --slow 0.25 1.5
    # prints one JSON line: {"akto": URL, "model": URL, "control": URL}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import threading
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from akto_otel.emulator import EmulatorServer, default_policy
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse

__all__ = ["PHASES", "main"]

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


async def _serve(tools: int, slow: tuple[float, float]) -> None:
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        control_port = int(probe.getsockname()[1])
    site = web.TCPSite(runner, "127.0.0.1", control_port)
    await site.start()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_server")
    parser.add_argument("--tools", type=int, default=10, help="Bash calls per session")
    parser.add_argument(
        "--slow",
        type=float,
        nargs=2,
        default=(0.25, 1.5),
        metavar=("MIN_S", "MAX_S"),
        help="delay of an answer in the slow phase, uniform between these",
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.tools, (args.slow[0], args.slow[1])))


if __name__ == "__main__":
    main()
