"""Figure 5: Akto down (connection refused) for 200k hook events in observe mode.

Turns of UserPromptSubmit, 10 x (PreToolUse, PostToolUse with a result), Stop over
64 sessions, back to back. Each run is a fresh ``python -m benchmarks.fig_outage``
child process (so earlier figures' freed memory cannot hide growth). Measured: its
RSS growth (VmRSS after minus before, after a warm-up, latency buffer
preallocated), the processor's drop count, and the hook latency, against the
same run with Akto up (the stub server).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from array import array
from typing import Any

from akto_otel.config import Settings

from .common import (
    Config,
    FigureResult,
    Summary,
    Table,
    Verdict,
    fmt_us,
    rss_bytes,
    summarize,
)
from .environment import Environment
from .servers import closed_port_url, run_child
from .workload import (
    hook_callbacks,
    make_guard,
    make_provider,
    post_tool_input,
    pre_tool_input,
    prompt_input,
    quiet_logs,
    stop_input,
)

__all__ = ["run"]

HEADER = "Figure 5: outage (Akto down) in observe mode: memory, drops, hook latency"
TOOLS_PER_TURN = 10
SESSIONS = 64


async def _play(url: str, n_events: int, warm_events: int) -> dict[str, Any]:
    settings = Settings(
        ingestion_url=url, sync_mode=False, timeout=2.0, export_shutdown_timeout=0.5
    )
    provider = make_provider()
    guard = make_guard(settings, provider=provider)
    hooks = hook_callbacks(guard)
    prompt_hook = hooks["UserPromptSubmit"]
    pre_hook = hooks["PreToolUse"]
    post_hook = hooks["PostToolUse"]
    stop_hook = hooks["Stop"]
    inputs = [
        (
            prompt_input(f"bench-session-{s}"),
            pre_tool_input(f"bench-session-{s}"),
            post_tool_input(f"bench-session-{s}"),
            stop_input(f"bench-session-{s}"),
        )
        for s in range(SESSIONS)
    ]
    clock = time.perf_counter_ns
    tool_ids = iter(range(1 << 62))

    async def events(count: int, out: array[int] | None) -> None:
        done = 0
        turn = 0
        while done < count:
            prompt, pre, post, stop = inputs[turn % SESSIONS]
            turn += 1
            start = clock()
            await prompt_hook(prompt, None, {})
            if out is not None:
                out[done] = clock() - start
            done += 1
            for _ in range(TOOLS_PER_TURN):
                if done + 2 > count:
                    break
                tool_use_id = f"toolu_{next(tool_ids)}"
                start = clock()
                await pre_hook(pre, tool_use_id, {})
                mid = clock()
                await post_hook(post, tool_use_id, {})
                end = clock()
                if out is not None:
                    out[done] = mid - start
                    out[done + 1] = end - mid
                done += 2
            if done >= count:
                break
            start = clock()
            await stop_hook(stop, None, {})
            if out is not None:
                out[done] = clock() - start
            done += 1
            if turn % 50 == 0:
                await asyncio.sleep(0)

    await events(warm_events, None)
    samples: array[int] = array("q", bytes(8 * n_events))
    gc.collect()
    rss0 = rss_bytes()
    start = time.perf_counter()
    await events(n_events, samples)
    elapsed = time.perf_counter() - start
    rss1 = rss_bytes()
    gc.collect()
    rss2 = rss_bytes()
    stats = guard.processor.stats.snapshot()
    queued = guard.processor.queue_size
    shutdown0 = time.perf_counter()
    await guard.client.aclose()
    guard.shutdown()  # bounded by export_shutdown_timeout (a flush would wait on Akto)
    provider.shutdown()
    shutdown = time.perf_counter() - shutdown0
    return {
        "events": n_events,
        "seconds": elapsed,
        "latency": summarize(samples).as_dict(),
        "rss_before": rss0,
        "rss_after": rss1,
        "rss_after_gc": rss2,
        "stats": stats,
        "queued": queued,
        "shutdown_seconds": shutdown,
    }


def _child(url: str, n: int, warm: int) -> dict[str, Any]:
    got = run_child("fig_outage", url, n, warm, timeout=600)
    lat = got["latency"]
    got["latency"] = Summary(
        n=int(lat["n"]),
        p50=lat["p50_us"],
        p90=lat["p90_us"],
        p99=lat["p99_us"],
        mean=lat["mean_us"],
        minimum=lat["min_us"],
    )
    return got


def child_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fig_outage")
    parser.add_argument("url")
    parser.add_argument("events", type=int)
    parser.add_argument("warm", type=int)
    args = parser.parse_args(argv)
    quiet_logs()
    print(json.dumps(asyncio.run(_play(args.url, args.events, args.warm))))


def run(cfg: Config, env: Environment) -> FigureResult:
    result = FigureResult("outage", HEADER)
    n = cfg.pick(200_000, 5_000)
    warm = cfg.pick(5_000, 500)
    down = _child(closed_port_url(), n, warm)
    up = _child(env.url, n, warm)
    env.clear_stub()
    table = Table(
        f"{n:,} hook events back to back, observe mode (sync_mode=False)",
        [
            "Akto",
            "events/s",
            "p50",
            "p99",
            "mean",
            "RSS at start",
            "RSS growth",
            "after gc",
            "exported",
            "failed",
            "dropped",
            "queued at end",
        ],
    )
    for name, got in (("down (connection refused)", down), ("up (stub server)", up)):
        lat = got["latency"]
        table.add(
            name,
            f"{got['events'] / got['seconds']:,.0f}",
            fmt_us(lat.p50),
            fmt_us(lat.p99),
            fmt_us(lat.mean),
            f"{got['rss_before'] / 2**20:.0f} MiB",
            f"{(got['rss_after'] - got['rss_before']) / 2**20:.1f} MiB",
            f"{(got['rss_after_gc'] - got['rss_before']) / 2**20:.1f} MiB",
            got["stats"]["exported"],
            got["stats"]["failed"],
            got["stats"]["dropped"],
            got["queued"],
        )
    table.notes.append(
        "observe mode queues every tool result and turn with guardrails flags, so the worker "
        "posts them in /api/ingestData batches with publishToGuardrails (AKTO_OBSERVE_DELIVERY="
        "proxy: one per request to /api/http-proxy); with Akto down it retries (backoff, "
        "AKTO_EXPORT_RETRY_TIMEOUT) and the bounded queue (AKTO_EXPORT_QUEUE_SIZE=8192) "
        "drops the overflow, counted."
    )
    table.notes.append(
        "events arrive far faster than any agent makes them (tens of thousands per second), "
        "so drops with Akto up measure delivery capacity, not loss in normal use."
    )
    result.tables.append(table)
    growth = (down["rss_after"] - down["rss_before"]) / 2**20
    result.verdicts.append(
        Verdict(
            f"outage memory growth < 64 MB for {n:,} events",
            f"{growth:.1f} MiB",
            growth < 64,
            f"dropped {down['stats']['dropped']:,}, counted in processor.stats",
        )
    )
    ratio = down["latency"].p50 / up["latency"].p50
    result.verdicts.append(
        Verdict(
            "hook latency with Akto down within 10% of Akto up (p50)",
            f"{(ratio - 1) * 100:+.1f}%",
            ratio <= 1.10,
            f"down p50 {fmt_us(down['latency'].p50)} vs up {fmt_us(up['latency'].p50)}; "
            f"p99 {fmt_us(down['latency'].p99)} vs {fmt_us(up['latency'].p99)}",
        )
    )
    result.data = {
        name: {k: (v.as_dict() if k == "latency" else v) for k, v in got.items()}
        for name, got in (("down", down), ("up", up))
    }
    return result


if __name__ == "__main__":
    child_main()
