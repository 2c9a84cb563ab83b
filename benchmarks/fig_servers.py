"""Figure 0: the server options, and evidence that the server is not the bottleneck.

For each server (the Akto emulator in its own process; nginx with a fixed verdict):
its capacity, measured by a pipelining client that costs the client next to nothing
(64 requests per write on 8 connections, so the server's CPU saturates), against the
floor client's sequential latency and its rate at K=16 with the server's CPU use.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from akto_otel.contract import encode_record, http_proxy_url

from .common import Config, FigureResult, Table, fmt_us, summarize
from .contenders import FLOOR, guardrail_specs
from .environment import Environment, ServerHandle
from .harness import run_sequential, run_throughput
from .workload import tool_record

__all__ = ["run"]

HEADER = "Figure 0: server options (is the server the bottleneck?)"


async def _capacity(url: str, duration: float, conns: int = 8, depth: int = 64) -> float:
    """Requests/s the server answers to pipelined keep-alive clients."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = http_proxy_url("", "claude_agent_sdk", guardrails=True)
    body = encode_record(tool_record())
    request = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    at = head.find(b"Content-Length: ") + 16
    answer_len = len(head) + int(head[at : head.find(b"\r\n", at)])
    await reader.readexactly(answer_len - len(head))
    writer.close()
    batch = request * depth
    done = [0] * conns

    async def pipe(i: int, until: float) -> None:
        r, w = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < until:
                w.write(batch)
                await r.readexactly(answer_len * depth)
                done[i] += depth
        finally:
            w.close()

    start = time.perf_counter()
    await asyncio.gather(*(pipe(i, start + duration) for i in range(conns)))
    return sum(done) / (time.perf_counter() - start)


async def _measure(server: ServerHandle, cfg: Config) -> dict[str, float]:
    spec = next(s for s in guardrail_specs(server.url, None) if s.name == FLOOR)
    assert spec.build is not None
    floor = await spec.build()
    await floor.setup()
    samples = await run_sequential(floor, cfg.pick(2000, 200), cfg.pick(200, 20))
    seq = summarize(samples)
    k16 = await run_throughput(
        floor,
        16,
        cfg.pickf(1.5, 0.2),
        cfg.pickf(0.3, 0.05),
        server_cpu=server.cpu_seconds,
    )
    await floor.close()
    cpu0 = server.cpu_seconds()
    start = time.perf_counter()
    capacity = await _capacity(server.url, cfg.pickf(1.5, 0.2))
    capacity_cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - start)
    return {
        "floor_p50_us": seq.p50,
        "floor_p99_us": seq.p99,
        "floor_k16_rate": k16.rate,
        "floor_k16_p99_us": k16.latency.p99,
        "floor_k16_server_cpu": k16.server_cpu,
        "floor_k16_client_cpu": k16.client_cpu,
        "capacity_rate": capacity,
        "capacity_server_cpu": capacity_cpu,
    }


def run(cfg: Config, env: Environment) -> FigureResult:
    result = FigureResult("servers", HEADER)
    table = Table(
        "Server options (same request: the PreToolUse record on /api/http-proxy?guardrails=true)",
        [
            "server",
            "floor p50",
            "floor p99",
            "floor K=16 calls/s",
            "server CPU @K=16",
            "client CPU @K=16",
            "capacity req/s (pipelined)",
            "server CPU @capacity",
            "K=16 / capacity",
        ],
    )
    measured: dict[str, dict[str, float]] = {}
    for server in env.servers():
        m = asyncio.run(_measure(server, cfg))
        measured[server.name] = m
        env.after_load(server)
        table.add(
            server.name,
            fmt_us(m["floor_p50_us"]),
            fmt_us(m["floor_p99_us"]),
            f"{m['floor_k16_rate']:,.0f}",
            f"{m['floor_k16_server_cpu'] * 100:.0f}%",
            f"{m['floor_k16_client_cpu'] * 100:.0f}%",
            f"{m['capacity_rate']:,.0f}",
            f"{m['capacity_server_cpu'] * 100:.0f}%",
            f"{m['floor_k16_rate'] / m['capacity_rate'] * 100:.0f}%",
        )
    chosen = env.choose(measured, cfg.server)
    table.notes.append(
        "capacity: 8 connections x 64 pipelined requests per write; the client does almost "
        "nothing per request, so the server's CPU is the limit."
    )
    table.notes.append(
        "CPU columns are fractions of one core (server from /proc/<pid>/stat, client from "
        "time.process_time); 2 cores in all."
    )
    if env.nginx_missing_reason:
        table.notes.append(f"nginx: {env.nginx_missing_reason}")
    result.tables.append(table)
    result.data = {"servers": measured, "chosen": chosen, "why": env.choice_reason}
    result.notes.append(f"guardrail-call figures use: {chosen} ({env.choice_reason})")
    return result
