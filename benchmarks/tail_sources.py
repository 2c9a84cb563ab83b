"""Where the guarded hook's p99 comes from: the same hook with one cause taken away.

Side by side in one run, rounds rotated, against the stand-in in its own process
(``benchmarks.standin``), the app's SDK pipeline on (a ``BatchSpanProcessor``):

* ``stdlib``: figure 1's plain urllib call in a thread, the p99 target's yardstick;
* ``hook``: figure 1's hook, PreToolUse timed, then PostToolUse with the tool's
  (empty) result, untimed, which queues one record for Akto: the processor's worker
  thread delivers them while later calls run;
* ``hook, no record``: PostToolUse without a ``tool_response`` (a tool that returned
  nothing), so nothing is queued and the worker stays idle: the only difference;
* ``hook, collector off``: the shipped hook with ``gc.disable()`` during its rounds
  (a diagnostic, not an option).

    python -m benchmarks.tail_sources [--rounds 4] [--calls 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics

from .common import summarize
from .contenders import STDLIB, guardrail_specs, hook_contender
from .harness import run_sequential
from .servers import StandIn
from .workload import quiet_logs

HOOK = "hook"
NO_RECORD = "hook, no record"
GC_OFF = "hook, collector off"


async def _measure(
    url: str, rounds: int, calls: int
) -> tuple[dict[str, list[int]], dict[str, list[float]]]:
    stdlib = await next(s for s in guardrail_specs(url) if s.name == STDLIB).build()
    contenders = {
        STDLIB: stdlib,
        HOOK: hook_contender(HOOK, url, None),
        NO_RECORD: hook_contender(NO_RECORD, url, None, record=False),
        GC_OFF: hook_contender(GC_OFF, url, None),
    }
    for contender in contenders.values():
        await contender.setup()
    names = list(contenders)
    samples: dict[str, list[int]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            off = name == GC_OFF
            if off:
                gc.collect()
                gc.disable()
            try:
                samples[name] += await run_sequential(
                    contenders[name], calls, 200, collect=not off, cpu_out=cpu[name]
                )
            finally:
                gc.enable()
    for contender in contenders.values():
        await contender.close()
    denied = {n: c.extra["errors"]() for n, c in contenders.items() if "errors" in c.extra}
    if any(denied.values()):
        raise RuntimeError(f"tail_sources: expected every hook call allowed, got {denied}")
    return samples, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tail_sources")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args(argv)
    quiet_logs()
    server = StandIn()
    try:
        samples, cpu = asyncio.run(_measure(server.url, args.rounds, args.calls))
    finally:
        server.stop()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    yardstick = summarize(samples[STDLIB]).p99
    print(f"{'contender':<22}{'p50':>9}{'p90':>9}{'p99':>9}{'CPU/call':>10}  stdlib p99 / this p99")
    for name, values in samples.items():
        s = summarize(values)
        per_call = statistics.median(cpu[name]) * 1e6
        print(
            f"{name:<22}{s.p50:>7.0f}µs{s.p90:>7.0f}µs{s.p99:>7.0f}µs{per_call:>8.0f}µs"
            f"  {yardstick / s.p99:.2f}x"
        )
    print("CPU/call: this process's CPU per call (worker threads included), median of rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
