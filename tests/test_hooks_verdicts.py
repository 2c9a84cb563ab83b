"""Every verdict kind, state cleanup and aborted sessions, through the real CLI."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ToolUseBlock, query

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer, Policy, Rule
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.conftest import TEST_RULES, SpanCapture

pytestmark = pytest.mark.timeout(120)


def _guard(emulator: EmulatorServer, capture: SpanCapture, **kw: Any) -> AktoGuardrails:
    kw.setdefault("timeout", 3.0)
    return AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=emulator.url,
        **kw,
    )


def _options(fake: FakeAnthropic, home: Path, workdir: Path) -> ClaudeAgentOptions:
    return ClaudeAgentOptions(
        env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
    )


def _wait_for_hook(emulator: EmulatorServer, hook: str) -> None:
    deadline = time.monotonic() + 20
    while not any(r.hook == hook for r in emulator.records):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {hook} record")
        time.sleep(0.05)


def _verdict(span: Any) -> dict[str, Any]:
    events = [e for e in span.events if e.name == "akto.guardrail.verdict"]
    assert len(events) == 1
    return dict(events[0].attributes)


async def test_warn_passes_and_is_recorded(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    (workdir / ".env").write_text("X=1\n")
    scenario = Scenario(None, [ToolUse("Bash", {"command": "cat .env > copy.txt"}), Text("ok")])
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        async with guard.session(_options(fake, home, workdir)) as options:
            await run_agent("copy env", options)
    assert (workdir / "copy.txt").read_text() == "X=1\n"
    verdict = _verdict(capture.one("execute_tool Bash"))
    assert verdict["akto.guardrail.decision"] == "warn"
    assert verdict["akto.guardrail.behaviour"] == "warn"
    assert verdict["akto.guardrail.reason"] == "Reads secrets"
    points = capture.metric_points("akto.guardrail.decisions")
    assert any(
        p.attributes
        == {"hook": "PreToolUse", "decision": "warn", "behaviour": "warn", "fail_open": False}
        for p in points
    )


async def test_approval_denies_by_default(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenario = Scenario(
        None, [ToolUse("Bash", {"command": "sudo touch approved.txt"}), Text("waiting")]
    )
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        async with guard.session(_options(fake, home, workdir)) as options:
            await run_agent("needs root", options)
    assert not (workdir / "approved.txt").exists()
    tool = capture.one("execute_tool Bash")
    assert _verdict(tool)["akto.guardrail.decision"] == "ask"
    assert tool.attributes["error.type"] == "blocked"  # denied, as the reference does


async def test_masking_verdict_rewrites_the_tool_input(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenario = Scenario(
        None, [ToolUse("Bash", {"command": "echo bob@example.com > who.txt"}), Text("ok")]
    )
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        async with guard.session(_options(fake, home, workdir)) as options:
            await run_agent("write the email", options)
    assert (workdir / "who.txt").read_text().strip() == "[EMAIL]"
    assert _verdict(capture.one("execute_tool Bash"))["akto.guardrail.decision"] == "modify"


async def test_tool_output_guardrail_warns_the_model(
    capture: SpanCapture, home: Path, workdir: Path
) -> None:
    rule = Rule(
        name="leaky-output",
        hooks=("PostToolUse",),
        target="response",
        pattern="PRIVATE-KEY",
        reason="Tool output leaks a key",
    )
    with EmulatorServer(Policy((*TEST_RULES, rule))) as akto:
        scenario = Scenario(
            None, [ToolUse("Bash", {"command": "echo PRIVATE-KEY-123"}), Text("ok")]
        )
        guard = AktoGuardrails(
            tracer_provider=capture.provider,
            ingestion_url=akto.url,
            timeout=3.0,
            tool_response_guardrails=True,
        )
        with FakeAnthropic(scenario) as fake:
            async with guard.session(_options(fake, home, workdir)) as options:
                await run_agent("print it", options)
            follow_up = json.dumps(fake.conversation_requests[-1])
        checked = [r for r in akto.records if r.hook == "PostToolUse"]
    assert "Tool output leaks a key" in follow_up
    assert len(checked) == 1
    assert checked[0].flags == {
        "response_guardrails": "true",
        "akto_connector": "claude_agent_sdk",
        "ingest_data": "true",
    }


async def test_unbound_sessions_free_their_state(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenario = Scenario(None, [ToolUse("Bash", {"command": "echo hi"}), Text("done")])
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        for _ in range(3):
            await run_agent("go", guard.instrument(_options(fake, home, workdir)))
    assert len(guard._default_scope.tracing) == 0
    roots = capture.named("invoke_agent")
    assert len(roots) == 3
    assert all(r.status.is_unset for r in roots)


async def test_an_aborted_session_closes_its_spans_as_errors(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    # Not "sleep 30": the CLI refuses a long leading sleep before PreToolUse runs.
    slow = f"{sys.executable} -c 'import time; time.sleep(30)'"
    scenario = Scenario(None, [ToolUse("Bash", {"command": slow}), Text("done")])
    guard = _guard(emulator, capture)

    class Interrupted(Exception):
        pass

    with FakeAnthropic(scenario) as fake, pytest.raises(Interrupted):
        async with guard.session(_options(fake, home, workdir)) as options:
            async for message in query(prompt="slow", options=options):
                if isinstance(message, AssistantMessage) and any(
                    isinstance(b, ToolUseBlock) for b in message.content
                ):
                    # Abort once PreToolUse has judged the call (its tool span is open).
                    await asyncio.to_thread(_wait_for_hook, emulator, "PreToolUse")
                    raise Interrupted
    root = capture.one("invoke_agent claude-agent")
    assert root.attributes["error.type"] == "session_aborted"
    assert not root.status.is_ok and not root.status.is_unset
    tools = capture.named("execute_tool")
    assert tools, "the session was aborted with a tool call open"
    assert all(t.attributes.get("error.type") == "session_aborted" for t in tools)


async def test_draft_guardrail_semconv_behind_the_opt_in(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenario = Scenario(
        None, [ToolUse("Bash", {"command": "rm -rf /tmp/nothing-here"}), Text("ok")]
    )
    guard = _guard(emulator, capture, semconv_security=True)
    with FakeAnthropic(scenario) as fake:
        async with guard.session(_options(fake, home, workdir)) as options:
            await run_agent("clean", options)
    tool = capture.one("execute_tool Bash")
    check = next(
        s
        for s in capture.named("apply_guardrail")
        if s.parent is not None and s.parent.span_id == tool.context.span_id
    )
    assert check.name == "apply_guardrail Akto"
    assert check.attributes["gen_ai.operation.name"] == "apply_guardrail"
    assert check.attributes["gen_ai.guardrail.result.type"] == "Allowed"
    assert check.attributes["gen_ai.guardrail.result.value"] == "false"
    assert check.attributes["akto.guardrail.decision"] == "deny"
    (finding,) = check.events
    assert finding.attributes["gen_ai.guardrail.policy.id"] == "rm-rf"
    assert check.instrumentation_scope is not None
    assert check.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.37.0"
    # The earlier drafts' names are gone.
    assert not any(
        k.startswith(("gen_ai.security.", "gen_ai.guardian.", "gen_ai.guardrail.target."))
        or k == "gen_ai.guardrail.verdict.type"
        for k in check.attributes
    )
    prompt_check = next(
        s
        for s in capture.named("apply_guardrail")
        if s.attributes["akto.hook"] == "UserPromptSubmit"
    )
    assert prompt_check.attributes["gen_ai.guardrail.result.value"] == "true"
    assert prompt_check.events == ()


async def test_no_security_semconv_by_default(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenario = Scenario(None, [Text("hello")])
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        async with guard.session(_options(fake, home, workdir)) as options:
            await run_agent("hi", options)
    assert capture.spans
    for span in capture.spans:
        assert not any(k.startswith("gen_ai.guardrail.") for k in (span.attributes or {}))


async def test_guardrail_spans_off_folds_the_call_into_the_hook_span(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    # AKTO_GUARDRAIL_SPANS=false: half the spans per guarded call, the same decisions.
    victim = workdir / "victim"
    victim.mkdir()
    scenario = Scenario(None, [ToolUse("Bash", {"command": f"rm -rf {victim}"}), Text("ok")])
    guard = _guard(emulator, capture, guardrail_spans=False, semconv_security=True)
    with FakeAnthropic(scenario) as fake:
        async with guard.session(_options(fake, home, workdir)) as options:
            await run_agent("clean", options)
    assert victim.exists(), "the denied command ran"
    guard.force_flush()
    assert capture.spans
    assert capture.named("run_guardrail") == [] and capture.named("apply_guardrail") == []
    tool = capture.one("execute_tool Bash")
    assert _verdict(tool)["akto.guardrail.decision"] == "deny"
    attributes = tool.attributes or {}
    assert attributes["akto.guardrail.decision"] == "deny"
    assert attributes["akto.guardrail.duration_ms"] > 0
    # The findings go on the hook span as events; the call's own result needs its span.
    assert "gen_ai.guardrail.result.type" not in attributes
    assert "gen_ai.provider.name" not in attributes
    (finding,) = [e for e in tool.events if e.name == "gen_ai.guardrail.result"]
    assert finding.attributes["gen_ai.guardrail.result.value"] == "block"
    prompt = capture.one("akto.user_prompt")
    assert _verdict(prompt)["akto.guardrail.decision"] == "allow"
