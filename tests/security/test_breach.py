"""A deny that must hold is checked: a denied tool call that shows up as run is a breach.

The real CLI honours a PreToolUse deny: it runs nothing and fires no PostToolUse or
PostToolUseFailure for the denied call (tried on the CLI bundled with
claude-agent-sdk 0.2.190), so a breach cannot be produced with it. These tests use
``ScriptedCLI`` (tests/security/cli_standin.py), a transport stand-in that speaks
the SDK's real control protocol but ignores the deny, as a CLI bug or a permission
path around hooks would. The guard, its callbacks, the SDK and the Akto emulator
(which denies ``rm -rf``) are real.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions

from akto_otel import AktoGuardrails
from akto_otel.armed import DeniedCalls, breach_outcome
from akto_otel.decision import Rules
from akto_otel.emulator import EmulatorServer
from akto_otel.metrics import BREACH_HOOKS
from tests.conftest import SpanCapture
from tests.security.attack_kit import guard as make_guard
from tests.security.cli_standin import ScriptedCLI

pytestmark = pytest.mark.timeout(60)

DENIED_ID = "toolu_denied_but_ran"
TOOL_CALL = {
    "session_id": "standin-session",
    "transcript_path": "",
    "cwd": "/tmp",
    "permission_mode": "default",
    "tool_name": "Bash",
    "tool_input": {"command": "rm -rf /srv/data"},
    "tool_use_id": DENIED_ID,
}
RAN = {**TOOL_CALL, "tool_response": {"stdout": "", "stderr": "", "interrupted": False}}
FAILED = {**TOOL_CALL, "error": "exit code 1", "is_interrupt": False}


def _breaches(capture: SpanCapture) -> dict[str, float]:
    return {
        str(p.attributes["hook"]): p.value for p in capture.metric_points("akto.guardrail.breaches")
    }


def _answers(cli: ScriptedCLI, event: str) -> list[dict[str, Any]]:
    return [answer for name, answer in cli.answers if name == event]


async def _run(guard: AktoGuardrails, cli: ScriptedCLI) -> list[Any]:
    return [m async for m in guard.query("tidy up", ClaudeAgentOptions(), transport=cli)]


@pytest.mark.parametrize(("event", "data"), [("PostToolUse", RAN), ("PostToolUseFailure", FAILED)])
async def test_a_denied_call_that_runs_anyway_ends_a_fail_closed_session(
    emulator: EmulatorServer,
    capture: SpanCapture,
    caplog: pytest.LogCaptureFixture,
    event: str,
    data: dict[str, Any],
) -> None:
    guard = make_guard(emulator, capture, fail_mode="closed")
    assert _breaches(capture) == dict.fromkeys(BREACH_HOOKS, 0)  # started at 0
    cli = ScriptedCLI([("PreToolUse", TOOL_CALL), (event, data)])
    with caplog.at_level(logging.ERROR, logger="akto_otel"):
        await _run(guard, cli)
    # Precondition: the guard denied the call.
    [pre] = _answers(cli, "PreToolUse")
    assert pre["hookSpecificOutput"]["permissionDecision"] == "deny"
    # The breach ends the session: the CLI stops on continue: false.
    [post] = _answers(cli, event)
    assert post.get("continue") is False
    assert DENIED_ID in str(post.get("stopReason"))
    assert _breaches(capture)[event] == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and DENIED_ID in r.message]
    assert errors, [r.message for r in caplog.records]
    guard.force_flush()
    events = [
        e
        for s in capture.spans
        for e in s.events
        if e.name == "akto.guardrail.breach" and e.attributes
    ]
    assert events and all(e.attributes["gen_ai.tool.call.id"] == DENIED_ID for e in events)
    assert {e.attributes["akto.hook"] for e in events} == {event}


async def test_fail_open_records_the_breach_and_lets_the_session_go_on(
    emulator: EmulatorServer, capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard(emulator, capture, fail_mode="open")
    cli = ScriptedCLI([("PreToolUse", TOOL_CALL), ("PostToolUse", RAN)])
    with caplog.at_level(logging.ERROR, logger="akto_otel"):
        await _run(guard, cli)
    [post] = _answers(cli, "PostToolUse")
    assert post.get("continue") is not False
    assert _breaches(capture)["PostToolUse"] == 1
    assert any(r.levelno == logging.ERROR and DENIED_ID in r.message for r in caplog.records)


async def test_an_allowed_call_that_runs_is_no_breach(
    emulator: EmulatorServer, capture: SpanCapture
) -> None:
    guard = make_guard(emulator, capture, fail_mode="closed")
    allowed = {**TOOL_CALL, "tool_input": {"command": "ls"}, "tool_use_id": "toolu_ok"}
    ran = {**allowed, "tool_response": {"stdout": "a\n", "stderr": "", "interrupted": False}}
    cli = ScriptedCLI([("PreToolUse", allowed), ("PostToolUse", ran)])
    await _run(guard, cli)
    [post] = _answers(cli, "PostToolUse")
    assert post.get("continue") is not False
    assert _breaches(capture) == dict.fromkeys(BREACH_HOOKS, 0)


async def test_a_denied_id_from_another_session_is_no_breach(
    emulator: EmulatorServer, capture: SpanCapture
) -> None:
    guard = make_guard(emulator, capture, fail_mode="closed")
    elsewhere = {**RAN, "session_id": "another-session"}
    cli = ScriptedCLI([("PreToolUse", TOOL_CALL), ("PostToolUse", elsewhere)])
    await _run(guard, cli)
    assert _breaches(capture)["PostToolUse"] == 0


def test_the_denied_ids_are_bounded_per_session_and_in_sessions() -> None:
    denied = DeniedCalls(per_session=3, sessions=2)
    for n in range(10):
        denied.add("s1", f"t{n}")
    assert len(denied) == 3
    assert not denied.take("s1", "t6")  # evicted, least recently added
    assert denied.take("s1", "t9")
    assert not denied.take("s1", "t9")  # taken once
    denied.add("s2", "x")
    denied.add("s3", "y")  # a third session evicts the least recently used one (s1)
    assert not denied.take("s1", "t8")
    assert denied.take("s2", "x") and denied.take("s3", "y")
    denied.add("s4", "")  # no id, nothing to remember
    assert len(denied) == 0


def test_a_breach_stops_only_in_fail_closed_mode() -> None:
    closed = breach_outcome(Rules(fail_closed=True), "Bash", "t1")
    assert closed is not None and closed.output["continue_"] is False
    assert breach_outcome(Rules(fail_closed=False), "Bash", "t1") is None
