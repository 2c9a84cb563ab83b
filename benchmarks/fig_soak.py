"""Soak: guarded real-CLI sessions for minutes while Akto goes down, slow and 5xx.

Eight workers (``--quick``: two; ``AKTO_BENCH_SOAK_SESSIONS``) each run real Claude Agent
SDK sessions of ten tool calls (``--quick``: one), one after the other, through the
bundled CLI against the scripted model, all guarded by one
:class:`~akto_otel.AktoGuardrails` in sync mode (``AKTO_TIMEOUT`` 1 s), for ten minutes
(``--quick``: 30 s; ``AKTO_BENCH_SOAK_SECONDS``). Akto is the emulator behind a fault
proxy and the model is :class:`~akto_otel.testing.FakeAnthropic`, both in their own process
(``python -m benchmarks.standin --soak``); the agent is a fresh ``python -m benchmarks.fig_soak``
process, so nothing earlier figures left behind counts. The proxy cycles through the
phases up, down (port refusing), up, slow (answers late, some past ``AKTO_TIMEOUT``),
up, 5xx (503).

Measured in the agent process, at rest after a warm-up round and again at the end
(sessions finished, the queue delivered): RSS, open file descriptors, asyncio tasks,
threads. Records: sent (attached to the app's ``AktoSpanProcessor``, counted by a
subclass) against acknowledged (distinct records the emulator received), dropped and
failed (the exporter's stats) and duplicated (the emulator's count of records received
again byte for byte). Verdict latency: every guardrail-calling hook callback
(UserPromptSubmit, PreToolUse, PostToolUse, Stop), timed around the callback and
filed under the phase it started in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from claude_agent_sdk import ClaudeAgentOptions, ResultMessage

from akto_otel import AktoSpanProcessor
from akto_otel.config import Settings
from akto_otel.testing import FakeAnthropic, offline_agent_env, run_agent

from .common import Config, FigureResult, Table, Verdict, fmt_us, load_average, rss_bytes, summarize
from .environment import Environment
from .servers import get_json, run_child, stop
from .workload import make_guard, make_provider, quiet_logs, timed_hooks

__all__ = ["HEADER", "SoakPlan", "accounting", "phase_schedule", "run"]

HEADER = "Soak: guarded real-CLI sessions with Akto down, slow and failing"
#: The fault cycle, each phase ``phase_seconds`` long, repeated until the end.
CYCLE = ("up", "down", "up", "slow", "up", "5xx")
PHASES = ("up", "down", "slow", "5xx")
VERDICT_EVENTS = frozenset({"UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"})
#: AKTO_TIMEOUT of the soak's guard; the slow phase answers after 0.25-1.5 of it.
TIMEOUT_S = 1.0
SLOW_S = (0.25, 1.5)
#: Settling after the last phase: Akto back up, the exporter's backoff (<= 5 s) over.
_DRAIN_S = 60.0
_RSS_GROWTH = 0.05


@dataclasses.dataclass(frozen=True)
class SoakPlan:
    """How long, how many sessions at once, tool calls per session, phase length."""

    sessions: int
    seconds: float
    phase_seconds: float
    tools: int


def plan_for(cfg: Config) -> SoakPlan:
    seconds = float(os.environ.get("AKTO_BENCH_SOAK_SECONDS") or cfg.pickf(600.0, 30.0))
    # --quick: two sessions of one tool call each, so the CLIs' start-up on a loaded
    # 2-core machine keeps the run near a minute; the full soak runs eight.
    sessions = int(os.environ.get("AKTO_BENCH_SOAK_SESSIONS") or cfg.pick(8, 2))
    return SoakPlan(
        sessions=max(1, sessions),
        seconds=seconds,
        phase_seconds=cfg.pickf(30.0, 5.0),
        tools=cfg.pick(10, 1),
    )


def phase_schedule(seconds: float, phase_seconds: float) -> list[tuple[float, str]]:
    """(start offset, phase) of every phase of a ``seconds`` run, cycling :data:`CYCLE`."""
    out: list[tuple[float, str]] = []
    at = 0.0
    index = 0
    while at < seconds:
        out.append((at, CYCLE[index % len(CYCLE)]))
        at += phase_seconds
        index += 1
    return out


def accounting(
    sent: int, stats: dict[str, int], queued: int, counts: dict[str, Any]
) -> dict[str, Any]:
    """Every record sent either acknowledged once (distinct at the emulator) or lost, counted.

    ``exact``: sent = acknowledged + dropped + failed, nothing left queued, and the
    exporter's own ``exported`` equals what the emulator acknowledged (no record it
    believes delivered is missing, none it gave up on arrived anyway).
    """
    acked = int(counts["ingest_unique"])
    lost = stats["dropped"] + stats["failed"]
    return {
        "sent": sent,
        "acknowledged": acked,
        "dropped": stats["dropped"],
        "failed": stats["failed"],
        "duplicated": int(counts["duplicates"]),
        "received": int(counts["ingest_records"]),
        "exported": stats["exported"],
        "retried": stats["retried"],
        "queued_at_end": queued,
        "unaccounted": sent - acked - lost - queued,
        "exact": sent == acked + lost
        and queued == 0
        and stats["exported"] == acked
        and int(counts["emulator_dropped"]) == 0,
    }


# ----------------------------------------------------------------------- agent process


class _CountingProcessor(AktoSpanProcessor):
    """The app's AktoSpanProcessor, counting every record the hooks hand it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sent = 0
        self._count_lock = threading.Lock()

    def attach(self, *args: Any, **kwargs: Any) -> None:
        with self._count_lock:
            self.sent += 1
        super().attach(*args, **kwargs)


