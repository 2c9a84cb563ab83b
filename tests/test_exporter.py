"""AktoSpanProcessor: records of ended hook spans reach Akto, batched, bounded, retried.

The later tests drive :class:`RecordExporter` directly against a real scripted Akto
on 127.0.0.1 and pin the exact counts, routes, keys and error kinds, where a batch
is cut and how Retry-After and the backoff are bounded (part of the
mutation-testing selection, ``nox -s mutation -- exporter``, docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from akto_otel.config import Settings
from akto_otel.contract import (
    WireContext,
    encode_ingest_item,
    ingest_record,
    prompt_record,
    tool_request_record,
    tool_result_record,
    turn_record,
)
from akto_otel.emulator import EmulatorServer
from akto_otel.exporter import (
    ExportStats,
    PendingRecord,
    RecordExporter,
    _backoff,
    _chunks,
    _retry_after,
    encode_observed_item,
)
from akto_otel.processor import AktoSpanProcessor
from benchmarks.servers import free_port
from tests.scripted_akto import ScriptedAkto

pytestmark = pytest.mark.timeout(60)
CTX = WireContext(client_ip="10.0.0.1")


def _processor(url: str, **kw: Any) -> tuple[AktoSpanProcessor, TracerProvider]:
    options = {
        k: kw.pop(k)
        for k in ("max_queue_size", "max_export_batch_size", "schedule_delay_millis")
        if k in kw
    }
    kw.setdefault("export_retry_timeout", 10.0)
    kw.setdefault("export_shutdown_timeout", 10.0)
    kw.setdefault("timeout", 1.0)
    settings = Settings.from_env({}, ingestion_url=url, **kw)
    processor = AktoSpanProcessor(settings, **options)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return processor, provider


def _emit(
    processor: AktoSpanProcessor,
    provider: TracerProvider,
    record: dict[str, Any],
    kind: str = "r",
    **flags: bool,
) -> None:
    span = provider.get_tracer("t").start_span("hook")
    processor.attach(span, record, kind=kind, **flags)
    span.end()


ALL_KINDS = [
    prompt_record(CTX, "p", blocked_reason="r", time_ms=1),
    tool_request_record(CTX, "Bash", {"command": "x"}, blocked_reason="r", time_ms=2),
    tool_request_record(CTX, "mcp__s__t", {"a": 1}, blocked_reason="", time_ms=3),
    tool_result_record(CTX, "Bash", {"command": "x"}, {"stdout": "y"}, time_ms=4),
    tool_result_record(CTX, "mcp__s__t", {"a": 1}, [1, 2], time_ms=5),
    turn_record(CTX, "q", "a", time_ms=6),
    turn_record(CTX, "q", "a", blocked_reason="r", time_ms=7),
    turn_record(CTX, "q", "a", hook="SubagentStop", time_ms=8),
]


@pytest.mark.parametrize("delivery", ["batch", "proxy"])
def test_every_record_kind_arrives_field_for_field(delivery: str) -> None:
    with EmulatorServer() as akto:
        processor, provider = _processor(akto.url, delivery=delivery)
        for i, record in enumerate(ALL_KINDS):
            _emit(processor, provider, record, kind=str(i))
        assert processor.force_flush()
        received = akto.wait_for_records(len(ALL_KINDS), timeout=10)
        provider.shutdown()
    got = sorted((r.record for r in received), key=lambda r: r["time"])
    if delivery == "batch":
        assert {r.endpoint for r in received} == {"ingestData"}
        assert got == [ingest_record(r) for r in ALL_KINDS]
    else:
        assert {r.endpoint for r in received} == {"http-proxy"}
        assert all(
            r.flags == {"akto_connector": "claude_agent_sdk", "ingest_data": "true"}
            for r in received
        )
        assert got == ALL_KINDS
    assert processor.stats.snapshot()["exported"] == len(ALL_KINDS)


def test_unrelated_spans_are_ignored() -> None:
    with ScriptedAkto() as akto:
        processor, provider = _processor(akto.url)
        tracer = provider.get_tracer("app")
        for _ in range(5):
            tracer.start_span("app work").end()
        processor.force_flush()
        provider.shutdown()
    assert akto.requests == []


def test_records_wait_for_their_span_to_end() -> None:
    with ScriptedAkto() as akto:
        processor, provider = _processor(akto.url)
        span = provider.get_tracer("t").start_span("open")
        processor.attach(span, turn_record(CTX, "q", "a"), kind="turn")
        processor.force_flush()
        assert akto.accepted == []
        span.end()
        processor.force_flush()
        assert len(akto.accepted) == 1
        provider.shutdown()


def test_akto_down_then_up_delivers_everything_exactly_once() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processor, provider = _processor(url, export_retry_timeout=20.0, schedule_delay_millis=50)
    records = [turn_record(CTX, f"q{i}", "a", time_ms=i) for i in range(300)]
    for i, record in enumerate(records):
        _emit(processor, provider, record, kind=str(i))
    time.sleep(2.0)  # Akto is down: the worker retries with backoff
    assert processor.stats.snapshot()["retried"] > 0
    with EmulatorServer(port=port) as akto:
        assert processor.force_flush()
        provider.shutdown()
        got = [r.record["time"] for r in akto.records]
        assert akto.duplicates == 0
    assert sorted(got, key=int) == [str(i) for i in range(300)]  # all, once each
    snap = processor.stats.snapshot()
    assert snap["exported"] == 300 and snap["dropped"] == 0 and snap["failed"] == 0


def test_queue_overflow_is_counted_exactly() -> None:
    port = free_port()
    processor, provider = _processor(
        f"http://127.0.0.1:{port}",
        max_queue_size=50,
        max_export_batch_size=10,
        export_retry_timeout=20.0,
        schedule_delay_millis=10_000,
    )
    for i in range(200):
        _emit(processor, provider, turn_record(CTX, f"q{i}", "a", time_ms=i), kind=str(i))
    with EmulatorServer(port=port) as akto:
        provider.shutdown()
        delivered = len(akto.records)
    snap = processor.stats.snapshot()
    # The queue holds 50; the worker may already hold one batch in flight.
    assert 50 <= delivered <= 60
    assert snap["dropped"] == 200 - delivered
    assert processor.stats.failures == {"queue_full": 200 - delivered}
    assert snap["exported"] == delivered


def test_5xx_then_success_is_retried_with_the_same_idempotency_key() -> None:
    with ScriptedAkto(script=[500, 503, 502]) as akto:
        processor, provider = _processor(akto.url)
        for i in range(3):
            _emit(processor, provider, turn_record(CTX, "q", "a", time_ms=i), kind=str(i))
        assert processor.force_flush()
        provider.shutdown()
    assert len(akto.requests) == 4
    keys = {r["headers"]["Idempotency-Key"] for r in akto.requests}
    assert len(keys) == 1, "a retried batch must carry the same key"
    assert len(akto.accepted) == 3
    assert processor.stats.snapshot()["retried"] == 9  # 3 records x 3 retries


def test_429_honours_retry_after() -> None:
    with ScriptedAkto(script=[(429, {"Retry-After": "1"})]) as akto:
        processor, provider = _processor(akto.url)
        _emit(processor, provider, turn_record(CTX, "q", "a"))
        assert processor.force_flush()
        provider.shutdown()
    first, second = akto.requests
    assert second["at"] - first["at"] >= 0.95
    assert len(akto.accepted) == 1


def test_one_oversized_record_is_dropped_and_the_rest_delivered() -> None:
    with ScriptedAkto() as akto:
        processor, provider = _processor(akto.url)
        for i in range(7):
            text = "OVERSIZED" if i == 3 else f"q{i}"
            _emit(processor, provider, turn_record(CTX, text, "a", time_ms=i), kind=str(i))
        processor.force_flush()
        provider.shutdown()
    assert sorted(int(r["time"]) for r in akto.accepted) == [0, 1, 2, 4, 5, 6]
    snap = processor.stats.snapshot()
    assert snap["failed"] == 1 and snap["exported"] == 6
    assert processor.stats.failures == {"http_413": 1}


def test_422_is_not_retried() -> None:
    with ScriptedAkto(script=[422]) as akto:
        processor, provider = _processor(akto.url)
        _emit(processor, provider, turn_record(CTX, "q", "a"))
        processor.force_flush()
        provider.shutdown()
    assert len(akto.requests) == 1
    assert processor.stats.snapshot()["failed"] == 1


def test_a_server_that_never_answers_cannot_hold_shutdown() -> None:
    with ScriptedAkto(script=["hang"] * 50) as akto:
        processor, provider = _processor(
            akto.url, export_retry_timeout=60.0, export_shutdown_timeout=2.0
        )
        _emit(processor, provider, turn_record(CTX, "q", "a"))
        started = time.perf_counter()
        provider.shutdown()
        elapsed = time.perf_counter() - started
    assert elapsed < 2.0 + 1.0 + 0.5  # shutdown timeout + one request timeout + slack
    assert processor.stats.snapshot()["failed"] == 1


def test_shutdown_delivers_a_full_queue() -> None:
    with EmulatorServer() as akto:
        processor, provider = _processor(
            akto.url, schedule_delay_millis=60_000, max_export_batch_size=5000
        )
        for i in range(2000):
            _emit(processor, provider, turn_record(CTX, "q", "a", time_ms=i), kind=str(i))
        assert processor.queue_size == 2000
        provider.shutdown()
        assert len(akto.records) == 2000


def test_attach_never_blocks_while_akto_hangs() -> None:
    """Each request hangs for the full 5 s timeout; an attach that waited on the worker
    would take seconds. The bound is loose (a loaded CI machine passes it) and still far
    below one hung request."""
    with ScriptedAkto(script=["hang"] * 100) as akto:
        processor, provider = _processor(
            akto.url, export_shutdown_timeout=1.0, schedule_delay_millis=1, timeout=5.0
        )
        _emit(processor, provider, turn_record(CTX, "q", "a"))
        time.sleep(0.2)  # the worker is now stuck in a request
        slowest = 0.0
        started = time.perf_counter()
        for i in range(1000):
            before = time.perf_counter()
            _emit(processor, provider, turn_record(CTX, "q", "a", time_ms=i), kind=str(i))
            slowest = max(slowest, time.perf_counter() - before)
        spent = time.perf_counter() - started
        provider.shutdown()
    assert slowest < 1.0, f"one attach took {slowest:.2f}s while the exporter was stuck"
    assert spent < 4.0, f"1000 attaches took {spent:.2f}s while the exporter was stuck"


def test_a_process_that_exits_normally_loses_nothing(tmp_path: Path) -> None:
    with EmulatorServer() as akto:
        script = tmp_path / "agent.py"
        script.write_text(
            textwrap.dedent(f"""
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            from akto_otel.config import Settings
            from akto_otel.contract import WireContext, turn_record
            from akto_otel.processor import AktoSpanProcessor

            provider = TracerProvider()          # registers its shutdown at exit
            trace.set_tracer_provider(provider)
            processor = AktoSpanProcessor(
                Settings.from_env({{}}, ingestion_url="{akto.url}"),
                schedule_delay_millis=60_000,
            )
            provider.add_span_processor(processor)
            tracer = provider.get_tracer("agent")
            for i in range(250):
                span = tracer.start_span("hook")
                processor.attach(span, turn_record(WireContext(), "q", "a", time_ms=i), kind=str(i))
                span.end()
            print("queued", processor.queue_size)
        """)
        )
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "queued 250" in result.stdout
        assert len(akto.wait_for_records(250, timeout=5)) == 250


def test_two_guards_on_one_meter_provider_both_report_their_queue() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from akto_otel import AktoGuardrails

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    port = free_port()
    settings = Settings.from_env(
        {},
        ingestion_url=f"http://127.0.0.1:{port}",
        export_retry_timeout=0.1,
        export_shutdown_timeout=0.1,
    )
    guards = [
        AktoGuardrails(
            settings,
            tracer_provider=TracerProvider(),
            meter_provider=meters,
            # A long delay keeps the records queued while the metric is read.
            processor=AktoSpanProcessor(settings, schedule_delay_millis=60_000),
        )
        for _ in range(2)
    ]
    assert guards[0].metrics is guards[1].metrics
    for n, guard in enumerate(guards):
        span = guard.tracer.start_span("hook")
        for i in range(3 + n):
            guard.processor.attach(span, turn_record(CTX, "q", "a"), kind=str(i))
        span.end()
    assert [g.processor.queue_size for g in guards] == [3, 4]
    expected = 7
    data = reader.get_metrics_data()
    assert data is not None
    values = [
        p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "akto.exporter.queue.size"
        for p in m.data.data_points
    ]
    assert values == [expected]
    for guard in guards:
        guard.shutdown()


# ---------------------------------------------------------------- OTel-native processor


def test_a_processor_built_with_no_arguments_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with EmulatorServer() as akto:
        monkeypatch.setenv("AKTO_DATA_INGESTION_URL", akto.url)
        monkeypatch.setenv("AKTO_EXPORT_QUEUE_SIZE", "77")
        processor = AktoSpanProcessor()
        provider = TracerProvider()
        provider.add_span_processor(processor)
        assert processor.settings.ingestion_url == akto.url
        assert processor.settings.export_queue_size == 77
        _emit(processor, provider, turn_record(CTX, "q", "a"))
        assert processor.force_flush()
        provider.shutdown()
        assert len(akto.records) == 1


def test_an_exporter_built_with_no_arguments_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from akto_otel.exporter import AktoSpanExporter

    monkeypatch.setenv("AKTO_DATA_INGESTION_URL", "http://127.0.0.1:1")
    assert AktoSpanExporter().settings.ingestion_url == "http://127.0.0.1:1"


def test_the_exporter_on_a_plain_batch_processor_ignores_ordinary_spans() -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from akto_otel.exporter import AktoSpanExporter

    with ScriptedAkto() as akto:
        exporter = AktoSpanExporter(Settings.from_env({}, ingestion_url=akto.url))
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        for _ in range(3):
            provider.get_tracer("app").start_span("app work").end()
        provider.shutdown()
    assert akto.requests == []
    assert exporter.stats.snapshot() == {"exported": 0, "failed": 0, "dropped": 0, "retried": 0}


def test_records_of_a_span_the_sampler_dropped_still_reach_akto() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    with EmulatorServer() as akto:
        settings = Settings.from_env({}, ingestion_url=akto.url)
        processor = AktoSpanProcessor(settings)
        provider = TracerProvider(sampler=ALWAYS_OFF)
        provider.add_span_processor(processor)
        _emit(processor, provider, turn_record(CTX, "q", "a"))
        assert processor.force_flush()
        provider.shutdown()
        assert len(akto.records) == 1


def test_the_guard_ships_through_the_apps_own_processor_and_adds_none() -> None:
    import asyncio

    from akto_otel import AktoGuardrails
    from akto_otel.processor import find_processors

    with EmulatorServer() as akto:
        provider = TracerProvider()
        mine = AktoSpanProcessor(Settings.from_env({}, ingestion_url=akto.url))
        provider.add_span_processor(mine)
        settings = Settings.from_env({}, ingestion_url=akto.url, sync_mode=False)
        guards = [AktoGuardrails(settings, tracer_provider=provider) for _ in range(2)]
        assert len(guards) == 2 and all(g.processor is mine for g in guards)
        assert find_processors(provider) == [mine]
        data = {
            "session_id": "s1",
            "hook_event_name": "PostToolUse",
            "tool_name": "Bash",
            "tool_use_id": "t1",
            "tool_input": {"command": "ls"},
            "tool_response": {"stdout": "a"},
        }
        callback = guards[0].hooks()["PostToolUse"][0].hooks[0]
        asyncio.run(callback(data, "t1", {}))  # type: ignore[arg-type]
        assert mine.force_flush()
        received = akto.wait_for_records(1, timeout=10)
        provider.shutdown()
    assert [r.record["path"] for r in received] == ["/tool/Bash"]
    assert mine.stats.snapshot()["exported"] == 1


def test_guards_that_made_their_own_processors_do_not_share_them() -> None:
    from akto_otel import AktoGuardrails
    from akto_otel.processor import find_processors

    provider = TracerProvider()
    first = AktoGuardrails(
        Settings.from_env({}, ingestion_url="http://127.0.0.1:1"), tracer_provider=provider
    )
    second = AktoGuardrails(
        Settings.from_env({}, ingestion_url="http://127.0.0.1:2"), tracer_provider=provider
    )
    assert first.processor is not second.processor
    assert second.processor.settings.ingestion_url == "http://127.0.0.1:2"
    assert find_processors(provider) == [first.processor, second.processor]
    for guard in (first, second):
        guard.processor.shutdown()


@pytest.mark.parametrize("delivery", ["batch", "proxy"])
def test_every_delivery_request_carries_the_raw_token(delivery: str) -> None:
    with ScriptedAkto() as akto:
        processor, provider = _processor(akto.url, delivery=delivery, token="tok-123")
        for i in range(3):
            _emit(processor, provider, turn_record(CTX, "q", "a", time_ms=i), kind=str(i))
        assert processor.force_flush()
        provider.shutdown()
    assert akto.requests, "nothing was sent"
    for request in akto.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers.get("authorization") == "tok-123"


def test_shutdown_delivers_records_of_spans_that_never_ended() -> None:
    with EmulatorServer() as akto:
        processor, provider = _processor(akto.url)
        tracer = provider.get_tracer("t")
        ended = tracer.start_span("ended")
        processor.attach(ended, turn_record(CTX, "q", "a", time_ms=1), kind="a")
        ended.end()
        for i in (2, 3):
            open_span = tracer.start_span("never ended")
            processor.attach(open_span, turn_record(CTX, "q", "a", time_ms=i), kind="b")
        provider.shutdown()
        got = sorted(int(r.record["time"]) for r in akto.records)
    assert got == [1, 2, 3]
    assert processor.stats.snapshot()["exported"] == 3


def test_the_package_imports_no_private_module_of_another_library() -> None:
    import ast

    root = Path(__file__).resolve().parent.parent / "akto_otel"
    sources = sorted(root.rglob("*.py"))
    assert sources
    # OpenTelemetry Python's logs signal exists only under these underscore paths (its
    # documented API and SDK, still "development" status); AKTO_DELIVERY=otlp needs it.
    documented = {
        "opentelemetry._logs",
        "opentelemetry.sdk._logs",
        "opentelemetry.sdk._logs.export",
        # Incubating semconv names: the package's documented path, the one the
        # official GenAI instrumentations import (akto_otel/semconv.py).
        "opentelemetry.semconv._incubating.attributes",
    }
    private: list[str] = []
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name in documented:
                    continue
                if not name.startswith("akto_otel") and any(
                    part.startswith("_") and not part.endswith("__") for part in name.split(".")
                ):
                    private.append(f"{source.name}: {name}")
    assert private == []


# ---------------------------------------------------------------- observe mode in batches


def test_observe_mode_records_are_batched_with_publish_to_guardrails() -> None:
    from akto_otel.contract import encode_ingest_item

    plain = turn_record(CTX, "q", "a", time_ms=1)
    judged_tool = tool_result_record(CTX, "Bash", {"command": "x"}, {"stdout": "y"}, time_ms=2)
    judged_turn = turn_record(CTX, "q2", "a2", time_ms=3)
    with ScriptedAkto() as akto:
        processor, provider = _processor(akto.url, schedule_delay_millis=60_000)
        _emit(processor, provider, plain, kind="turn")
        _emit(processor, provider, judged_tool, kind="tool.result", guardrails=True)
        _emit(processor, provider, judged_turn, kind="turn", response_guardrails=True)
        assert processor.force_flush()
        provider.shutdown()
    assert [r["path"] for r in akto.requests] == ["/api/ingestData"]
    got = sorted(akto.requests[0]["records"], key=lambda r: r["time"])
    assert got == [
        ingest_record(plain),
        {**ingest_record(judged_tool), "publishToGuardrails": True},
        {**ingest_record(judged_turn), "publishToGuardrails": True},
    ]
    # A record that asks for nothing keeps the reference's bytes exactly.
    assert b"publishToGuardrails" not in encode_ingest_item(plain)
    assert processor.stats.snapshot()["exported"] == 3


def test_observe_delivery_proxy_keeps_one_http_proxy_call_per_judged_record() -> None:
    judged = tool_result_record(CTX, "Bash", {"command": "x"}, {"stdout": "y"}, time_ms=2)
    with EmulatorServer() as akto:
        processor, provider = _processor(akto.url, observe_delivery="proxy")
        _emit(processor, provider, turn_record(CTX, "q", "a", time_ms=1), kind="turn")
        _emit(processor, provider, judged, kind="tool.result", guardrails=True)
        assert processor.force_flush()
        received = akto.wait_for_records(2, timeout=10)
        provider.shutdown()
    by_endpoint = {r.endpoint: r for r in received}
    assert set(by_endpoint) == {"ingestData", "http-proxy"}
    assert by_endpoint["http-proxy"].record == judged
    assert by_endpoint["http-proxy"].flags == {
        "guardrails": "true",
        "akto_connector": "claude_agent_sdk",
        "ingest_data": "true",
    }
    assert "publishToGuardrails" not in by_endpoint["ingestData"].record


def test_a_record_attached_after_shutdown_is_counted_as_dropped() -> None:
    with ScriptedAkto() as akto:
        processor, provider = _processor(akto.url)
        span = provider.get_tracer("t").start_span("late")  # never ends
        provider.shutdown()
        processor.attach(span, turn_record(CTX, "q", "a"), kind="late")
    assert akto.requests == []
    assert processor.stats.snapshot()["dropped"] == 1
    assert processor.stats.failures == {"already_shutdown": 1}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_an_empty_queue_and_delivers_its_own() -> None:
    with EmulatorServer() as akto:
        processor, provider = _processor(akto.url, schedule_delay_millis=60_000)
        for i in range(5):
            _emit(processor, provider, turn_record(CTX, "parent", "a", time_ms=i), kind=str(i))
        assert processor.queue_size == 5
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 0
            try:
                if processor.queue_size != 0:
                    code = 2
                else:
                    _emit(processor, provider, turn_record(CTX, "child", "a", time_ms=99))
                    code = 0 if processor.force_flush() and processor.queue_size == 0 else 3
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert processor.queue_size == 5
        provider.shutdown()
        got = sorted((r.record["time"], r.record["requestPayload"]) for r in akto.records)
    assert [t for t, _ in got] == ["0", "1", "2", "3", "4", "99"]


def test_the_apps_processor_is_found_under_a_parent_based_ratio_sampler() -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from akto_otel.processor import find_processors

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    mine = AktoSpanProcessor(Settings.from_env({}))
    provider.add_span_processor(mine)
    assert find_processors(provider) == [mine]
    mine.shutdown()


PLAIN_CTX = WireContext()


def _item(i: int, text: str = "q", **flags: bool) -> PendingRecord:
    return PendingRecord(turn_record(PLAIN_CTX, text, "a", time_ms=i), key=f"k{i}", **flags)


def _exporter(url: str, **kw: Any) -> tuple[RecordExporter, ExportStats]:
    kw.setdefault("export_retry_timeout", 10.0)
    settings = Settings.from_env({}, ingestion_url=url, timeout=5.0, **kw)
    stats = ExportStats()
    return RecordExporter(settings, stats), stats


def _counts(stats: ExportStats) -> tuple[dict[str, int], dict[str, int]]:
    return stats.snapshot(), dict(stats.failures)


def test_an_empty_batch_is_delivered_and_nothing_is_sent() -> None:
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export([]) is True
    assert akto.requests == [] and exporter.taken == 0
    assert stats.snapshot() == {"exported": 0, "failed": 0, "dropped": 0, "retried": 0}


def test_without_a_url_every_record_fails_as_not_configured() -> None:
    exporter, stats = _exporter("")
    assert exporter.export([_item(1), _item(2)]) is False
    assert exporter.taken == 2
    assert _counts(stats) == (
        {"exported": 0, "failed": 2, "dropped": 0, "retried": 0},
        {"not_configured": 2},
    )


def test_a_batch_goes_to_ingest_data_in_one_request_with_its_key_and_token() -> None:
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url, token="tok")
        assert exporter.export([_item(1), _item(2), _item(3)]) is True
    (request,) = akto.requests
    assert request["path"] == "/api/ingestData"
    assert request["headers"]["Authorization"] == "tok"
    assert request["headers"]["Idempotency-Key"] == hashlib.sha256(b"k1\nk2\nk3").hexdigest()
    assert [int(r["time"]) for r in request["records"]] == [1, 2, 3]
    assert exporter.taken == 3
    assert _counts(stats) == ({"exported": 3, "failed": 0, "dropped": 0, "retried": 0}, {})


def test_routes_proxy_delivery_and_observed_records() -> None:
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url, delivery="proxy")
        assert exporter.export([_item(1)]) is True
        observed, _ = _exporter(akto.url, observe_delivery="proxy")
        assert observed.export(
            [_item(2, guardrails=True), _item(3), _item(4, response_guardrails=True)]
        )
        batched, _ = _exporter(akto.url)
        assert batched.export([_item(5, guardrails=True)])
    paths = [r["path"].split("?")[0] for r in akto.requests]
    assert paths == [
        "/api/http-proxy",
        "/api/http-proxy",
        "/api/http-proxy",
        "/api/ingestData",
        "/api/ingestData",
    ]
    query = akto.requests[1]["path"].split("?")[1]
    assert "guardrails=true" in query and "ingest_data=true" in query
    assert "response_guardrails=true" in akto.requests[2]["path"]
    assert akto.requests[0]["headers"]["Idempotency-Key"] == hashlib.sha256(b"k1").hexdigest()
    assert akto.requests[4]["records"][0]["publishToGuardrails"] is True
    assert stats.snapshot()["exported"] == 1


def test_a_proxy_record_akto_refuses_is_counted_failed_with_its_kind() -> None:
    with ScriptedAkto(script=[422]) as akto:
        exporter, stats = _exporter(akto.url, delivery="proxy")
        assert exporter.export([_item(1), _item(2)]) is False
    assert _counts(stats) == (
        {"exported": 1, "failed": 1, "dropped": 0, "retried": 0},
        {"http_422": 1},
    )


def test_a_refused_batch_is_halved_until_the_bad_record_is_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = [_item(i, "OVERSIZED" if i == 4 else "q") for i in range(6)]
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export(items) is False
    sizes = [len(r["records"]) for r in akto.requests]
    assert sizes == [6, 3, 3, 1, 2, 1, 1]
    assert sorted(int(r["time"]) for r in akto.accepted) == [0, 1, 2, 3, 5]
    assert _counts(stats) == (
        {"exported": 5, "failed": 1, "dropped": 0, "retried": 0},
        {"http_413": 1},
    )
    assert [r.getMessage() for r in caplog.records if r.name == "akto_otel.exporter"] == [
        "dropping 1 record(s) Akto did not take: http_413"
    ]


def test_a_server_error_is_not_split_and_retries_keep_the_key() -> None:
    with ScriptedAkto(script=[500, 503]) as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export([_item(1), _item(2)]) is True
    assert [len(r["records"]) for r in akto.requests] == [2, 2, 2]
    assert len({r["headers"]["Idempotency-Key"] for r in akto.requests}) == 1
    assert _counts(stats) == ({"exported": 2, "failed": 0, "dropped": 0, "retried": 4}, {})


def test_the_retry_timeout_hands_back_with_the_record_held_never_failed() -> None:
    with ScriptedAkto(script=[503] * 50) as akto:
        exporter, stats = _exporter(akto.url, export_retry_timeout=0.0)
        assert exporter.export([_item(1)]) is False
        assert len(akto.requests) == 1 and exporter.held == 1
        assert _counts(stats) == ({"exported": 0, "failed": 0, "dropped": 0, "retried": 1}, {})
        exporter.shutdown()  # only shutdown gives up, with the last error's kind
    assert exporter.held == 0 and exporter.settled == 1
    assert _counts(stats) == (
        {"exported": 0, "failed": 1, "dropped": 0, "retried": 1},
        {"http_503": 1},
    )


def test_retry_after_is_waited_for_and_a_long_one_is_not_cut_short() -> None:
    with ScriptedAkto(script=[(429, {"Retry-After": "0"}), (429, {"Retry-After": "30"})]) as akto:
        exporter, stats = _exporter(akto.url, export_retry_timeout=5.0)
        started = time.monotonic()
        assert exporter.export([_item(1)]) is False
        assert time.monotonic() - started < 4.0, "a wait past the window hands back at once"
        assert exporter.export([]) is False  # the next turn still waits for Retry-After
        assert len(akto.requests) == 2 and exporter.held == 1
        exporter.shutdown()
    assert _counts(stats) == (
        {"exported": 0, "failed": 1, "dropped": 0, "retried": 2},
        {"http_429": 1},
    )


def test_after_the_shutdown_deadline_nothing_more_is_sent() -> None:
    with ScriptedAkto(script=[503] * 50) as akto:
        exporter, stats = _exporter(akto.url)
        exporter.begin_shutdown(time.monotonic() - 1)
        assert exporter.export([_item(1)]) is False
    assert akto.requests == []
    assert stats.failures == {"shutdown_timeout": 1}


def test_a_connection_failure_is_retried_then_counted_with_its_kind_at_shutdown() -> None:
    with ScriptedAkto() as akto:
        url = akto.url
    exporter, stats = _exporter(url, export_retry_timeout=0.3)
    assert exporter.export([_item(1)]) is False
    assert stats.snapshot()["retried"] >= 2 and exporter.held == 1
    exporter.shutdown()
    snap, failures = _counts(stats)
    assert failures == {"connection_refused": 1} and snap["failed"] == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("2", 2.0), ("0.5", 0.5), ("-1", 0.0), ("600", 60.0), ("soon", None)],
)
def test_retry_after_is_bounded(value: str | None, seconds: float | None) -> None:
    assert _retry_after(value) == seconds


def test_backoff_doubles_from_a_tenth_of_a_second_up_to_five() -> None:
    for attempt, bound in [(1, 0.1), (2, 0.2), (4, 0.8), (7, 5.0), (30, 5.0)]:
        samples = [_backoff(attempt) for _ in range(400)]
        assert samples and all(0 <= s <= bound for s in samples), attempt
        assert max(samples) > bound * 0.8, attempt  # full jitter reaches near the bound


def test_chunks_stay_under_the_byte_limit_and_keep_the_order() -> None:
    items = [_item(i) for i in range(5)] + [_item(5, guardrails=True)]
    encoded = [encode_ingest_item(i.record) for i in items[:5]] + [
        encode_observed_item(items[5].record)
    ]
    size = len(encoded[0])
    assert {len(e) for e in encoded[:5]} == {size}
    # Two items and their separator fit exactly; one byte less and each goes alone.
    tight = _chunks(items[:4], 2 * size + 2)
    assert [[item.key for item, _ in chunk] for chunk in tight] == [["k0", "k1"], ["k2", "k3"]]
    looser = _chunks(items[:3], 2 * size + 1)
    assert [[item.key for item, _ in chunk] for chunk in looser] == [["k0"], ["k1"], ["k2"]]
    assert [e for chunk in _chunks(items, 10**9) for _, e in chunk] == encoded
    assert _chunks([], 100) == []
    # One item larger than the limit still goes, alone.
    assert [[i.key for i, _ in c] for c in _chunks(items[:2], 1)] == [["k0"], ["k1"]]


@pytest.mark.parametrize("delivery", ["proxy", "batch"])
def test_a_300_is_not_a_delivery_and_is_not_split(delivery: str) -> None:
    with ScriptedAkto(script=[300]) as akto:
        exporter, stats = _exporter(akto.url, delivery=delivery)
        assert exporter.export([_item(1)] if delivery == "proxy" else [_item(1), _item(2)]) is False
    assert len(akto.requests) == 1
    failed = 1 if delivery == "proxy" else 2
    assert _counts(stats) == (
        {"exported": 0, "failed": failed, "dropped": 0, "retried": 0},
        {"http_300": failed},
    )


def test_a_400_on_a_batch_is_split_like_any_refusal() -> None:
    with ScriptedAkto(script=[400]) as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export([_item(1), _item(2)]) is True
    assert [len(r["records"]) for r in akto.requests] == [2, 1, 1]
    assert _counts(stats) == ({"exported": 2, "failed": 0, "dropped": 0, "retried": 0}, {})


def test_a_server_error_that_outlasts_the_retries_is_not_split() -> None:
    with ScriptedAkto(script=[500] * 50) as akto:
        exporter, stats = _exporter(akto.url, export_retry_timeout=0.0)
        assert exporter.export([_item(1), _item(2)]) is False
        exporter.shutdown()
    assert [len(r["records"]) for r in akto.requests] == [2]
    assert stats.failures == {"http_500": 2}


def test_taken_counts_every_batch_and_each_export_reports_its_duration() -> None:
    durations: list[float] = []
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url)
        stats.duration_listeners.append(durations.append)
        assert exporter.export([_item(1), _item(2)])
        before = time.perf_counter()
        assert exporter.export([_item(3)])
        elapsed = time.perf_counter() - before
    assert exporter.taken == 3
    assert len(durations) == 2 and 0 <= durations[1] <= elapsed
