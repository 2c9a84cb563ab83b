"""Profile: where the PreToolUse hook's time goes (cProfile, own time by component).

The package hook, its guardrail client alone and a bare aiohttp post each run N
sequential calls under cProfile; own time is summed per component (package of the
function). The
profiler inflates Python-heavy code, so read shares, not absolute times; time in
``epoll.poll`` is the loop waiting for the server.

Then, without the profiler: the hook-path pieces alone (timeit); the hook's own
layers as event-loop thread CPU; what one hook call allocates and retains (tracked
objects, memory blocks, by type and by file); the garbage collections 3,000 and
10,000 hook calls trigger with the app's SDK pipeline on, and the same with
``gc.freeze()`` after start-up (an app-level option); the GIL wait the delivery
worker causes.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .common import Config, FigureResult, Table, Verdict, fmt_us, seconds_per_call
from .contenders import (
    AIOHTTP,
    CHECK_DEFAULT,
    HOOK_DEFAULT,
    errors_of,
    guardrail_specs,
    hook_contender,
    settings_for,
)
from .environment import Environment
from .harness import run_sequential
from .servers import ALLOWED_VERDICT_BODY

__all__ = ["run"]

#: The issue's budget for the hook's own layers (spans, record, verdict, metrics).
OWN_TARGET_US = 80.0
DEFAULT_SPANS = "hook, AKTO_GUARDRAIL_SPANS=true (default)"
FOLDED_SPANS = "hook, AKTO_GUARDRAIL_SPANS=false"
FROZEN = "hook, spans on, gc.freeze() after start-up"
#: The GC run: counts at exactly this many hook calls (the target: no gen2 collection)
#: and at the end of the longer run, both from one gc.collect().
GC_SHORT = 3000
GC_LONG = 10_000

HEADER = "Profile: where the PreToolUse hook's time goes (cProfile)"

_COMPONENTS = (
    ("/aiohttp/", "aiohttp"),
    ("/yarl/", "yarl"),
    ("/multidict/", "multidict"),
    ("/opentelemetry/", "opentelemetry"),
    ("/akto_otel/", "akto_otel"),
    ("/benchmarks/", "benchmarks (harness)"),
    ("/asyncio/", "asyncio"),
    ("/json/", "json"),
    ("/logging/", "logging"),
)


def _component(filename: str, function: str) -> str:
    if filename == "~":
        if "epoll" in function or "select" in function:
            return "waiting for the server (epoll)"
        if "socket" in function:
            return "socket syscalls"
        return "C builtins"
    for marker, name in _COMPONENTS:
        if marker in filename:
            return name
    return "other stdlib"


Profile = tuple[Counter[str], list[tuple[str, float, int]], float, int]


async def _profile(url: str, name: str, n: int) -> Profile:
    spec = next(s for s in guardrail_specs(url) if s.name == name)
    contender = await spec.build()
    await contender.setup()
    await run_sequential(contender, 200, 50)
    profiler = cProfile.Profile()
    profiler.enable()
    await run_sequential(contender, n, 0, collect=False)
    profiler.disable()
    await contender.close()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_component: Counter[str] = Counter()
    functions: list[tuple[str, float, int]] = []
    calls = 0
    for (filename, line, function), (_cc, nc, tottime, _ct, _callers) in raw.items():
        by_component[_component(filename, function)] += tottime
        calls += nc
        short = filename.rsplit("site-packages/", 1)[-1].rsplit("lib/python3", 1)[-1]
        functions.append((f"{short}:{line}({function})", tottime, nc))
    functions.sort(key=lambda f: f[1], reverse=True)
    total = sum(by_component.values())
    return by_component, functions[:12], total, calls


def _components(cfg: Config) -> list[tuple[str, float]]:
    """The pieces of the PreToolUse hook path timed alone (public APIs, no network)."""
    import json

    from opentelemetry.trace import SpanKind, set_span_in_context
    from opentelemetry.util.types import AttributeValue

    from akto_otel.config import Settings
    from akto_otel.contract import (
        WireContext,
        encode_record,
        parse_verdict,
        read_verdict,
        tool_request_record,
    )
    from akto_otel.spans import record_verdict

    from .workload import TOOL_INPUT, make_provider

    provider = make_provider()
    tracer = provider.get_tracer("bench")
    settings = Settings(ingestion_url="http://127.0.0.1:9")
    wire = WireContext()
    record = tool_request_record(wire, "Bash", TOOL_INPUT)
    body = ALLOWED_VERDICT_BODY.encode()
    verdict = parse_verdict(json.loads(body))
    parent = tracer.start_span("invoke_agent claude-agent")
    tool_attrs: dict[str, AttributeValue] = {
        "akto.hook": "PreToolUse",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "Bash",
        "gen_ai.tool.type": "function",
        "gen_ai.conversation.id": "bench-session-0",
        "gen_ai.tool.call.id": "toolu_1",
    }
    guard_attrs: dict[str, AttributeValue] = {
        "akto.hook": "PreToolUse",
        "gen_ai.operation.name": "run_guardrail",
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": 9,
    }

    def spans() -> None:
        tool = tracer.start_span(
            "execute_tool Bash", context=set_span_in_context(parent), attributes=tool_attrs
        )
        child = tracer.start_span(
            "run_guardrail akto",
            context=set_span_in_context(tool),
            kind=SpanKind.CLIENT,
            attributes=guard_attrs,
        )
        child.set_attribute("akto.guardrail.decision", "allow")
        child.end()
        record_verdict(tool, "PreToolUse", verdict, settings)
        tool.end()

    def verdict_event() -> None:
        record_verdict(parent, "PreToolUse", verdict, settings)

    pieces = {
        "WireContext.with_session (per call)": lambda: wire.with_session("s", "p"),
        "tool_request_record": lambda: tool_request_record(wire, "Bash", TOOL_INPUT),
        "encode_record (json.dumps)": lambda: encode_record(record),
        "read_verdict (the client's read: a body seen before)": lambda: read_verdict(body),
        "json.loads + parse_verdict (a body not seen before)": lambda: parse_verdict(
            json.loads(body)
        ),
        "Verdict.with_latency (dataclasses.replace)": lambda: verdict.with_latency(0.001),
        "2 spans + verdict event, start to end": spans,
        "record_verdict alone (event + attributes)": verdict_event,
    }
    number = cfg.pick(2000, 200)
    out = []
    for name, fn in pieces.items():
        out.append((name, seconds_per_call(fn, number=number, repeat=cfg.pick(5, 2)) * 1e6))
    parent.end()
    provider.shutdown()
    return out


def _hook_loop(url: str, guardrail_spans: bool, instant: bool, hold_spans: bool = False) -> Any:
    """(run n calls, close) for the package hook contender: PreToolUse + the
    span-closing PostToolUse.

    ``instant``: the guardrail call is replaced by the stub server's allow answer
    parsed in process (no network), so only the hook's own layers are left.
    ``hold_spans``: the app's BatchSpanProcessor exports nothing until close.
    """
    from akto_otel.contract import Verdict as AktoVerdict
    from akto_otel.contract import read_verdict

    answer = ALLOWED_VERDICT_BODY.encode("utf-8")  # as the client reads it: bytes
    from akto_otel.guardrails import GuardrailClient

    class _InProcess(GuardrailClient):
        async def check(
            self,
            record: Mapping[str, Any],
            *,
            request: bool = True,
            response: bool = False,
            ingest: bool = False,
        ) -> AktoVerdict:
            return read_verdict(answer)

    client = _InProcess(settings_for(url)) if instant else None
    hook = hook_contender(
        HOOK_DEFAULT, url, client, guardrail_spans=guardrail_spans, hold_spans=hold_spans
    )

    async def calls(n: int) -> None:
        call, after = hook.call, hook.after
        assert after is not None
        for _ in range(n):
            await call(0)
            await after(0)
        if errors_of(hook):
            raise RuntimeError("profile: expected an allow (empty) hook output")

    return calls, hook.close


async def _own_layers(url: str, cfg: Config) -> dict[str, float]:
    """CPU µs per guarded call of the hook's own layers (best of rounds, no network).

    The event loop thread's CPU only: the records PostToolUse queues are delivered by
    the processor's worker thread, off the hook path.
    """
    import gc
    import time

    out: dict[str, float] = {}
    for name, spans in ((DEFAULT_SPANS, True), (FOLDED_SPANS, False)):
        calls, close = _hook_loop(url, spans, instant=True)
        await calls(300)
        best = float("inf")
        n = cfg.pick(2000, 100)
        for _ in range(cfg.pick(7, 1)):
            gc.collect()
            cpu0 = time.thread_time()
            await calls(n)
            best = min(best, (time.thread_time() - cpu0) / n * 1e6)
        await close()
        out[name] = best
    return out


class _GcWatch:
    """A ``gc.callbacks`` entry: collections per generation, their seconds and the longest."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.spent = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._start: dict[int, float] = {}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        import time

        generation = info["generation"]
        if phase == "start":
            self._start[generation] = time.perf_counter()
        elif generation in self._start:
            took = time.perf_counter() - self._start.pop(generation)
            self.counts[generation] += 1
            self.spent[generation] += took
            self.longest[generation] = max(self.longest[generation], took)

    def snapshot(self, calls: int) -> dict[str, float]:
        out: dict[str, float] = {"calls": calls}
        for g in range(3):
            out[f"gen{g}"] = self.counts[g]
            out[f"gen{g}_ms"] = self.spent[g] / max(self.counts[g], 1) * 1000
            out[f"gen{g}_max_ms"] = self.longest[g] * 1000
        out["gc_us_per_call"] = sum(self.spent) / max(calls, 1) * 1e6
        return out


