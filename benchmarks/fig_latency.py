"""Figure 1: per-hook latency, sequential (one call at a time), every contender.

Contenders are measured in rounds, the order rotated each round, so slow drifts
of a shared machine hit all of them; the percentiles pool every round's samples
and the spread column gives the lowest and highest per-round p50.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from .common import Config, FigureResult, Table, Verdict, fmt_ratio, fmt_us, summarize
from .contenders import (
    CHECK_DEFAULT,
    FLOOR,
    HOOK_DEFAULT,
    HOOK_STREAM,
    REFERENCE,
    errors_of,
    guardrail_specs,
)
from .environment import Environment
from .harness import Contender, run_sequential

__all__ = ["run"]

HEADER = "Figure 1: per-hook latency, sequential"


async def _measure(url: str, h2_url: str | None, cfg: Config) -> dict[str, Any]:
    specs = guardrail_specs(url, h2_url)
    built: list[Contender] = []
    skipped: dict[str, str] = {}
    for spec in specs:
        if spec.build is None:
            skipped[spec.name] = spec.why_not
            continue
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
        order = built[r % len(built) :] + built[: r % len(built)]
        for contender in order:
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
        "skipped": skipped,
        "order": [c.name for c in built],
        "rounds": rounds,
        "n": n,
    }


def run(cfg: Config, env: Environment) -> FigureResult:
    server = env.guard_server()
    result = FigureResult("latency", HEADER)
    m = asyncio.run(_measure(server.url, server.h2_url, cfg))
    env.after_load(server)
    summary = m["summary"]
    floor = summary[FLOOR]
    ref = summary[REFERENCE]
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
            "ref/this p50",
            "ref/this p99",
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
            fmt_us(cpu[name]),
            fmt_us(cpu[name] - cpu[FLOOR]),
            m["errors"][name],
        )
    for name, why in m["skipped"].items():
        table.add(name, "skipped", "", "", "", "", "", "", "", "", "", why)
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
        "[candidate]: GuardrailClient subclass in benchmarks/clients.py whose post() uses "
        "asyncio streams instead of httpx; check() and the hook are the package's own."
    )
    result.tables.append(table)
    result.data = {
        "server": server.name,
        "summary": {k: v.as_dict() for k, v in summary.items()},
        "round_p50_us": m["round_p50"],
        "cpu_us_per_call": cpu,
        "errors": m["errors"],
        "skipped": m["skipped"],
    }
    hook = summary[HOOK_DEFAULT]
    own = hook.p50 - floor.p50
    result.verdicts.append(
        Verdict(
            "guardrail hook's own cost (hook p50 - floor p50) < 150 µs",
            fmt_us(own),
            own < 150,
            f"hook p50 {fmt_us(hook.p50)}, floor p50 {fmt_us(floor.p50)}; by CPU per call: "
            f"{fmt_us(cpu[HOOK_DEFAULT] - cpu[FLOOR])}",
        )
    )
    result.verdicts.append(
        Verdict(
            "hook >= 2x faster than reference at p50",
            fmt_ratio(ref.p50 / hook.p50),
            ref.p50 / hook.p50 >= 2,
            f"reference p50 {fmt_us(ref.p50)}",
        )
    )
    result.verdicts.append(
        Verdict(
            "hook >= 3x faster than reference at p99",
            fmt_ratio(ref.p99 / hook.p99),
            ref.p99 / hook.p99 >= 3,
            f"reference p99 {fmt_us(ref.p99)}, hook p99 {fmt_us(hook.p99)}",
        )
    )
    cand = summary[HOOK_STREAM]
    cand_own = cand.p50 - floor.p50
    result.verdicts.append(
        Verdict(
            "[candidate: stream post] hook's own cost < 150 µs",
            fmt_us(cand_own),
            cand_own < 150,
            f"hook p50 {fmt_us(cand.p50)}, floor p50 {fmt_us(floor.p50)}; by CPU per call: "
            f"{fmt_us(cpu[HOOK_STREAM] - cpu[FLOOR])}",
        )
    )
    result.verdicts.append(
        Verdict(
            "[candidate: stream post] hook >= 2x faster than reference at p50",
            fmt_ratio(ref.p50 / cand.p50),
            ref.p50 / cand.p50 >= 2,
            f"reference p50 {fmt_us(ref.p50)}",
        )
    )
    result.verdicts.append(
        Verdict(
            "[candidate: stream post] hook >= 3x faster than reference at p99",
            fmt_ratio(ref.p99 / cand.p99),
            ref.p99 / cand.p99 >= 3,
            f"reference p99 {fmt_us(ref.p99)}, hook p99 {fmt_us(cand.p99)}",
        )
    )
    check = summary[CHECK_DEFAULT]
    result.notes.append(
        f"of the package hook's {fmt_us(hook.p50)} p50, GuardrailClient.check (httpx) is "
        f"{fmt_us(check.p50)}; the rest of the hook (spans, record, verdict) about "
        f"{fmt_us(hook.p50 - check.p50)}"
    )
    if len(m["round_p50"][FLOOR]) > 1:
        spread = statistics.pstdev(m["round_p50"][FLOOR]) / statistics.fmean(m["round_p50"][FLOOR])
        result.notes.append(f"floor p50 varies {spread * 100:.0f}% (stdev/mean) across rounds")
    return result