@dataclasses.dataclass
class _ModelAt:
    """Stands in for a FakeAnthropic running in another process: only its URL is read."""

    url: str


def _fd_kind(fd: str) -> str:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "gone"
    if target.startswith(("socket:", "pipe:", "anon_inode:")):
        return target.split(":", 1)[0]
    return "file"


#: The SDK runs blocking work on AnyIO's worker threads: as many as were busy at once,
#: an idle one retired (after 10 s idle) only when the pool is next used.
_ANYIO_WORKER = "AnyIO worker thread"


async def _probe(control: str) -> dict[str, Any]:
    """The agent process at rest: RSS, open fds (by kind), asyncio tasks, threads.

    Akto's side closes its connections first: the pools' idle keep-alive sockets
    (as many as sessions last ran at once) then close, a leaked socket stays.
    """
    _control(control, "/drop", "POST")
    await asyncio.sleep(1.0)
    gc.collect()
    # The listing's own descriptor is gone by the time it is read: not counted.
    kinds = Counter(_fd_kind(fd) for fd in os.listdir("/proc/self/fd"))
    kinds.pop("gone", None)
    names = sorted(t.name for t in threading.enumerate())
    return {
        "rss": rss_bytes(),
        "fds": sum(kinds.values()),
        "fd_kinds": dict(kinds),
        "tasks": len(asyncio.all_tasks()),
        "threads": len(names),
        "own_threads": sum(1 for n in names if n != _ANYIO_WORKER),
        "thread_names": names,
    }


def _control(url: str, path: str, method: str = "GET") -> dict[str, Any]:
    answer: dict[str, Any] = get_json(f"{url}{path}", method)
    return answer