async def _gc_runs(url: str, cfg: Config) -> dict[str, Any]:
    """The garbage collections hook calls trigger, with the app's SDK pipeline on.

    Through the stub server, spans to a BatchSpanProcessor (default schedule: 512 a
    batch or every 5 s). Per variant: the hook built and warmed up, one
    ``gc.collect()``, then ``gc.callbacks`` counts every collection over
    ``GC_LONG`` calls, read at exactly ``GC_SHORT`` calls and at the end. The frozen
    variant calls ``gc.freeze()`` right after that collection (the app-level recipe:
    collect, then freeze what start-up built) and ``gc.unfreeze()`` at the end.
    """
    import gc

    short, long = cfg.pick(GC_SHORT, 150), cfg.pick(GC_LONG, 400)
    variants = ((DEFAULT_SPANS, True, False), (FOLDED_SPANS, False, False), (FROZEN, True, True))
    runs: dict[str, list[dict[str, float]]] = {}
    heap: dict[str, int] = {}
    frozen = 0
    for name, spans, freeze in variants:
        calls, close = _hook_loop(url, spans, instant=False)
        await calls(300)
        gc.collect()
        heap[name] = len(gc.get_objects())
        if freeze:
            gc.freeze()
            frozen = gc.get_freeze_count()
        watch = _GcWatch()
        gc.callbacks.append(watch)
        try:
            await calls(short)
            first = watch.snapshot(short)
            await calls(long - short)
            runs[name] = [first, watch.snapshot(long)]
        finally:
            gc.callbacks.remove(watch)
            if freeze:
                gc.unfreeze()
        await close()
    return {
        "runs": runs,
        "heap_after_collect": heap,
        "frozen": frozen,
        "threshold": gc.get_threshold(),
        "short": short,
        "long": long,
    }


