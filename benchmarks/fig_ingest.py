"""Figure 4: ingestion, records/s delivered to the server and CPU per 10k records.

akto_otel: ``AktoSpanProcessor(settings)`` on a TracerProvider; for each record a span
is started, ``attach(span, record, kind="tool.result")``-ed and ended, then
``force_flush()``; ``batch`` mode posts ``/api/ingestData`` batches, ``proxy`` mode
one ``/api/http-proxy?...&ingest_data=true`` per record. Reference: what its
PostToolUse does, ``asyncio.create_task`` of one urllib POST per record in
``asyncio.to_thread``. Delivered = records the stub server counted. CPU is this
process's (``time.process_time``, all threads); the server's is shown apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from akto_otel.config import Settings
from akto_otel.contract import (
    encode_ingest_item,
    join_ingest_items,
)
from akto_otel.exporter import (
    ExportStats,
    PendingRecord,
    RecordExporter,
)
from akto_otel.processor import AktoSpanProcessor

from .common import (
    Config,
    FigureResult,
    Table,
    Verdict,
    fmt_ratio,
    median_by,
    rotated,
    seconds_per_call,
)
from .environment import Environment
from .reference import ReferenceConnector
from .workload import TOOL_INPUT, TOOL_RESPONSE, tool_result

__all__ = ["run"]

HEADER = "Figure 4: ingestion throughput (records/s delivered) and CPU per 10k records"
BATCH = "akto_otel batch (/api/ingestData)"
EXPORTER = "  exporter alone (RecordExporter.export, 512/batch)"
PROXY = "akto_otel proxy (/api/http-proxy per record)"
REFERENCE = "reference (urllib per record, to_thread)"


def _measured(env: Environment, n: int, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work()`` timed against the stub: wall, this process's and the server's CPU, and
    the records the server counted. ``work`` may return its own ``seconds``,
    ``produce_seconds`` and ``flushed``."""
    env.clear_stub()
    server0 = env.cpu_seconds()
    cpu0 = time.process_time()
    start = time.perf_counter()
    got = work()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    server = env.cpu_seconds() - server0
    delivered = env.clear_stub()
    return {
        "n": n,
        "delivered": delivered,
        "seconds": elapsed,
        "produce_seconds": float("nan"),
        "cpu": cpu,
        "server_cpu": server,
        "flushed": True,
    } | got


def _akto(env: Environment, delivery: str, n: int) -> dict[str, Any]:
    settings = Settings(
        ingestion_url=env.url,
        delivery="batch" if delivery == "batch" else "proxy",
        export_queue_size=n + 1024,
        timeout=30.0,
    )
    processor = AktoSpanProcessor(settings)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    records = [tool_result(i) for i in range(n)]

    def work() -> dict[str, Any]:
        start = time.perf_counter()
        for record in records:
            span = tracer.start_span("execute_tool Bash")
            processor.attach(span, record, kind="tool.result")
            span.end()
        produced = time.perf_counter() - start
        flushed = processor.force_flush(600_000)
        return {"produce_seconds": produced, "flushed": flushed}

    got = _measured(env, n, work)
    got["stats"] = processor.stats.snapshot()
    processor.shutdown()
    provider.shutdown()
    return got


def _exporter_only(env: Environment, n: int) -> dict[str, Any]:
    """RecordExporter.export on ready 512-record batches: delivery without spans or queue."""
    settings = Settings(ingestion_url=env.url, delivery="batch", timeout=30.0)
    stats = ExportStats()
    exporter = RecordExporter(settings, stats)
    items = [PendingRecord(record=tool_result(i), key=f"k-{i}") for i in range(n)]

    def work() -> dict[str, Any]:
        for at in range(0, n, 512):
            exporter.export(items[at : at + 512])
        return {}

    got = _measured(env, n, work)
    exporter.shutdown()
    return got | {"stats": stats.snapshot()}


