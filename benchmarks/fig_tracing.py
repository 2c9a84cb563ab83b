"""Figure 3: tracing-only overhead per hook event (observe mode, no network on the hook path).

A turn is UserPromptSubmit, 5 x (PreToolUse, PostToolUse with a result), Stop: the
hooks open and close spans, add events and queue the Akto records (delivered by the
processor's worker thread, untimed flush between bursts of 50 turns so the queue
never overflows). The same inputs go to a bare ``async def cb(i, t, c): return {}``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from akto_otel.config import Settings

from .common import Config, FigureResult, Table, Verdict, fmt_us, summarize
from .environment import Environment
from .workload import (
    Hook,
    hook_callbacks,
    make_guard,
    make_provider,
    post_tool_input,
    pre_tool_input,
    prompt_input,
    stop_input,
)

__all__ = ["run"]

HEADER = "Figure 3: tracing-only overhead per hook event (observe mode)"
EVENTS = ("UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop")
TOOLS_PER_TURN = 5
BURST_TURNS = 50


async def _bare(input_data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
    return {}


def _script(turns: int) -> list[tuple[str, dict[str, Any], str | None]]:
    events: list[tuple[str, dict[str, Any], str | None]] = []
    tool = 0
    for turn in range(turns):
        session = f"bench-session-{turn % 16}"
        events.append(("UserPromptSubmit", prompt_input(session), None))
        for _ in range(TOOLS_PER_TURN):
            tool += 1
            tool_use_id = f"toolu_{tool}"
            events.append(("PreToolUse", pre_tool_input(session), tool_use_id))
            events.append(("PostToolUse", post_tool_input(session), tool_use_id))
        events.append(("Stop", stop_input(session), None))
    return events


async def _play(
    hooks: dict[str, Hook],
    script: list[tuple[str, dict[str, Any], str | None]],
    flush: Callable[[], object],
) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {e: [] for e in EVENTS}
    clock = time.perf_counter_ns
    per_burst = BURST_TURNS * (2 + 2 * TOOLS_PER_TURN)
    gc.collect()
    for i, (event, data, tool_use_id) in enumerate(script):
        hook = hooks[event]
        start = clock()
        await hook(data, tool_use_id, {})
        samples[event].append(clock() - start)
        if (i + 1) % per_burst == 0:
            flush()
            await asyncio.sleep(0)
    flush()
    return samples


async def _measure(url: str, cfg: Config) -> dict[str, Any]:
    turns = cfg.pick(2000, 60)
    warm = _script(cfg.pick(100, 10))
    script = _script(turns)
    out: dict[str, Any] = {}
    variants: list[tuple[str, bool | None]] = [
        ("bare async callback", None),
        ("akto_otel observe mode", False),
        ("akto_otel observe mode + SDK MeterProvider", True),
    ]
    for name, metrics in variants:
        if metrics is None:
            hooks: dict[str, Hook] = dict.fromkeys(EVENTS, _bare)
            await _play(hooks, warm, lambda: None)
            out[name] = {"samples": await _play(hooks, script, lambda: None)}
            continue
        provider = make_provider()
        settings = Settings(ingestion_url=url, sync_mode=False)
        guard = make_guard(settings, provider=provider, metrics=metrics)
        callbacks = hook_callbacks(guard)
        hooks = {e: callbacks[e] for e in EVENTS}
        await _play(hooks, warm, guard.force_flush)
        before = guard.processor.stats.snapshot()["exported"]
        started = time.perf_counter()
        samples = await _play(hooks, script, guard.force_flush)
        seconds = time.perf_counter() - started
        stats = guard.processor.stats.snapshot()
        stats["records_per_s"] = round((stats["exported"] - before) / seconds)
        await guard.aclose()
        guard.shutdown()
        provider.shutdown()
        out[name] = {"samples": samples, "stats": stats}
    return out


def run(cfg: Config, env: Environment) -> FigureResult:
    result = FigureResult("tracing", HEADER)
    m = asyncio.run(_measure(env.url, cfg))
    env.clear_stub()
    bare = m["bare async callback"]["samples"]
    table = Table(
        "per event, microseconds (observe mode: AktoGuardrails(..., sync_mode=False))",
        ["variant", "event", "n", "p50", "p99", "mean", "p50 - bare", "p99 - bare"],
    )
    data: dict[str, Any] = {}
    overall: dict[str, float] = {}
    for name, got in m.items():
        samples: dict[str, list[int]] = got["samples"]
        data[name] = {e: summarize(s).as_dict() for e, s in samples.items()}
        rows = [(e, samples[e], bare[e]) for e in EVENTS]
        every = [x for e in EVENTS for x in samples[e]]
        rows.append(("all events", every, [x for e in EVENTS for x in bare[e]]))
        for event, s, b in rows:
            sm, bm = summarize(s), summarize(b)
            table.add(
                name,
                event,
                sm.n,
                fmt_us(sm.p50),
                fmt_us(sm.p99),
                fmt_us(sm.mean),
                fmt_us(sm.p50 - bm.p50),
                fmt_us(sm.p99 - bm.p99),
            )
            if event == "all events":
                overall[name] = sm.p50 - bm.p50
        if "stats" in got:
            data[name]["exporter"] = got["stats"]
    table.notes.append(
        "PostToolUse and Stop attach an Akto record; ending the span queues it for the "
        "processor's worker (delivered off the hook path). Spans go to a BatchSpanProcessor "
        "with a no-op exporter."
    )
    result.tables.append(table)
    result.data = data
    observe = overall["akto_otel observe mode"]
    result.verdicts.append(
        Verdict(
            "tracing-only overhead <= 50 µs/event at p50",
            fmt_us(observe),
            observe <= 50,
            "all events of a turn, observe mode minus bare callback; with an SDK "
            f"MeterProvider: {fmt_us(overall['akto_otel observe mode + SDK MeterProvider'])}",
        )
    )
    return result
