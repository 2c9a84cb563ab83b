"""Windowed judging: what a 1 MiB tool input costs the PreToolUse hook.

Content over Akto's per-string limit is judged in overlapping windows
(:mod:`akto_otel.windows`), sent concurrently on the guard's one client session.
This figure times the whole PreToolUse hook on a 1 KiB and a 1 MiB Bash command,
and, for the 1 MiB one, the same window records checked one after another (what
judging would cost without concurrency). The server is the stub Akto in its own
process; rounds rotate the order.

Run alone: ``python -m benchmarks --only windows``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
from typing import Any

from akto_otel import windows
from akto_otel.contract import WireContext, encode_record
from akto_otel.guardrails import GuardrailClient

from .common import (
    Config,
    FigureResult,
    Summary,
    Table,
    Verdict,
    fmt_ratio,
    fmt_us,
    rotated,
    seconds_per_call,
    summarize,
)
from .contenders import settings_for
from .environment import Environment
from .harness import Contender, run_sequential
from .workload import hook_callbacks, make_guard, make_provider, post_tool_input, pre_tool_input

__all__ = ["HEADER", "run"]

HEADER = "Windowed judging: the PreToolUse hook on a 1 MiB tool input"
SMALL = "hook: PreToolUse, 1 KiB command"
LARGE = "hook: PreToolUse, 1 MiB command"
CONCURRENT = "  its window records judged concurrently (windows.judge)"
SERIAL = "  its window records checked one after another"
_MIB = 1024 * 1024
PLAN = "planning: windows.plan_tool_call"
ENCODE = "encoding its window records: contract.encode_record"
YARDSTICK = "yardstick: json.dumps of the tool input, once"
#: The issue's target for the whole PreToolUse callback on the 1 MiB command, p50.
LARGE_TARGET_MS = 8.0


def _command(size: int) -> str:
    line = "echo 'build step output line with some ordinary text in it' >> build.log\n"
    return (line * (size // len(line) + 1))[:size]


async def _measure(url: str, cfg: Config) -> dict[str, Any]:
    settings = settings_for(url)
    provider = make_provider()
    guard = make_guard(settings, provider=provider)
    hooks = hook_callbacks(guard)
    pre, post = hooks["PreToolUse"], hooks["PostToolUse"]
    client = GuardrailClient(settings)
    ids = itertools.count()
    inputs = {}
    for name, size in ((SMALL, 1024), (LARGE, _MIB)):
        data = pre_tool_input()
        data["tool_input"] = {"command": _command(size), "description": "build"}
        inputs[name] = data
    closing = post_tool_input(with_result=False)
    wire = WireContext().with_session("bench-session-0", "prompt-bench-session-0")
    limits = windows.Limits.from_settings(settings)
    plan = windows.plan_tool_call(wire, "Bash", inputs[LARGE]["tool_input"], limits)
    errors = {SMALL: 0, LARGE: 0, CONCURRENT: 0, SERIAL: 0}

    current = [""]

    def hook_call(name: str) -> Any:
        async def call(_: int = 0) -> None:
            current[0] = tool_use_id = f"toolu_{next(ids)}"
            if await pre(inputs[name], tool_use_id, {}):
                errors[name] += 1

        return call

    async def close_span(_: int = 0) -> None:
        # Untimed, as figure 1: PostToolUse without a result ends the tool span.
        await post(closing, current[0], {})

    async def serial(_: int = 0) -> None:
        for record in plan.records:
            verdict = await client.check(record)
            if verdict.decision != "allow" or verdict.error is not None:
                errors[SERIAL] += 1

    async def concurrent(_: int = 0) -> None:
        verdict = await windows.judge(client.check, plan, limits)
        if verdict.decision != "allow" or verdict.error is not None:
            errors[CONCURRENT] += 1

    calls = {
        SMALL: hook_call(SMALL),
        LARGE: hook_call(LARGE),
        CONCURRENT: concurrent,
        SERIAL: serial,
    }
    after = {SMALL: close_span, LARGE: close_span}
    for name, call in calls.items():  # warm up, and check every contender is allowed
        await call()
        if name in after:
            await after[name]()
    if any(errors.values()):
        raise RuntimeError(f"windows: a contender got no allow verdict: {errors}")
    rounds = cfg.pick(cfg.repeats, 1)
    n = cfg.pick(60, 6)
    samples: dict[str, list[int]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in rotated(names, r):
            timed = Contender(name, calls[name], after=after.get(name))
            samples[name] += await run_sequential(timed, n, 0, collect=False, cpu_out=cpu[name])
    await client.aclose()
    await guard.aclose()
    guard.shutdown()
    provider.shutdown()
    tool_input = inputs[LARGE]["tool_input"]
    pieces = {
        PLAN: lambda: windows.plan_tool_call(wire, "Bash", tool_input, limits),
        ENCODE: lambda: [encode_record(record) for record in plan.records],
        YARDSTICK: lambda: json.dumps(tool_input),
    }
    repeat, number = cfg.pick(7, 2), cfg.pick(5, 1)
    in_process = {
        name: seconds_per_call(piece, number=number, repeat=repeat, pick=statistics.median)
        for name, piece in pieces.items()
    }
    return {
        "summary": {name: summarize(s) for name, s in samples.items()},
        "cpu_us": {name: statistics.median(v) * 1e6 for name, v in cpu.items()},
        "windows": len(plan.records),
        "chars": plan.size,
        "errors": errors,
        "rounds": rounds,
        "n": n,
        "in_process_us": {name: seconds * 1e6 for name, seconds in in_process.items()},
        "in_process_runs": (repeat, number),
    }


def run(cfg: Config, env: Environment) -> FigureResult:
    server = env
    result = FigureResult("windows", HEADER)
    m = asyncio.run(_measure(server.url, cfg))
    env.clear_stub()
    summary: dict[str, Summary] = m["summary"]
    cpu: dict[str, float] = m["cpu_us"]
    table = Table(
        f"PreToolUse on {server.name} ({m['rounds']} round(s) x {m['n']} calls; the 1 MiB "
        f"command is {m['chars']:,} escaped characters in {m['windows']} windows)",
        ["contender", "p50", "p99", "CPU/call", "errors"],
    )
    for name, s in summary.items():
        table.add(name, fmt_us(s.p50), fmt_us(s.p99), fmt_us(cpu[name]), m["errors"][name])
    table.notes.append(
        "hook rows: the whole PreToolUse callback (the windows planned, their records "
        "encoded, spans, the guardrail calls), timed; the span-closing PostToolUse runs "
        "after it untimed (CPU/call includes it). The indented rows send the 1 MiB "
        "command's window records, built once beforehand, with GuardrailClient.check: all "
        "at once as the hook does, then one at a time."
    )
    result.tables.append(table)
    pieces: dict[str, float] = m["in_process_us"]
    repeat, number = m["in_process_runs"]
    yardstick = pieces[YARDSTICK]
    parts = Table(
        f"the 1 MiB command's CPU pieces in process, no server (median of {repeat} x "
        f"{number} calls)",
        ["piece", "time", "x yardstick"],
    )
    for name, us in pieces.items():
        parts.add(name, fmt_us(us), fmt_ratio(us / yardstick if yardstick else float("nan")))
    parts.notes.append(
        "planning escapes every string once to find where windows cut, then encodes "
        "each window's payload as JSON text; encoding the records escapes those "
        "payloads again as JSON strings. Both run before the server reads a byte."
    )
    result.tables.append(parts)
    large, small = summary[LARGE], summary[SMALL]
    before_send = pieces[PLAN] + pieces[ENCODE]
    together, alone = summary[CONCURRENT], summary[SERIAL]
    speedup = alone.p50 / together.p50 if together.p50 else float("nan")
    result.verdicts.append(
        Verdict(
            "1 MiB tool input: its windows judged concurrently beat one after another",
            fmt_ratio(speedup),
            speedup > 1.0,
            f"{m['windows']} windows: concurrent p50 {fmt_us(together.p50)} vs serial "
            f"{fmt_us(alone.p50)}; the whole hook {fmt_us(large.p50)} "
            f"({fmt_us(cpu[LARGE])} CPU), on a 1 KiB input {fmt_us(small.p50)}",
        )
    )
    result.verdicts.append(
        Verdict(
            f"1 MiB tool input: the whole PreToolUse (planning + windows judged concurrently) "
            f"<= {LARGE_TARGET_MS:g} ms, p50",
            fmt_us(large.p50),
            large.p50 <= LARGE_TARGET_MS * 1000,
            f"p99 {fmt_us(large.p99)}, CPU/call {fmt_us(cpu[LARGE])} (with the untimed "
            f"PostToolUse); the window records alone, concurrent: {fmt_us(together.p50)}; "
            f"planning + record encoding in process: {fmt_us(before_send)}",
        )
    )
    result.data = {
        "summary": {k: v.as_dict() for k, v in summary.items()},
        "cpu_us_per_call": cpu,
        "windows": m["windows"],
        "chars": m["chars"],
        "in_process_us": pieces,
    }
    return result