def _pieces(cfg: Config) -> list[tuple[str, float]]:
    """CPU per record of the batch path's steps, timed alone (timeit, no network)."""
    processor = AktoSpanProcessor(Settings(ingestion_url=""), schedule_delay_millis=60_000)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    record = tool_result(0)
    batch = [tool_result(i) for i in range(512)]
    keys = "\n".join(f"{'0' * 32}-{i:016x}-tool.result" for i in range(512))

    def produce() -> None:
        span = tracer.start_span("execute_tool Bash")
        processor.attach(span, record, kind="tool.result")
        span.end()

    number = cfg.pick(2000, 100)
    pieces: list[tuple[str, float]] = []

    def best(fn: Any, per: int = 1, times: int = number) -> float:
        return seconds_per_call(fn, number=times, repeat=3) / per * 1e6

    pieces.append(("start span + attach + end (hook side, per record)", best(produce)))
    processor.shutdown()
    provider.shutdown()
    pieces.append(
        (
            "encode_ingest_item (strip fields + json.dumps, once)",
            best(lambda: encode_ingest_item(record)),
        )
    )
    encoded = [encode_ingest_item(r) for r in batch]
    pieces.append(
        (
            "join_ingest_items (the batch body)",
            best(lambda: join_ingest_items(encoded), per=512, times=max(2, number // 100)),
        )
    )
    pieces.append(
        (
            "Idempotency-Key sha256 of the keys",
            best(
                lambda: hashlib.sha256(keys.encode()).hexdigest(),
                per=512,
                times=max(2, number // 10),
            ),
        )
    )
    return pieces


async def _reference_async(ref: ReferenceConnector, n: int) -> float:
    start = time.perf_counter()
    tasks = [
        asyncio.create_task(ref.ingest_tool_result("Bash", TOOL_INPUT, TOOL_RESPONSE))
        for _ in range(n)
    ]
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


def _reference(env: Environment, n: int) -> dict[str, Any]:
    ref = ReferenceConnector(env.url)
    # The wall time is the loop's own, as the reference's tasks see it.
    got = _measured(env, n, lambda: {"seconds": asyncio.run(_reference_async(ref, n))})
    return got | {"stats": {"failed": ref.failures}}


def run(cfg: Config, env: Environment) -> FigureResult:
    result = FigureResult("ingest", HEADER)
    reps = cfg.pick(cfg.repeats, 1)
    sizes = {
        BATCH: cfg.pick(50_000, 2_000),
        EXPORTER: cfg.pick(50_000, 2_000),
        PROXY: cfg.pick(4_000, 300),
        REFERENCE: cfg.pick(4_000, 300),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sizes}
    for rep in range(reps):
        for name in rotated(list(sizes), rep):
            n = sizes[name]
            if name == REFERENCE:
                runs[name].append(_reference(env, n))
            elif name == EXPORTER:
                runs[name].append(_exporter_only(env, n))
            else:
                runs[name].append(_akto(env, "batch" if name == BATCH else "proxy", n))
    table = Table(
        f"records delivered per second ({reps} repetition(s), median shown)",
        [
            "path",
            "records",
            "delivered",
            "records/s",
            "spread",
            "x reference",
            "CPU s / 10k (client)",
            "CPU s / 10k (server)",
            "enqueue µs/record",
        ],
    )
    medians: dict[str, dict[str, Any]] = {}
    for name, got in runs.items():
        medians[name] = median_by(got, lambda r: r["delivered"] / r["seconds"])
    ref = medians[REFERENCE]
    ref_rate = ref["delivered"] / ref["seconds"]
    for name, med in medians.items():
        rates = [r["delivered"] / r["seconds"] for r in runs[name]]
        rate = med["delivered"] / med["seconds"]
        produce = med["produce_seconds"]
        table.add(
            name,
            med["n"],
            med["delivered"],
            f"{rate:,.0f}",
            f"{min(rates):,.0f}-{max(rates):,.0f}",
            fmt_ratio(rate / ref_rate),
            f"{med['cpu'] / med['n'] * 10_000:.2f}",
            f"{med['server_cpu'] / med['n'] * 10_000:.2f}",
            f"{produce / med['n'] * 1e6:.1f}" if produce == produce else "n/a",
        )
    table.notes.append(
        "records: PostToolUse records of a Bash call (~2.5 KB of JSON each). The server is "
        "the stub server in its own process; its CPU is shown apart."
    )
    table.notes.append(
        "akto_otel timings include starting and ending one span per record; the reference's "
        "include building each record (both do that on the hook path)."
    )
    table.notes.append(
        "exporter alone: the same records handed to RecordExporter.export in 512-record "
        "batches on this thread: the delivery side without spans, queue or worker hand-off."
    )
    result.tables.append(table)
    pieces = Table(
        "CPU per record of the batch path, each step timed alone (µs)",
        ["step", "µs per record"],
    )
    for name, us in _pieces(cfg):
        pieces.add(name, f"{us:,.1f}")
    pieces.notes.append(
        "the worker encodes each record once (sizing and body share the encoding), "
        "then joins the encoded records into the body."
    )
    result.tables.append(pieces)
    batch = medians[BATCH]
    batch_rate = batch["delivered"] / batch["seconds"]
    result.verdicts.append(
        Verdict(
            "batch ingestion >= 10x reference records/s",
            fmt_ratio(batch_rate / ref_rate),
            batch_rate / ref_rate >= 10,
            f"{batch_rate:,.0f}/s vs reference {ref_rate:,.0f}/s",
        )
    )
    result.verdicts.append(
        Verdict(
            "batch ingestion >= 20,000 records/s",
            f"{batch_rate:,.0f}/s",
            batch_rate >= 20_000,
            f"CPU {batch['cpu'] / batch['n'] * 10_000:.2f} s per 10k records (client)",
        )
    )
    lost = {name: m["n"] - m["delivered"] for name, m in medians.items()}
    if any(lost.values()):
        result.notes.append(f"records not delivered (median run): {lost}")
    result.data = dict(runs)
    return result
