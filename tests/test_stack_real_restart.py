"""The real collector restarts mid-run: the app's spans from the outage still arrive.

What runs (127.0.0.1, free ports, stopped after): Jaeger v2 and the collector built
by collector/build.sh, with their committed configs; a real SDK TracerProvider with
a BatchSpanProcessor and the OTLP/HTTP exporter (what ``akto_otel.configure()``
installs), plus an in-memory exporter on the same provider as the ground truth of
what the app produced.

1. Spans before the restart are exported; the collector counts them as accepted.
2. The collector is stopped (SIGTERM: it flushes its batches to Jaeger first).
3. While nothing listens on its OTLP port, a guarded session runs through the real
   CLI and the emulator; the exporter's attempts are refused and it retries
   (backoff within its 60 s timeout, the batch waiting in the SDK queue).
4. The collector starts again on the same ports; the retried batch goes through.
5. More spans after the restart.

Jaeger must then hold every span the app produced, each once; the restarted
collector's own metrics must count exactly the spans of steps 3 and 5 as accepted,
none refused, all of them sent to Jaeger, and none sent to the absent Tempo (its
exporter's failures and queue show what the collector could not deliver).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from pathlib import Path

import pytest
from claude_agent_sdk import ClaudeAgentOptions
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.test_stack_real_programs import (
    Collector,
    Jaeger,
    closed_port,
    http_get,
    run_collector,
    run_jaeger,
)

pytestmark = pytest.mark.timeout(300)
ARRIVAL_S = 60.0


def collector_metrics(collector: Collector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The collector's own metrics (its Prometheus endpoint), by name and labels."""
    status, body = http_get(collector.telemetry)
    assert status == 200
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        # By family name: the parser reports a counter's samples as <name>_total
        # whether or not the collector exposed that suffix.
        for sample in family.samples:
            if sample.name not in (family.name, f"{family.name}_total"):
                continue
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if k in ("receiver", "exporter")
            )
            key = (family.name, labels)
            values[key] = values.get(key, 0.0) + float(sample.value)
    return values


def metric(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of ``name`` over the series carrying ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and wanted <= set(ls))


def _refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _jaeger_span_ids(jaeger: Jaeger, service: str) -> list[str]:
    return [
        s["spanID"]
        for t in jaeger.traces(service)
        for s in t["spans"]
        if t["processes"][s["processID"]]["serviceName"] == service
    ]


def _wait_until(check: object, what: str, timeout: float = ARRIVAL_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


async def test_spans_from_a_collector_restart_arrive(
    emulator: EmulatorServer,
    home: Path,
    workdir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = f"akto-restart-{uuid.uuid4().hex[:8]}"
    truth = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(truth))
    tracer = provider.get_tracer("restart-test")
    scenario = Scenario(
        None,
        [
            ToolUse("Bash", {"command": "echo during > during.txt"}),
            Text("Done during the restart."),
        ],
    )
    with (
        run_jaeger(tmp_path) as jaeger,
        run_collector(tmp_path, jaeger.otlp_grpc, closed_port()) as collector,
    ):
        exporter = OTLPSpanExporter(endpoint=f"{collector.otlp_http}/v1/traces", timeout=60)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=300))

        for i in range(5):
            with tracer.start_as_current_span(f"before {i}"):
                pass
        assert provider.force_flush(30_000)
        before = len(truth.get_finished_spans())
        first = collector_metrics(collector)
        assert metric(first, "otelcol_receiver_accepted_spans", receiver="otlp") == before

        collector.program.stop()
        http_address = collector.otlp_http.split("//", 1)[1]
        assert _refused(http_address), "the collector still listens"
        guard = AktoGuardrails(
            tracer_provider=provider,
            meter_provider=MeterProvider(),
            ingestion_url=emulator.url,
            timeout=5.0,
        )
        with (
            caplog.at_level(logging.WARNING, logger="opentelemetry"),
            FakeAnthropic(scenario) as fake,
        ):
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
            )
            async with guard.session(options) as guarded:
                await run_agent("do it while the collector restarts", guarded)
            assert guard.force_flush()
            during = len(truth.get_finished_spans()) - before
            time.sleep(1.5)  # past the batch delay: the exporter has tried and been refused
            assert _refused(http_address)
        exporter_warnings = [
            r for r in caplog.records if r.name.startswith("opentelemetry.exporter")
        ]
        assert exporter_warnings, "the exporter never hit the stopped collector"

        collector.program.start()
        assert provider.force_flush(90_000), "the retried batch did not go through"
        for i in range(3):
            with tracer.start_as_current_span(f"after {i}"):
                pass
        assert provider.force_flush(30_000)
        produced = [f"{s.context.span_id:016x}" for s in truth.get_finished_spans()]
        after = len(produced) - before - during
        assert during >= 5 and after == 3, (before, during, after)

        _wait_until(
            lambda: set(_jaeger_span_ids(jaeger, service)) >= set(produced),
            f"Jaeger lacks {len(set(produced) - set(_jaeger_span_ids(jaeger, service)))} spans",
        )
        in_jaeger = _jaeger_span_ids(jaeger, service)
        assert sorted(in_jaeger) == sorted(produced)  # every span once, nothing else

        _wait_until(
            lambda: (
                metric(
                    collector_metrics(collector),
                    "otelcol_exporter_sent_spans",
                    exporter="otlp_grpc/jaeger",
                )
                == during + after
            ),
            "the restarted collector did not send every span it accepted to Jaeger",
        )
        second = collector_metrics(collector)
        provider.shutdown()
    accepted = metric(second, "otelcol_receiver_accepted_spans", receiver="otlp")
    assert accepted == during + after
    assert metric(second, "otelcol_receiver_refused_spans", receiver="otlp") == 0
    # Tempo is absent (compose without --profile tempo): nothing reached it, and its
    # exporter shows the spans it is holding or has given up on.
    assert metric(second, "otelcol_exporter_sent_spans", exporter="otlp_grpc/tempo") == 0
    tempo_pending = metric(
        second, "otelcol_exporter_queue_size", exporter="otlp_grpc/tempo"
    ) + metric(second, "otelcol_exporter_send_failed_spans", exporter="otlp_grpc/tempo")
    assert tempo_pending > 0
