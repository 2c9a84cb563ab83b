"""Timing loops: sequential latency and throughput under K parallel callers."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .common import Summary, summarize

__all__ = ["Contender", "Throughput", "run_sequential", "run_throughput"]

Call = Callable[[int], Awaitable[Any]]


async def _nothing() -> None:
    return None


@dataclass
class Contender:
    """One way of making the guardrail call.

    ``call(worker)`` is timed; ``after(worker)`` runs untimed after each call (the
    hook contenders close the tool span there, as PostToolUse would). ``setup`` and
    ``close`` run on the measuring loop.
    """

    name: str
    call: Call
    after: Call | None = None
    setup: Callable[[], Awaitable[None]] = _nothing
    close: Callable[[], Awaitable[None]] = _nothing
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def run_sequential(
    contender: Contender,
    n: int,
    warmup: int,
    *,
    collect: bool = True,
    cpu_out: list[float] | None = None,
) -> list[int]:
    """``n`` calls one after another; nanosecond latencies (after ``warmup`` calls).

    ``collect``: run a full garbage collection first, so a pending one does not land
    in the samples of the next contender. ``cpu_out`` gets this process's CPU
    seconds per call of the measured loop (untimed ``after`` calls included).
    """
    call, after = contender.call, contender.after
    for _ in range(warmup):
        await call(0)
        if after is not None:
            await after(0)
    samples = [0] * n
    clock = time.perf_counter_ns
    if collect:
        gc.collect()
    cpu0 = time.process_time()
    for i in range(n):
        start = clock()
        await call(0)
        samples[i] = clock() - start
        if after is not None:
            await after(0)
    if cpu_out is not None:
        cpu_out.append((time.process_time() - cpu0) / n)
    return samples


@dataclass
class Throughput:
    calls: int
    seconds: float
    latency: Summary
    client_cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


async def run_throughput(
    contender: Contender,
    k: int,
    duration: float,
    warmup: float,
    server_cpu: Callable[[], float] | None = None,
) -> Throughput:
    """K workers calling back to back for ``duration`` seconds (after ``warmup``)."""
    call, after = contender.call, contender.after
    clock = time.perf_counter_ns

    async def worker(w: int, until: float, samples: list[int] | None) -> int:
        done = 0
        while time.perf_counter() < until:
            start = clock()
            await call(w)
            if samples is not None:
                samples.append(clock() - start)
            if after is not None:
                await after(w)
            done += 1
        return done

    until = time.perf_counter() + warmup
    await asyncio.gather(*(worker(w, until, None) for w in range(k)))
    gc.collect()
    samples: list[int] = []
    server0 = server_cpu() if server_cpu is not None else 0.0
    cpu0 = time.process_time()
    start = time.perf_counter()
    counts = await asyncio.gather(*(worker(w, start + duration, samples) for w in range(k)))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    server = (server_cpu() - server0) if server_cpu is not None else float("nan")
    return Throughput(
        calls=sum(counts),
        seconds=elapsed,
        latency=summarize(samples),
        client_cpu=cpu / elapsed,
        server_cpu=server / elapsed,
    )
