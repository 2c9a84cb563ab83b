"""``AKTO_SPANS=guard``: only the guardrail spans, joined to the CLI's own telemetry;
the decisions, the records at Akto and the verdict metrics are those of ``full``.

Through the real SDK and bundled CLI, the scripted fake model and the emulator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions

from akto_otel import AktoGuardrails, hook_dispatch
from akto_otel import hooks as hooks_module
from akto_otel.config import Settings, unknown_names
from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.errors import AktoConfigError
from akto_otel.serve import HookServer
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.conftest import TEST_RULES, SpanCapture
from tests.otlp_receiver import OtlpReceiver
from tests.test_serve import AUTH, SECRET, _post, _pre_tool_use
from tests.test_stack_real_trace import cli_telemetry_env

pytestmark = pytest.mark.timeout(180)

GUARDRAIL_SPANS = ("run_guardrail akto", "apply_guardrail Akto")


def _guard(url: str, capture: SpanCapture, **kw: Any) -> AktoGuardrails:
    """A guard on ``capture``'s providers, judging at ``url`` ("" is no Akto)."""
    return AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=url,
        **{"timeout": 3.0, "export_retry_timeout": 1.0, "export_shutdown_timeout": 2.0, **kw},
    )


async def _wait_for(receiver: OtlpReceiver, name: str, count: int = 1) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sum(1 for s in receiver.spans if s["name"] == name) >= count:
            return
        await asyncio.sleep(0.2)


# ------------------------------------------------------------------ the setting


def test_the_setting_is_read_checked_and_known() -> None:
    assert Settings().spans == "full"
    assert Settings.from_env({"AKTO_SPANS": " Guard "}).spans == "guard"
    assert Settings.from_env({}, spans="guard").spans == "guard"
    assert unknown_names({"AKTO_SPANS": "guard"}) == []
    for bad in ("none", "guardrails", "true"):
        with pytest.raises(AktoConfigError) as caught:
            Settings.from_env({"AKTO_SPANS": bad})
        assert caught.value.name == "AKTO_SPANS" and "full" in caught.value.accepted
    with pytest.raises(AktoConfigError):
        AktoGuardrails(spans="off")


