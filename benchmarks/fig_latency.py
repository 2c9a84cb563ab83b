"""Figure 1: per-hook latency, sequential (one call at a time), every contender.

Contenders are measured in rounds, the order rotated each round, so slow drifts
of a shared machine hit all of them; the percentiles pool every round's samples
and the spread column gives the lowest and highest per-round p50.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from .common import Config, FigureResult, Table, Verdict, fmt_ratio, fmt_us, rotated, summarize
from .contenders import (
    AIOHTTP,
    CHECK_DEFAULT,
    FLOOR,
    HOOK_DEFAULT,
    REFERENCE,
    STDLIB,
    errors_of,
    folded_hook_spec,
    guardrail_specs,
)
from .environment import Environment
from .harness import Contender, run_sequential

__all__ = ["run"]

HEADER = "Figure 1: per-hook latency, sequential"


async def _measure(url: str, cfg: Config) -> dict[str, Any]:
    specs = [*guardrail_specs(url), folded_hook_spec(url)]
    built: list[Contender] = []
    for spec in specs:
        contender = await spec.build()
        await contender.setup()
        built.append(contender)
    rounds = cfg.pick(cfg.repeats, 1)
    n = cfg.pick(1500, 150)
    warmup = cfg.pick(150, 20)
    samples: dict[str, list[int]] = {c.name: [] for c in built}
    round_p50: dict[str, list[float]] = {c.name: [] for c in built}
    cpu: dict[str, list[float]] = {c.name: [] for c in built}
    for r in range(rounds):
        for contender in rotated(built, r):
            got = await run_sequential(contender, n, warmup, cpu_out=cpu[contender.name])
            samples[contender.name].extend(got)
            round_p50[contender.name].append(summarize(got).p50)
    errors = {c.name: errors_of(c) for c in built}
    for contender in built:
        await contender.close()
    return {
        "summary": {name: summarize(s) for name, s in samples.items()},
        "round_p50": round_p50,
        "cpu_us": {name: statistics.median(v) * 1e6 for name, v in cpu.items()},
        "errors": errors,
        "order": [c.name for c in built],
        "rounds": rounds,
        "n": n,
    }


def run(cfg: Config, env: Environment) -> FigureResult:
    server = env
    result = FigureResult("latency", HEADER)
    m = asyncio.run(_measure(server.url, cfg))
    env.clear_stub()
    summary = m["summary"]
    floor = summary[FLOOR]
    ref = summary[REFERENCE]
    std = summary[STDLIB]
    table = Table(
        f"Sequential guardrail call on {server.name} ({m['rounds']} round(s) x {m['n']} calls "
        "per contender)",
        [
            "contender",
            "p50",
            "p99",
            "mean",
            "p50 spread",
            "p50 - floor",
            "p50 / floor",
            "published/this p50",
            "published/this p99",
            "stdlib/this p50",
            "stdlib/this p99",
            "CPU/call",
            "CPU - floor",
            "errors",
        ],
    )
    cpu: dict[str, float] = m["cpu_us"]
    for name in m["order"]:
        s = summary[name]
        spread = m["round_p50"][name]
        table.add(
            name,
            fmt_us(s.p50),
            fmt_us(s.p99),
            fmt_us(s.mean),
            f"{min(spread):,.0f}-{max(spread):,.0f}",
            fmt_us(s.p50 - floor.p50),
            fmt_ratio(s.p50 / floor.p50),
            fmt_ratio(ref.p50 / s.p50),
            fmt_ratio(ref.p99 / s.p99),
            fmt_ratio(std.p50 / s.p50),
            fmt_ratio(std.p99 / s.p99),
            fmt_us(cpu[name]),
            fmt_us(cpu[name] - cpu[FLOOR]),
            m["errors"][name],
        )
    table.notes.append(
        "check: GuardrailClient.check(record) with a pre-built record; hook: the whole "
        "PreToolUse callback (record, execute_tool span, run_guardrail span, verdict event); "
        "its span is then closed untimed by PostToolUse."
    )
    table.notes.append(
        "CPU/call: this process's CPU time per call (median of rounds; the hooks' untimed "
        "span-closing PostToolUse included; the reference's worker threads included). Unlike "
        "wall time it does not depend on how fast an idle vCPU wakes up."
    )
    table.notes.append(
        "published: Akto's connector as published (benchmarks/reference.py: record and URL "
        "built per call, new unverified SSL context and connection per call, urllib in a "
        "thread); stdlib: urllib with one opener, in a thread; floor: benchmarks/clients.py."
    )
    result.tables.append(table)
    result.data = {
        "server": server.name,
        "summary": {k: v.as_dict() for k, v in summary.items()},
        "round_p50_us": m["round_p50"],
        "cpu_us_per_call": cpu,
        "errors": m["errors"],
    }
    hook = summary[HOOK_DEFAULT]
    result.verdicts.extend(_verdicts(summary, cpu))
    check, bare = summary[CHECK_DEFAULT], summary[AIOHTTP]
    own = cpu[HOOK_DEFAULT] - cpu[CHECK_DEFAULT]
    client = cpu[CHECK_DEFAULT] - cpu[AIOHTTP]
    result.notes.append(
        f"of the package hook's {fmt_us(hook.p50)} p50 ({fmt_us(cpu[HOOK_DEFAULT])} CPU), "
        f"GuardrailClient.check is {fmt_us(check.p50)} ({fmt_us(cpu[CHECK_DEFAULT])} CPU), "
        f"a bare aiohttp post {fmt_us(bare.p50)} ({fmt_us(cpu[AIOHTTP])} CPU): the hook's own "
        f"layers (spans, record, verdict, metrics) ~{fmt_us(own)} CPU, the client's over "
        f"bare aiohttp ~{fmt_us(client)} CPU"
    )
    if len(m["round_p50"][FLOOR]) > 1:
        spread = statistics.pstdev(m["round_p50"][FLOOR]) / statistics.fmean(m["round_p50"][FLOOR])
        result.notes.append(f"floor p50 varies {spread * 100:.0f}% (stdev/mean) across rounds")
    return result


#: The issue's latency targets (with the app's SDK pipeline on: the hook contender's
#: TracerProvider has a BatchSpanProcessor).
FLOOR_FACTOR = 2.3  # hook p50 <= this x the floor's p50
FLOOR_PLUS_US = 400.0  # hook p50 <= floor p50 + this
PUBLISHED_FACTOR = 3.0  # published connector / hook, at p50 and at p99
STDLIB_P50_FACTOR = 1.5  # stdlib / hook at p50
STDLIB_P99_FACTOR = 1.25  # stdlib / hook at p99: hook p99 <= 0.8x stdlib's


def _verdicts(summary: dict[str, Any], cpu: dict[str, float]) -> list[Verdict]:
    """The issue's latency targets for the package hook, judged on this run."""
    hook, floor = summary[HOOK_DEFAULT], summary[FLOOR]
    out = [
        Verdict(
            f"hook p50 <= {FLOOR_FACTOR}x the floor",
            fmt_ratio(hook.p50 / floor.p50),
            hook.p50 <= FLOOR_FACTOR * floor.p50,
            f"hook {fmt_us(hook.p50)}, floor {fmt_us(floor.p50)} "
            f"(x{FLOOR_FACTOR} = {fmt_us(FLOOR_FACTOR * floor.p50)})",
        ),
        Verdict(
            f"hook p50 <= floor + {FLOOR_PLUS_US:.0f} µs",
            fmt_us(hook.p50 - floor.p50),
            hook.p50 - floor.p50 <= FLOOR_PLUS_US,
            f"by CPU per call: +{fmt_us(cpu[HOOK_DEFAULT] - cpu[FLOOR])}",
        ),
    ]
    ref = summary[REFERENCE]
    for q in ("p50", "p99"):
        ratio = getattr(ref, q) / getattr(hook, q)
        out.append(
            Verdict(
                f"hook >= {PUBLISHED_FACTOR:g}x faster than the published connector at {q}",
                fmt_ratio(ratio),
                ratio >= PUBLISHED_FACTOR,
                f"published {q} {fmt_us(getattr(ref, q))}, hook {fmt_us(getattr(hook, q))}",
            )
        )
    std = summary[STDLIB]
    ratio = std.p50 / hook.p50
    out.append(
        Verdict(
            f"hook >= {STDLIB_P50_FACTOR:g}x faster than stdlib at p50",
            fmt_ratio(ratio),
            ratio >= STDLIB_P50_FACTOR,
            f"stdlib p50 {fmt_us(std.p50)}, hook {fmt_us(hook.p50)}",
        )
    )
    ratio = std.p99 / hook.p99
    out.append(
        Verdict(
            f"hook p99 <= {1 / STDLIB_P99_FACTOR:.1f}x stdlib's p99 "
            f"(stdlib/hook >= {STDLIB_P99_FACTOR:g}x)",
            fmt_ratio(ratio),
            ratio >= STDLIB_P99_FACTOR,
            f"stdlib p99 {fmt_us(std.p99)}, hook {fmt_us(hook.p99)} "
            f"({hook.p99 / std.p99:.2f}x stdlib's)",
        )
    )
    return out