def _type_counts() -> Counter[str]:
    import gc

    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts


async def _allocations(url: str, cfg: Config) -> dict[str, Any]:
    """What one hook call allocates and leaves alive (tracked objects, memory blocks).

    Through the stub server, spans to a BatchSpanProcessor that exports nothing during
    the window (an hour's schedule delay, a batch larger than the window), so what the
    span queues and the Akto processor hold after the calls is counted, not exported.
    With the collector off around N calls: ``gc.get_count()[0]`` grows by every tracked
    object allocated and not freed by reference counting (what counts towards a gen0
    collection); ``gc.collect()`` then finds the cyclic garbage; what is still alive
    (``gc.get_objects()`` by type, before and after) is retained. ``sys.getallocatedblocks()``
    gives the same for memory blocks, and a second window under tracemalloc the bytes
    retained and the files that allocated them.
    """
    import gc
    import sys
    import tracemalloc

    n = cfg.pick(2000, 100)
    out: dict[str, Any] = {"n": n, "rows": {}, "types": {}, "files": {}}
    for name, spans in ((DEFAULT_SPANS, True), (FOLDED_SPANS, False)):
        calls, close = _hook_loop(url, spans, instant=False, hold_spans=True)
        await calls(300)
        gc.collect()
        before = _type_counts()
        blocks0 = sys.getallocatedblocks()
        gc.disable()
        try:
            count0 = gc.get_count()[0]
            await calls(n)
            left = gc.get_count()[0] - count0
            blocks1 = sys.getallocatedblocks()
            garbage = gc.collect()
        finally:
            gc.enable()
        blocks2 = sys.getallocatedblocks()
        after = _type_counts()
        retained = sum(after.values()) - sum(before.values())
        grown = after - before
        tracemalloc.start()
        try:
            gc.collect()
            bytes0 = tracemalloc.get_traced_memory()[0]
            gc.disable()
            try:
                await calls(n)
                bytes_left = tracemalloc.get_traced_memory()[0] - bytes0
                gc.collect()
            finally:
                gc.enable()
            bytes_kept = tracemalloc.get_traced_memory()[0] - bytes0
            by_file = tracemalloc.take_snapshot().statistics("filename")
        finally:
            tracemalloc.stop()
        await close()
        out["rows"][name] = {
            "tracked_left_per_call": left / n,
            "cyclic_garbage_per_call": garbage / n,
            "tracked_retained_per_call": retained / n,
            "blocks_left_per_call": (blocks1 - blocks0) / n,
            "blocks_retained_per_call": (blocks2 - blocks0) / n,
            "tracemalloc_bytes_left_per_call": bytes_left / n,
            "tracemalloc_bytes_retained_per_call": bytes_kept / n,
        }
        out["types"][name] = {kind: count / n for kind, count in grown.most_common(8)}
        out["files"][name] = [
            (_short_path(stat.traceback[0].filename), stat.size / n, stat.count / n)
            for stat in by_file[:5]
        ]
    out["threshold"] = gc.get_threshold()
    return out