async def _soak(plan: SoakPlan, akto: str, model: str, control: str) -> dict[str, Any]:
    settings = Settings(ingestion_url=akto, sync_mode=True, timeout=TIMEOUT_S)
    provider = make_provider()
    processor = _CountingProcessor(settings)
    provider.add_span_processor(processor)
    guard = make_guard(settings, provider=provider)
    if guard.processor is not processor:
        raise RuntimeError("the guard did not ship through the app's AktoSpanProcessor")
    phase = ["up"]
    samples: dict[str, list[int]] = {name: [] for name in PHASES}
    sessions: Counter[str] = Counter()
    errors: list[str] = []
    timeline: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="akto-soak-") as tmp:
        options = []
        for worker in range(plan.sessions):
            home = Path(tmp) / f"home-{worker}"
            work = Path(tmp) / f"work-{worker}"
            work.mkdir(parents=True)
            base = ClaudeAgentOptions(
                env=offline_agent_env(cast(FakeAnthropic, _ModelAt(model)), home, quiet=True),
                cwd=str(work),
                allowed_tools=["Bash"],
            )
            options.append(
                timed_hooks(
                    guard.instrument(base), samples, key=lambda: phase[0], events=VERDICT_EVENTS
                )
            )

        async def session(worker: int, number: int) -> None:
            prompt = f"soak worker {worker} session {number}: run all the steps"
            try:
                messages = await run_agent(prompt, options[worker])
            except Exception as exc:  # one CLI failing must not end the soak; counted
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                sessions["failed"] += 1
                return
            last = messages[-1] if messages else None
            if isinstance(last, ResultMessage) and not last.is_error:
                sessions["completed"] += 1
            else:
                sessions["incomplete"] += 1

        warm0 = time.perf_counter()
        await asyncio.gather(*(session(w, 0) for w in range(plan.sessions)))
        warm_s = time.perf_counter() - warm0
        guard.force_flush(30_000)
        start = await _probe(control)
        sessions.clear()
        t0 = time.monotonic()
        deadline = t0 + plan.seconds

        async def worker_loop(worker: int) -> None:
            number = 1
            while time.monotonic() < deadline:
                await session(worker, number)
                number += 1

        async def conductor() -> None:
            for at, name in phase_schedule(plan.seconds, plan.phase_seconds):
                delay = t0 + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                _control(control, f"/phase/{name}", "POST")
                phase[0] = name
                timeline.append((round(time.monotonic() - t0, 2), name))

        await asyncio.gather(conductor(), *(worker_loop(w) for w in range(plan.sessions)))
        ran_s = time.monotonic() - t0
        _control(control, "/phase/up", "POST")
        phase[0] = "up"
        drain0 = time.monotonic()
        while processor.queue_size and time.monotonic() - drain0 < _DRAIN_S:
            guard.force_flush(5_000)
            await asyncio.sleep(0.2)
        drain_s = time.monotonic() - drain0
        end = await _probe(control)
        queued = processor.queue_size
        await guard.aclose()
        guard.shutdown()
        provider.shutdown()
    stats = processor.stats.snapshot()
    counts = _control(control, "/counts")
    return {
        "plan": dataclasses.asdict(plan),
        "warm_up_s": warm_s,
        "ran_s": ran_s,
        "drain_s": drain_s,
        "start": start,
        "end": end,
        "sessions": dict(sessions),
        "errors": errors[:20],
        "timeline": timeline,
        "latency_us": {name: summarize(values).as_dict() for name, values in samples.items()},
        "latency_max_us": {name: max(values, default=0) / 1000 for name, values in samples.items()},
        "accounting": accounting(processor.sent, stats, queued, counts),
        "emulator": counts,
        "failures": dict(processor.stats.failures),
    }


def child_main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.fig_soak PLAN URLS``: the plan and the servers' URLs as JSON."""
    plan_json, urls_json = sys.argv[1:] if argv is None else argv
    quiet_logs()
    urls = json.loads(urls_json)
    plan = SoakPlan(**json.loads(plan_json))
    result = asyncio.run(_soak(plan, urls["akto"], urls["model"], urls["control"]))
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------- the figure


