"""A guarded session through the real CLI ends up as ONE trace in the real Jaeger.

What runs (all on 127.0.0.1, free ports, stopped after): Jaeger v2 and the
OpenTelemetry Collector built by collector/build.sh, each with its committed config
(collector/jaeger.yaml, collector/otel-collector.yaml) unchanged, the listeners set
through their ``${env:...}`` variables; the Akto emulator; the fake Anthropic API;
the Claude Agent SDK's bundled CLI. The app exports its spans over OTLP/HTTP
(protobuf) to the collector, and the CLI, with its telemetry on, exports its own
``claude_code.*`` spans (OTLP/HTTP JSON) to the same collector; the collector sends
both to Jaeger over OTLP gRPC (``otlp_grpc/jaeger``) and to an absent Tempo, as in
compose without the tempo profile.

Jaeger's query API must then return exactly one trace for the service, holding the
``invoke_agent`` span, the two tool spans, a ``run_guardrail`` child under every
guarded span, the verdict events (one tool call allowed, one denied), and the CLI's
spans, its ``claude_code.interaction`` a child of ``invoke_agent``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer
from akto_otel.spans import ATTR_DECISION, ATTR_HOOK, EVENT_VERDICT
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.test_stack_real_programs import Collector, Jaeger, closed_port, run_collector, run_jaeger

pytestmark = pytest.mark.timeout(240)
ARRIVAL_S = 60.0


def app_provider(collector: Collector, service: str) -> TracerProvider:
    """The app's pipeline: a real SDK provider exporting OTLP/HTTP to the collector."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{collector.otlp_http}/v1/traces", timeout=30)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    return provider


def cli_telemetry_env(endpoint: str) -> dict[str, str]:
    """What makes the bundled CLI export its own spans to the OTLP/HTTP ``endpoint``
    (joined through TRACEPARENT)."""
    return {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_EXPORT_INTERVAL": "100",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def tags(item: dict[str, Any]) -> dict[str, Any]:
    """Jaeger's key/value list (span tags, log fields) as a dict."""
    return {t["key"]: t["value"] for t in item.get("tags", item.get("fields", []))}


def parent_id(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


def wait_for_trace(jaeger: Jaeger, service: str, needed: set[str]) -> list[dict[str, Any]]:
    """Jaeger's traces for ``service`` once their spans include every name in ``needed``."""
    deadline = time.monotonic() + ARRIVAL_S
    traces: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        traces = jaeger.traces(service)
        names = {s["operationName"] for t in traces for s in t["spans"]}
        if needed <= names:
            return traces
        time.sleep(0.5)
    seen = sorted({s["operationName"] for t in traces for s in t["spans"]})
    pytest.fail(f"Jaeger never had {sorted(needed)}; it had {len(traces)} traces with {seen}")


async def test_guarded_session_is_one_trace_in_jaeger(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    service = f"akto-stack-{uuid.uuid4().hex[:8]}"
    victim = workdir / "victim"
    victim.mkdir()
    scenario = Scenario(
        None,
        [
            ToolUse("Bash", {"command": "echo stacked > stacked.txt"}),
            ToolUse("Bash", {"command": f"rm -rf {victim}"}),
            Text("One file made, the clean-up was refused."),
        ],
    )
    with (
        run_jaeger(tmp_path) as jaeger,
        run_collector(tmp_path, jaeger.otlp_grpc, closed_port()) as collector,
    ):
        provider = app_provider(collector, service)
        guard = AktoGuardrails(
            tracer_provider=provider,
            meter_provider=MeterProvider(),
            ingestion_url=emulator.url,
            timeout=5.0,
        )
        with FakeAnthropic(scenario) as fake:
            env = {**offline_agent_env(fake, home), **cli_telemetry_env(collector.otlp_http)}
            options = ClaudeAgentOptions(env=env, cwd=str(workdir), allowed_tools=["Bash"])
            async with guard.session(options) as guarded:
                await run_agent("make a file, then clean up", guarded)
        assert guard.force_flush()
        assert provider.force_flush(30_000)
        traces = wait_for_trace(
            jaeger,
            service,
            {"invoke_agent claude-agent", "execute_tool Bash", "claude_code.interaction"},
        )
        provider.shutdown()
    assert (workdir / "stacked.txt").exists() and victim.exists()

    assert len(traces) == 1, [len(t["spans"]) for t in traces]
    spans = traces[0]["spans"]
    processes = traces[0]["processes"]
    by_id = {s["spanID"]: s for s in spans}
    assert len({s["traceID"] for s in spans}) == 1
    services = {processes[s["processID"]]["serviceName"] for s in spans}
    assert service in services and len(services) == 2, services  # ours and the CLI's

    root = next(s for s in spans if s["operationName"].startswith("invoke_agent"))
    assert parent_id(root) is None
    tools = [s for s in spans if s["operationName"] == "execute_tool Bash"]
    assert len(tools) == 2
    decisions = sorted(tags(t)[ATTR_DECISION] for t in tools)
    assert decisions == ["allow", "deny"]

    # Every guarded span (prompt, both tools, stop) has a run_guardrail child whose
    # verdict is the one recorded on the parent, plus the verdict event.
    guardrails = [s for s in spans if s["operationName"].startswith("run_guardrail")]
    assert len(guardrails) >= 4, [s["operationName"] for s in spans]
    for child in guardrails:
        parent = by_id[parent_id(child) or ""]
        assert tags(child)[ATTR_HOOK] == tags(parent)[ATTR_HOOK]
        assert tags(child)[ATTR_DECISION] == tags(parent)[ATTR_DECISION]
        assert parent_id(parent) == root["spanID"]
        verdicts = [
            tags(log) for log in parent.get("logs", []) if tags(log).get("event") == EVENT_VERDICT
        ]
        assert verdicts, f"no verdict event on {parent['operationName']}"
        assert {v[ATTR_DECISION] for v in verdicts} == {tags(parent)[ATTR_DECISION]}
    hooks = {tags(s)[ATTR_HOOK] for s in guardrails}
    assert {"UserPromptSubmit", "PreToolUse", "Stop"} <= hooks

    # The CLI's own spans, in the same trace, under our invoke_agent span.
    cli = [s for s in spans if s["operationName"].startswith("claude_code.")]
    assert {"claude_code.interaction", "claude_code.llm_request"} <= {
        s["operationName"] for s in cli
    }
    interaction = next(s for s in cli if s["operationName"] == "claude_code.interaction")
    assert parent_id(interaction) == root["spanID"]
    for span in cli:
        assert processes[span["processID"]]["serviceName"] != service
        # Every CLI span hangs (through its own parents) from our root.
        node: dict[str, Any] | None = span
        while node is not None and node["spanID"] != root["spanID"]:
            node = by_id.get(parent_id(node) or "")
        assert node is root, f"{span['operationName']} is not under invoke_agent"