def _short_path(filename: str) -> str:
    """A traced file's path from its package (site-packages, the stdlib or this tree)."""
    import os
    import re

    root = os.getcwd() + os.sep
    if filename.startswith(root):
        return filename[len(root) :]
    return re.sub(r".*/lib/python3\.\d+/(site-packages/)?", "", filename)


def _delivery_stall(url: str, cfg: Config) -> dict[str, tuple[float, float, float]]:
    """How long a thread waits for the GIL while the delivery worker exports batches.

    The worker (a thread, as the processor's) exports 512 ingestion records again and
    again to the stub server; this thread sleeps 200 µs and measures how much later
    than that it runs: the wait an event loop with a hook call to finish would see.
    ``_YIELD_EVERY`` set past the batch size is the same worker without its pauses.
    """
    import threading
    import time

    from akto_otel import exporter as akto_exporter
    from akto_otel.config import Settings
    from akto_otel.exporter import PendingRecord

    from .workload import tool_result

    items = [PendingRecord(record=tool_result(i), key=f"stall-{i}") for i in range(512)]
    records = akto_exporter.RecordExporter(Settings(ingestion_url=url), akto_exporter.ExportStats())
    seconds = cfg.pickf(3.0, 0.3)
    out: dict[str, tuple[float, float, float]] = {}
    default = akto_exporter._YIELD_EVERY
    for name, every in (("delivery worker as shipped", default), ("without its pauses", 1 << 30)):
        akto_exporter._YIELD_EVERY = every
        stop = threading.Event()

        def work(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                records.export(items)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        waits: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            before = time.perf_counter()
            time.sleep(0.0002)
            waits.append((time.perf_counter() - before - 0.0002) * 1e6)
        stop.set()
        worker.join(30)
        waits.sort()
        over = sum(w > 1000 for w in waits) / len(waits) * 100
        out[name] = (waits[int(len(waits) * 0.9)], waits[int(len(waits) * 0.99)], over)
    akto_exporter._YIELD_EVERY = default
    records.shutdown()
    return out


def run(cfg: Config, env: Environment) -> FigureResult:
    server = env
    result = FigureResult("profile", HEADER)
    n = cfg.pick(2000, 100)
    profiles = {
        name: asyncio.run(_profile(server.url, name, n))
        for name in (HOOK_DEFAULT, CHECK_DEFAULT, AIOHTTP)
    }
    env.clear_stub()
    components = sorted(
        {c for by, _, _, _ in profiles.values() for c in by},
        key=lambda c: -profiles[HOOK_DEFAULT][0].get(c, 0.0),
    )
    table = Table(
        f"own time per call by component, {n} calls under cProfile (µs/call, share)",
        ["component", *(name for name in profiles)],
    )
    for component in components:
        cells = []
        for by, _, total, _ in profiles.values():
            value = by.get(component, 0.0)
            cells.append(f"{value / n * 1e6:,.1f} ({value / total * 100:.0f}%)")
        table.add(component, *cells)
    table.add(
        "total (profiled)",
        *(f"{total / n * 1e6:,.1f}" for _, _, total, _ in profiles.values()),
    )
    table.add(
        "Python function calls per hook call",
        *(f"{calls / n:,.0f}" for _, _, _, calls in profiles.values()),
    )
    result.tables.append(table)
    for name, (_, functions, total, _) in profiles.items():
        if name != HOOK_DEFAULT:
            continue
        top = Table(
            f"top functions by own time: {name}",
            ["function", "µs/call", "share", "calls/call"],
        )
        for function, tottime, ncalls in functions:
            top.add(
                function[-90:],
                f"{tottime / n * 1e6:,.1f}",
                f"{tottime / total * 100:.1f}%",
                f"{ncalls / n:,.1f}",
            )
        result.tables.append(top)
    pieces = _components(cfg)
    standalone = Table(
        "hook-path pieces timed alone (timeit, best of repeats, no profiler)",
        ["piece", "µs per call"],
    )
    for name, us in pieces:
        standalone.add(name, f"{us:,.1f}")
    standalone.notes.append(
        "spans: the package hook's execute_tool + run_guardrail spans with its attributes, "
        "on an SDK TracerProvider with a BatchSpanProcessor and a no-op exporter."
    )
    result.tables.append(standalone)
    own = asyncio.run(_own_layers(server.url, cfg))
    layers = Table(
        "the hook's own layers: CPU of the event loop thread per guarded call, the guardrail "
        "call answered in process (PreToolUse + the span-closing PostToolUse, best of rounds)",
        ["hook", "CPU µs/call"],
    )
    for name, us in own.items():
        layers.add(name, f"{us:,.1f}")
    result.tables.append(layers)
    allocations = asyncio.run(_allocations(server.url, cfg))
    env.clear_stub()
    result.tables.extend(_allocation_tables(allocations))
    gc_runs = asyncio.run(_gc_runs(server.url, cfg))
    env.clear_stub()
    result.tables.append(_gc_table(gc_runs))
    stall = _delivery_stall(server.url, cfg)
    env.clear_stub()
    waits = Table(
        "GIL wait of another thread while the delivery worker exports 512-record batches "
        "(a 200 µs sleep, measured late by)",
        ["worker", "p90", "p99", "waits over 1 ms"],
    )
    for name, (p90, p99, over) in stall.items():
        waits.add(name, fmt_us(p90), fmt_us(p99), f"{over:.1f}%")
    waits.notes.append(
        "encoding a 512-record batch is ~5 ms of CPU in the worker thread; a thread that "
        "wants the GIL meanwhile (the event loop, with a hook call to finish) gets it when "
        "the worker pauses every few records, or only after the 5 ms switch interval."
    )
    result.tables.append(waits)
    shipped, unpaused = stall["delivery worker as shipped"][2], stall["without its pauses"][2]
    result.verdicts.append(
        Verdict(
            "delivery worker: loop waits over 1 ms for the GIL at most half as often as unpaused",
            f"{shipped:.1f}%",
            shipped <= unpaused / 2,
            f"without the worker's pauses: {unpaused:.1f}% of waits over 1 ms",
        )
    )
    best = own[DEFAULT_SPANS]
    result.verdicts.append(
        Verdict(
            f"hook's own layers <= {OWN_TARGET_US:.0f} µs CPU per guarded call, spans on",
            fmt_us(best),
            best <= OWN_TARGET_US,
            f"with AKTO_GUARDRAIL_SPANS=false: {fmt_us(own[FOLDED_SPANS])}",
        )
    )
    result.verdicts.append(_gc_verdict(gc_runs))
    result.data = {
        "standalone_us": dict(pieces),
        "own_layers_cpu_us": own,
        "gil_wait_us": stall,
        "gc": gc_runs,
        "allocations": allocations,
    } | {
        name: {
            "components_us_per_call": {c: v / n * 1e6 for c, v in by.items()},
            "calls_per_call": calls / n,
        }
        for name, (by, _, _, calls) in profiles.items()
    }
    return result


def _allocation_tables(m: dict[str, Any]) -> list[Table]:
    n = m["n"]
    threshold0 = m["threshold"][0]
    rows: dict[str, dict[str, float]] = m["rows"]
    table = Table(
        f"allocation per hook call ({n:,} calls through the stub server, the collector off; "
        "spans held in the app's BatchSpanProcessor queue, not exported)",
        [
            "hook",
            "tracked left",
            "cyclic garbage",
            "tracked retained",
            "calls per gen0",
            "blocks left / retained",
            "tracemalloc bytes left / retained",
        ],
    )
    for name, r in rows.items():
        left = r["tracked_left_per_call"]
        table.add(
            name,
            f"{left:,.1f}",
            f"{r['cyclic_garbage_per_call']:,.1f}",
            f"{r['tracked_retained_per_call']:,.1f}",
            f"{threshold0 / left:,.1f}" if left > 0 else "n/a",
            f"{r['blocks_left_per_call']:,.1f} / {r['blocks_retained_per_call']:,.1f}",
            f"{r['tracemalloc_bytes_left_per_call']:,.0f} / "
            f"{r['tracemalloc_bytes_retained_per_call']:,.0f}",
        )
    table.notes.append(
        "per call. tracked left: gc.get_count()[0] growth (tracked objects allocated and not "
        "freed by reference counting: what advances gen0); cyclic garbage: what gc.collect() "
        "found unreachable after the calls; tracked retained: objects still alive after it "
        "(gc.get_objects(), after minus before: the spans in the queue, anything the guard "
        "or the Akto processor keeps); calls per gen0: the gen0 threshold "
        f"({threshold0}) / tracked left."
    )
    table.notes.append(
        "blocks: sys.getallocatedblocks() growth before and after that gc.collect(); "
        "tracemalloc: a second window of as many calls, bytes traced before and after "
        "gc.collect(). Retained objects are what survive young collections and are "
        "promoted; a full (gen2) collection runs once more than 10 gen1 collections ran "
        "and the objects promoted since the last one exceed a quarter of the long-lived heap."
    )
    types = Table(
        "tracked objects retained per hook call, by type (top 8 of each)",
        ["type", *rows],
    )
    kinds = sorted(
        {k for by in m["types"].values() for k in by},
        key=lambda k: -max(by.get(k, 0.0) for by in m["types"].values()),
    )
    for kind in kinds:
        types.add(kind, *(f"{m['types'][name].get(kind, 0.0):,.2f}" for name in rows))
    files = Table(
        "tracemalloc: bytes retained per hook call, by the file that allocated them (top 5)",
        ["hook", "file", "bytes/call", "blocks/call"],
    )
    for name, entries in m["files"].items():
        for filename, size, count in entries:
            files.add(name, filename[-70:], f"{size:,.0f}", f"{count:,.2f}")
    return [table, types, files]


def _gc_cells(snap: dict[str, float]) -> list[str]:
    return [
        f"{snap['calls']:,.0f}",
        f"{snap['gen0']:.0f} / {snap['gen1']:.0f} / {snap['gen2']:.0f}",
        f"{snap['gen0_ms']:.2f} / {snap['gen1_ms']:.2f} / {snap['gen2_ms']:.1f}",
        f"{snap['gen2_max_ms']:.1f}",
        f"{snap['gc_us_per_call']:.1f}",
    ]


def _gc_table(m: dict[str, Any]) -> Table:
    table = Table(
        "garbage collections triggered by hook calls, the app's SDK pipeline on (through the "
        "stub server, spans to a BatchSpanProcessor), counted from one gc.collect()",
        ["hook", "calls", "gen0 / gen1 / gen2", "ms each", "gen2 longest ms", "GC µs/call"],
    )
    for name, (first, whole) in m["runs"].items():
        table.add(name, *_gc_cells(first))
        table.add("", *_gc_cells(whole))
    heap = m["heap_after_collect"]
    table.notes.append(
        f"one run per hook of {m['long']:,} calls, read at exactly {m['short']:,} calls and "
        f"at the end; gc thresholds {m['threshold']}; tracked objects after the "
        "gc.collect() (the long-lived heap a gen2 collection waits on): "
        + ", ".join(f"{heap[name]:,}" for name in m["runs"])
    )
    table.notes.append(
        "gc.freeze(): an app-level option, not the hook's: called once after start-up (the "
        f"guard and provider built and warmed up, then gc.collect()), it moved {m['frozen']:,} "
        "objects to the permanent generation, which no collection walks; gc.unfreeze() after."
    )
    return table


def _gc_verdict(m: dict[str, Any]) -> Verdict:
    first, whole = m["runs"][DEFAULT_SPANS]
    frozen_first, frozen_whole = m["runs"][FROZEN]
    return Verdict(
        f"zero gen2 collections in {m['short']:,} hook calls, the app's SDK pipeline on",
        f"{first['gen2']:.0f}",
        first["gen2"] == 0,
        f"gen0/gen1/gen2 {first['gen0']:.0f}/{first['gen1']:.0f}/{first['gen2']:.0f}; per "
        f"{m['long']:,} calls {whole['gen0']:.0f}/{whole['gen1']:.0f}/{whole['gen2']:.0f} "
        f"(gen2 {whole['gen2_ms']:.1f} ms each); with gc.freeze(): gen2 "
        f"{frozen_first['gen2']:.0f} in {m['short']:,}, {frozen_whole['gen2']:.0f} in "
        f"{m['long']:,} ({frozen_whole['gen2_ms']:.1f} ms each)",
    )
