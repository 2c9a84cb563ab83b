"""Figure 2: throughput under concurrency, K parallel hooks (many sessions, one process).

Each of K workers calls back to back (its own session id, fresh tool_use_ids) for
a fixed time after a warm-up; calls/s counts completed calls, p99 is over every
call of the window. Repeated, the median repetition is reported.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from typing import Any

from .common import Config, FigureResult, Table, Verdict, fmt_ratio, fmt_us, median_by, rotated
from .contenders import HOOK_DEFAULT, REFERENCE, STDLIB, errors_of, guardrail_specs
from .environment import Environment
from .harness import Contender, Throughput, run_throughput

__all__ = ["run"]

HEADER = "Figure 2: throughput under concurrency K (calls/s and p99)"
KS = (1, 16, 64)
#: The issue's target: at K=16 the hook makes this many times the published connector's
#: calls/s (the hook contender with the app's SDK pipeline on).
K16_PUBLISHED_FACTOR = 3.5


async def _measure(server: Environment, cfg: Config) -> dict[str, Any]:
    duration = cfg.pickf(0.8, 0.1)
    warmup = cfg.pickf(0.2, 0.05)
    reps = cfg.pick(2, 1)
    errors: dict[str, int] = {}
    order = [spec.name for spec in guardrail_specs(server.url)]
    results: dict[str, dict[int, list[Throughput]]] = {n: {k: [] for k in KS} for n in order}
    for rep in range(reps):
        for k in KS:
            specs = guardrail_specs(server.url)
            for spec in rotated(specs, rep):
                contender: Contender = await spec.build()
                await contender.setup()
                got = await run_throughput(
                    contender, k, duration, warmup, server_cpu=server.cpu_seconds
                )
                errors[spec.name] = errors.get(spec.name, 0) + errors_of(contender)
                await contender.close()
                results[spec.name][k].append(got)
    return {"results": results, "errors": errors, "order": order}


def _median(runs: list[Throughput]) -> Throughput:
    return median_by(runs, lambda t: t.rate)


def run(cfg: Config, env: Environment) -> FigureResult:
    server = env
    result = FigureResult("concurrency", HEADER)
    m = asyncio.run(_measure(server, cfg))
    env.clear_stub()
    results: dict[str, dict[int, list[Throughput]]] = m["results"]
    med = {name: {k: _median(runs) for k, runs in by_k.items()} for name, by_k in results.items()}
    table = Table(
        f"calls/s (p99) on {server.name}; median of {len(next(iter(results.values()))[1])} "
        "repetition(s)",
        ["contender", *(f"K={k}" for k in KS), "best K", "errors"],
    )
    for name in m["order"]:
        row = [f"{med[name][k].rate:,.0f} ({fmt_us(med[name][k].latency.p99)})" for k in KS]
        best = max(KS, key=lambda k: med[name][k].rate)
        table.add(name, *row, f"K={best}", m["errors"].get(name, 0))
    table.notes.append(
        "hook rows: each call is PreToolUse (timed) + PostToolUse closing the span (counted "
        "in calls/s, not in the latency)."
    )
    table.notes.append(
        "published connector and stdlib: asyncio.to_thread on the default executor = "
        "min(32, cpus+4) = "
        f"{min(32, (os.cpu_count() or 1) + 4)} threads here, so K above that queues."
    )
    result.tables.append(table)

    ratio = Table(
        "calls/s relative to the published connector, and CPU use at K=16",
        [
            "contender",
            *(f"x published K={k}" for k in KS),
            "client CPU @16",
            "server CPU @16",
            "spread @16",
        ],
    )
    ref = med[REFERENCE]
    for name in m["order"]:
        runs16 = results[name][16]
        rates = [t.rate for t in runs16]
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else f"{rates[0]:,.0f}"
        ratio.add(
            name,
            *(fmt_ratio(med[name][k].rate / ref[k].rate) for k in KS),
            f"{med[name][16].client_cpu * 100:.0f}%",
            f"{med[name][16].server_cpu * 100:.0f}%",
            spread,
        )
    ratio.notes.append(
        "CPU: fraction of one core. A client at ~100% with the server well below is "
        "client-bound; 2 cores are shared by client, server and everything else."
    )
    result.tables.append(ratio)

    hook16 = med[HOOK_DEFAULT][16].rate / ref[16].rate
    result.verdicts.append(
        Verdict(
            f"at K=16 the hook makes >= {K16_PUBLISHED_FACTOR:g}x the published connector's "
            "calls/s",
            fmt_ratio(hook16),
            hook16 >= K16_PUBLISHED_FACTOR,
            f"hook {med[HOOK_DEFAULT][16].rate:,.0f}/s vs published {ref[16].rate:,.0f}/s",
        )
    )
    std16 = med[HOOK_DEFAULT][16].rate / med[STDLIB][16].rate
    result.verdicts.append(
        Verdict(
            "at K=16 the hook makes >= 1x the stdlib reference's calls/s",
            fmt_ratio(std16),
            std16 >= 1,
            f"hook {med[HOOK_DEFAULT][16].rate:,.0f}/s vs stdlib {med[STDLIB][16].rate:,.0f}/s",
        )
    )
    knees = []
    for name in m["order"]:
        rates = [med[name][k].rate for k in KS]
        knee = next((KS[i] for i in range(1, len(KS)) if rates[i] < rates[i - 1] * 1.10), KS[-1])
        knees.append(f"{name}: flat from K={knee}")
    result.notes.append("knee (calls/s gains < 10% past it): " + "; ".join(knees))
    result.data = {
        "server": server.name,
        "median": {
            name: {
                str(k): {
                    "rate": t.rate,
                    "p50_us": t.latency.p50,
                    "p99_us": t.latency.p99,
                    "client_cpu": t.client_cpu,
                    "server_cpu": t.server_cpu,
                }
                for k, t in by_k.items()
            }
            for name, by_k in med.items()
        },
        "rates": {
            name: {str(k): [t.rate for t in runs] for k, runs in by_k.items()}
            for name, by_k in results.items()
        },
        "errors": m["errors"],
        "spread_k16_relative": {
            name: (statistics.pstdev(r) / statistics.fmean(r) if len(r) > 1 else 0.0)
            for name, r in ((n, [t.rate for t in results[n][16]]) for n in results)
        },
    }
    return result