def test_guard_mode_keeps_the_guardrail_spans_and_says_so(
    capture: SpanCapture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``AKTO_GUARDRAIL_SPANS=false`` would leave guard mode with no span at all."""
    monkeypatch.setattr(hooks_module, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="akto_otel.hooks"):
        guard = _guard("", capture, spans="guard", guardrail_spans=False, fail_mode="closed")
    assert any("AKTO_SPANS=guard" in r.getMessage() for r in caplog.records)
    callback = guard.hooks()["PreToolUse"][0].hooks[0]
    data = {"session_id": "s", "tool_name": "Bash", "tool_use_id": "t1", "tool_input": {}}
    output = asyncio.run(callback(data, "t1", None))  # type: ignore[arg-type]
    assert output["hookSpecificOutput"]["permissionDecision"] == "deny"
    guard.shutdown()
    names = [s.name for s in capture.spans]
    assert names == ["run_guardrail akto"]
    [call] = capture.spans
    assert call.attributes is not None
    assert call.attributes["gen_ai.tool.call.id"] == "t1"
    assert [e.name for e in call.events] == ["akto.guardrail.verdict"]


@pytest.mark.parametrize("mode", ["full", "guard"])
def test_full_mode_says_when_the_clis_own_spans_would_count_twice(
    capture: SpanCapture,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    monkeypatch.setattr(hooks_module, "_WARNED", set())
    guard = _guard("", capture, spans=mode)
    cli = {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
    }
    with caplog.at_level(logging.WARNING, logger="akto_otel.hooks"):
        guard.instrument(ClaudeAgentOptions(env={**cli, "OTEL_TRACES_EXPORTER": "none"}))
        assert not [r for r in caplog.records if "traced twice" in r.getMessage()]
        guard.instrument(ClaudeAgentOptions(env=cli))
        guard.instrument(ClaudeAgentOptions(env=cli))
    told = [r for r in caplog.records if "traced twice" in r.getMessage()]
    assert len(told) == (1 if mode == "full" else 0)
    guard.shutdown()


# ------------------------------------------------------- coexistence with the CLI


async def test_guard_mode_joins_the_clis_own_spans_with_nothing_counted_twice(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    """The app's span is current; the CLI's telemetry is on. One trace holds the CLI's
    spans and the guard's; the guard adds no ``invoke_agent`` or ``execute_tool``, and its
    tool verdict joins the CLI's ``claude_code.tool`` by conversation and tool-call id."""
    scenario = Scenario(None, [ToolUse("Bash", {"command": "echo joined"}), Text("ok")])
    guard = _guard(emulator.url, capture, spans="guard")
    app = capture.provider.get_tracer("my-app")
    with OtlpReceiver() as receiver, FakeAnthropic(scenario) as fake:
        env = {**offline_agent_env(fake, home), **cli_telemetry_env(receiver.url)}
        options = ClaudeAgentOptions(env=env, cwd=str(workdir), allowed_tools=["Bash"])
        with app.start_as_current_span("handle request") as request:
            async with guard.session(options) as guarded:
                await run_agent("join the trace", guarded)
        await _wait_for(receiver, "claude_code.tool")
        await _wait_for(receiver, "claude_code.interaction")
        cli = [s for s in receiver.spans if s["name"].startswith("claude_code.")]
    guard.shutdown()
    ours = [s for s in capture.spans if s.name != "handle request"]
    trace_id = f"{request.get_span_context().trace_id:032x}"
    request_id = request.get_span_context().span_id
    # The guard's spans: guardrail calls only, children of the app's span.
    assert ours and {s.name for s in ours} == {"run_guardrail akto"}
    assert all(s.parent is not None and s.parent.span_id == request_id for s in ours)
    assert all(f"{s.context.trace_id:032x}" == trace_id for s in ours)
    assert all(s.events and s.events[0].name == "akto.guardrail.verdict" for s in ours)
    # The CLI's spans: the same trace, its interaction under the app's span.
    assert cli and {s["trace_id"] for s in cli} == {trace_id}
    interaction = next(s for s in cli if s["name"] == "claude_code.interaction")
    assert interaction["parent_id"] == f"{request_id:016x}"
    # Nothing counted twice: one agent invocation, one tool execution, in both trees.
    operations = [s["attributes"].get("gen_ai.operation.name") for s in cli]
    operations += [(s.attributes or {}).get("gen_ai.operation.name") for s in ours]
    assert operations.count("invoke_agent") == 1
    assert operations.count("execute_tool") == 1
    # The join: the tool's verdict names the CLI's tool call and conversation.
    tool = next(s for s in cli if s["name"] == "claude_code.tool")
    [pre] = [s for s in ours if (s.attributes or {}).get("akto.hook") == "PreToolUse"]
    assert pre.attributes is not None
    assert pre.attributes["gen_ai.tool.call.id"] == tool["attributes"]["gen_ai.tool.call.id"]
    assert pre.attributes["gen_ai.tool.name"] == "Bash"
    session = tool["attributes"].get("gen_ai.conversation.id") or tool["attributes"]["session.id"]
    assert pre.attributes["gen_ai.conversation.id"] == session
    assert all((s.attributes or {}).get("gen_ai.conversation.id") == session for s in ours)


async def test_the_hook_server_in_guard_mode_nests_its_calls_under_the_clis_span(
    emulator: EmulatorServer, capture: SpanCapture
) -> None:
    """``akto-otel serve`` gets the CLI's TRACEPARENT: in guard mode its guardrail calls are
    children of that span, and it makes no ``invoke_agent`` of its own."""
    server = HookServer(_guard(emulator.url, capture, spans="guard"), SECRET)
    await server.start("127.0.0.1", 0)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    start = {"session_id": "s9", "hook_event_name": "SessionStart", "source": "startup"}
    try:
        await _post(server, "/hook/SessionStart", start, {**AUTH, "traceparent": parent})
        status, answer = await _post(
            server, "/hook/PreToolUse", _pre_tool_use("rm -rf /", "s9"), AUTH
        )
        await _post(server, "/hook/SessionEnd", {**start, "hook_event_name": "SessionEnd"}, AUTH)
    finally:
        await server.close()
    assert status == 200 and answer["hookSpecificOutput"]["permissionDecision"] == "deny"
    [call] = capture.spans
    assert call.name == "run_guardrail akto" and call.parent is not None
    assert format(call.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(call.parent.span_id, "016x") == "b7ad6b7169203331"
    assert call.attributes is not None
    assert call.attributes["gen_ai.tool.call.id"] == "toolu_1"
    assert call.attributes["akto.guardrail.decision"] == "deny"


# ---------------------------------------------------- the mode changes telemetry only


ATTACK = Scenario(
    None,
    [
        ToolUse("Bash", {"command": "rm -rf victim"}),
        ToolUse("Bash", {"command": "cat .env"}),
        ToolUse("Bash", {"command": "echo ran > ran.txt"}),
        Text("the key is SECRET-TOKEN"),
        Text("I cannot share that."),
    ],
)


class _Spy:
    """Every hook's input event and the output our dispatcher answered, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], Any]] = []

    def wrap(self, original: Any) -> Any:
        async def dispatch(
            scope: Any, event: str, input_data: Any, tool_use_id: str | None = None
        ) -> Any:
            output = await original(scope, event, input_data, tool_use_id)
            self.calls.append((event, dict(input_data or {}), output))
            return output

        return dispatch


def _normalise(text: str, ids: dict[str, str]) -> str:
    for value, placeholder in ids.items():
        text = text.replace(value, placeholder)
    return text


def _volatile(value: Any) -> Any:
    """A received record without what differs by nature: its times, the idempotency
    key (made of span ids) and the request size (records share batches by timing)."""
    if isinstance(value, dict):
        return {
            k: _volatile(v)
            for k, v in value.items()
            if k not in ("time", "received_at", "idempotency-key", "content-length")
        }
    if isinstance(value, list):
        return [_volatile(v) for v in value]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _volatile(json.loads(value))
        except ValueError:
            return value
    return value


async def _attack(mode: str, home: Path, workdir: Path) -> dict[str, Any]:
    (workdir / "victim").mkdir()
    (workdir / ".env").write_text("KEY=1\n")
    capture = SpanCapture()
    spy = _Spy()
    emulator = EmulatorServer(Policy(TEST_RULES))
    emulator.start()
    original = hook_dispatch.dispatch
    hook_dispatch.dispatch = spy.wrap(original)  # type: ignore[assignment]
    try:
        guard = _guard(emulator.url, capture, spans=mode, tool_response_guardrails=True)
        with FakeAnthropic(ATTACK) as fake:
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
            )
            messages = [type(m).__name__ async for m in guard.query("clean up", options)]
        guard.force_flush()
        guard.shutdown()
        records = [r.to_dict() for r in emulator.records]
    finally:
        hook_dispatch.dispatch = original  # type: ignore[assignment]
        emulator.stop()
    ids: dict[str, str] = {emulator.url.split("//", 1)[1]: "<akto>"}
    for _event, data, _ in spy.calls:
        for key in ("session_id", "tool_use_id", "prompt_id", "transcript_path", "agent_id"):
            value = data.get(key)
            if isinstance(value, str) and value and value not in ids:
                ids[value] = f"<{key} {len(ids)}>"
    decisions = [
        (event, _normalise(json.dumps(output, sort_keys=True), ids))
        for event, _, output in spy.calls
    ]
    shown = sorted(_normalise(json.dumps(_volatile(r), sort_keys=True), ids) for r in records)
    metrics = sorted(
        (tuple(sorted(p.attributes.items())), p.value)
        for name in ("akto.guardrail.decisions", "akto.guardrail.unjudged")
        for p in capture.metric_points(name)
    )
    result = {
        "decisions": decisions,
        "records": shown,
        "metrics": metrics,
        "messages": messages,
        "victim": (workdir / "victim").exists(),
        "ran": (workdir / "ran.txt").exists(),
        "span_names": sorted({s.name for s in capture.spans}),
    }
    capture.provider.shutdown()
    return result


async def test_the_same_attack_gets_the_same_decisions_records_and_metrics_in_both_modes(
    tmp_path: Path,
) -> None:
    """Security first: the span mode changes telemetry only. A destructive command, a
    secret read, an allowed command and a leaking answer, run once per mode: every hook
    output, every record Akto received and every verdict count is the same."""
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("full", "guard"):
        home, workdir = tmp_path / mode / "home", tmp_path / mode / "work"
        home.mkdir(parents=True)
        workdir.mkdir(parents=True)
        runs[mode] = await _attack(mode, home, workdir)
    full, guard = runs["full"], runs["guard"]
    # The attack was met: the deny held, the allowed command ran, the answer was judged.
    assert full["victim"] is True and full["ran"] is True
    events = [event for event, _ in full["decisions"]]
    assert {"UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"} <= set(events)
    assert any('"deny"' in output for _, output in full["decisions"])
    assert any(("decision", "deny") in attrs for attrs, _ in full["metrics"])
    assert any("SECRET-TOKEN" in r for r in full["records"])
    # ... identically in both modes.
    for key in ("decisions", "records", "metrics", "messages", "victim", "ran"):
        assert guard[key] == full[key], key
    # Only the telemetry differs.
    assert "invoke_agent claude-agent" in full["span_names"]
    assert guard["span_names"] == ["run_guardrail akto"]
