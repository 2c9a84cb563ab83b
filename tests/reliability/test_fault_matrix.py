"""Every Akto fault, in both fail modes and both sync modes: the hook answers in time
with the configured decision, the span and the counter record it, and a real agent
session completes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ResultMessage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from akto_otel import AktoGuardrails
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.fault_server import FaultServer
from tests.test_guardrails import FAULTS

TIMEOUT = 1.0
PRE_TOOL = {
    "hook_event_name": "PreToolUse",
    "session_id": "s-1",
    "tool_name": "Bash",
    "tool_input": {"command": "ls"},
    "tool_use_id": "toolu_1",
}


class _Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])

    def decision_count(self, decision: str) -> int:
        data = self.reader.get_metrics_data()
        total = 0
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "akto.guardrail.decisions":
                        total += sum(
                            int(p.value)
                            for p in metric.data.data_points
                            if p.attributes.get("decision") == decision
                        )
        return total


@pytest.fixture
def telemetry() -> Iterator[_Telemetry]:
    t = _Telemetry()
    yield t
    t.provider.shutdown()


def _guard(url: str, telemetry: _Telemetry, **kw: Any) -> AktoGuardrails:
    return AktoGuardrails(
        tracer_provider=telemetry.provider,
        meter_provider=telemetry.meters,
        ingestion_url=url,
        timeout=TIMEOUT,
        export_retry_timeout=0.5,
        export_shutdown_timeout=0.5,
        **kw,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
@pytest.mark.parametrize(("mode", "kind"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_pre_tool_use_under_every_fault(
    mode: str, kind: str, fail_mode: str, telemetry: _Telemetry
) -> None:
    with FaultServer(mode) as server:
        guard = _guard(server.url, telemetry, fail_mode=fail_mode)
        callback = guard.hooks()["PreToolUse"][0].hooks[0]
        started = time.perf_counter()
        out = await callback(dict(PRE_TOOL), "toolu_1", {"signal": None})
        elapsed = time.perf_counter() - started
        guard.shutdown()
    assert elapsed <= TIMEOUT + 0.5
    if fail_mode == "open":
        assert out == {}
    else:
        assert out["hookSpecificOutput"]["permissionDecision"] == "deny"
    tool = next(s for s in telemetry.spans.get_finished_spans() if s.name == "execute_tool Bash")
    assert tool.attributes["akto.guardrail.decision"] == "error"
    event = next(e for e in tool.events if e.name == "akto.guardrail.verdict")
    assert event.attributes["error.type"] == kind
    assert event.attributes["akto.guardrail.fail_open"] is (fail_mode == "open")
    assert telemetry.decision_count("error") == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["no_answer", "status_500", "invalid_json"])
async def test_observe_mode_never_waits_for_a_faulty_akto(mode: str, telemetry: _Telemetry) -> None:
    with FaultServer(mode) as server:
        guard = _guard(server.url, telemetry, sync_mode=False)
        hooks = guard.hooks()
        started = time.perf_counter()
        for event in ("UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"):
            data = dict(
                PRE_TOOL,
                hook_event_name=event,
                prompt="p",
                tool_response={"o": 1},
                last_assistant_message="answer",
            )
            assert await hooks[event][0].hooks[0](data, "toolu_1", {"signal": None}) == {}
        assert time.perf_counter() - started < 0.5  # no network on the hook path
        guard.shutdown()


REAL_CLI_FAULTS = ["no_answer", "status_503", "reset", "wrong_shape"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sync_mode", [True, False], ids=["sync", "async"])
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
@pytest.mark.parametrize("mode", REAL_CLI_FAULTS)
async def test_real_session_completes_under_faults(
    mode: str,
    fail_mode: str,
    sync_mode: bool,
    telemetry: _Telemetry,
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    scenario = Scenario(None, [ToolUse("Bash", {"command": "echo ran > ran.txt"}), Text("ok")])
    with FaultServer(mode, hold_s=5) as server, FakeAnthropic(scenario) as fake:
        guard = _guard(server.url, telemetry, fail_mode=fail_mode, sync_mode=sync_mode)
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(work), allowed_tools=["Bash"]
        )
        async with guard.session(options) as guarded:
            messages = await run_agent("go", guarded)
        guard.shutdown()
    assert isinstance(messages[-1], ResultMessage)
    ran = (work / "ran.txt").exists()
    assert ran is (fail_mode == "open" or not sync_mode)
    if sync_mode:
        assert telemetry.decision_count("error") >= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["huge_body", "huge_chunked"])
async def test_a_50_mb_answer_is_not_read(mode: str, telemetry: _Telemetry) -> None:
    import tracemalloc

    with FaultServer(mode, huge_bytes=50 * 1024 * 1024) as server:
        guard = _guard(server.url, telemetry, fail_mode="closed")
        callback = guard.hooks()["PreToolUse"][0].hooks[0]
        tracemalloc.start()
        started = time.perf_counter()
        out = await callback(dict(PRE_TOOL), "toolu_1", {"signal": None})
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        guard.shutdown()
    assert out["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert elapsed <= TIMEOUT + 0.5
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while refusing a 50 MB answer"
    event = next(
        e
        for s in telemetry.spans.get_finished_spans()
        for e in s.events
        if e.name == "akto.guardrail.verdict"
    )
    assert event.attributes["error.type"] == "response_too_large"