def _servers(tools: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    slow = [str(SLOW_S[0] * TIMEOUT_S), str(SLOW_S[1] * TIMEOUT_S)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.standin",
            "--soak",
            "--tools",
            str(tools),
            "--slow",
            *slow,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        urls: dict[str, str] = json.loads(line)
    except ValueError:
        stop(proc)
        raise RuntimeError(f"the soak servers did not start: {line!r}") from None
    return proc, urls


def _agent(plan: SoakPlan, urls: dict[str, str]) -> dict[str, Any]:
    # The warm-up round, sessions still running at the deadline, the drain (bounded),
    # two probes and the shutdown come on top of the soak's own time.
    plan_json = json.dumps(dataclasses.asdict(plan))
    return run_child("fig_soak", plan_json, json.dumps(urls), timeout=plan.seconds + _DRAIN_S + 600)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def run(cfg: Config, env: Environment) -> FigureResult:
    result = FigureResult("soak", HEADER)
    plan = plan_for(cfg)
    load_start = load_average()
    servers, urls = _servers(plan.tools)
    try:
        got = _agent(plan, urls)
    finally:
        stop(servers)
    load_end = load_average()
    start, end = got["start"], got["end"]
    resources = Table(
        f"agent process at rest, after the warm-up round and at the end ({plan.sessions} "
        f"concurrent sessions, {got['ran_s']:.0f} s)",
        ["measure", "start", "end", "change"],
    )
    growth = (end["rss"] - start["rss"]) / start["rss"]
    resources.add("RSS", _mib(start["rss"]), _mib(end["rss"]), f"{growth * 100:+.1f}%")
    for key, label in (
        ("fds", "open file descriptors"),
        ("tasks", "asyncio tasks"),
        ("threads", "threads"),
        ("own_threads", "threads but AnyIO's idle workers"),
    ):
        resources.add(label, start[key], end[key], f"{end[key] - start[key]:+d}")
    resources.notes.append(
        "fds by kind, start -> end: "
        + ", ".join(
            f"{k} {start['fd_kinds'].get(k, 0)}->{end['fd_kinds'].get(k, 0)}"
            for k in sorted(set(start["fd_kinds"]) | set(end["fd_kinds"]))
        )
    )
    resources.notes.append(
        "threads: the SDK runs blocking calls on AnyIO's worker pool, as many as were busy "
        "at once, an idle one retired only when the pool is next used; the rest at the end:"
        f" {', '.join(n for n in end['thread_names'] if n != _ANYIO_WORKER)}"
    )
    resources.notes.append(
        "before each probe Akto's side closes every connection, so the pools' idle "
        "keep-alive sockets close and only a leaked socket would stay open"
    )
    resources.notes.append(
        f"load average {load_start} at start, {load_end} at end (2 cores: the machine is shared)"
    )
    result.tables.append(resources)
    acc = got["accounting"]
    records = Table(
        "records to Akto (/api/ingestData), end of run after shutdown",
        ["sent", "acknowledged", "dropped", "failed", "duplicated", "queued at end", "unaccounted"],
    )
    records.add(
        acc["sent"],
        acc["acknowledged"],
        acc["dropped"],
        acc["failed"],
        acc["duplicated"],
        acc["queued_at_end"],
        acc["unaccounted"],
    )
    records.notes.append(
        "sent: records the hooks attached to the app's AktoSpanProcessor; acknowledged: "
        "distinct records the emulator received; dropped/failed: the exporter's stats; "
        "duplicated: records the emulator received again byte for byte (a retry of a "
        "request whose answer was lost: slow phase, or a connection cut by the down phase)."
    )
    records.notes.append(
        f"exporter: {acc['exported']:,} exported, {acc['retried']:,} record-retries; "
        f"failure kinds {got['failures'] or 'none'}; guardrail calls stored by the "
        f"emulator: {got['emulator']['proxy_records']:,}"
    )
    result.tables.append(records)
    latency = Table(
        "verdict latency per fault phase (guardrail-calling hook callbacks, AKTO_TIMEOUT "
        f"{TIMEOUT_S:g} s, fail open)",
        ["phase", "calls", "p50", "p99", "max"],
    )
    for name in PHASES:
        lat = got["latency_us"][name]
        latency.add(
            name,
            int(lat["n"]),
            fmt_us(lat["p50_us"]),
            fmt_us(lat["p99_us"]),
            fmt_us(got["latency_max_us"][name]),
        )
    latency.notes.append(
        f"phases of {plan.phase_seconds:g} s cycling {' -> '.join(CYCLE)}; slow answers "
        f"after {SLOW_S[0] * TIMEOUT_S:g}-{SLOW_S[1] * TIMEOUT_S:g} s (uniform), so some "
        "outlive AKTO_TIMEOUT; down = the port refuses connections; 5xx = 503."
    )
    done = got["sessions"]
    latency.notes.append(
        f"sessions after warm-up ({plan.tools} tool call(s) each): {done.get('completed', 0)} "
        f"completed, {done.get('incomplete', 0)} incomplete, {done.get('failed', 0)} failed; "
        f"warm-up {got['warm_up_s']:.1f} s, drain after the last phase {got['drain_s']:.1f} s"
    )
    result.tables.append(latency)
    if got["errors"]:
        result.notes.append("session errors: " + "; ".join(got["errors"][:3]))
    result.verdicts.append(
        Verdict(
            "soak: RSS growth <= 5% after warm-up",
            f"{growth * 100:+.1f}%",
            growth <= _RSS_GROWTH,
            f"{_mib(start['rss'])} -> {_mib(end['rss'])} over {got['ran_s']:.0f} s, "
            f"{plan.sessions} sessions",
        )
    )
    for key, label in (
        ("fds", "open fds"),
        ("tasks", "asyncio tasks"),
        ("own_threads", "threads (AnyIO's idle workers aside)"),
    ):
        result.verdicts.append(
            Verdict(
                f"soak: no growth in {label}",
                f"{start[key]} -> {end[key]}",
                end[key] <= start[key],
            )
        )
    result.verdicts.append(
        Verdict(
            "soak: every record accounted for exactly once (sent = acknowledged + lost)",
            f"{acc['sent']:,} = {acc['acknowledged']:,} + {acc['dropped'] + acc['failed']:,}",
            bool(acc["exact"]),
            f"dropped {acc['dropped']}, failed {acc['failed']}, duplicated {acc['duplicated']} "
            f"(reported, Akto keeps them), unaccounted {acc['unaccounted']}",
        )
    )
    result.data = {**got, "load_start": load_start, "load_end": load_end}
    return result


if __name__ == "__main__":
    child_main()
