"""An armed guard: in fail-closed mode a judging hook that fails or times out blocks.

What the CLI does (claude-agent-sdk 0.2.190, its bundled CLI 2.1.337; tried with a
PreToolUse / UserPromptSubmit callback on a matcher with a 2 s timeout, each way):

- a callback that raises, returns None or returns an output the CLI rejects counts
  as "no decision" (the tool runs, the prompt goes on) unless its matcher says
  ``on_failure="block"``; with "block" the action is blocked;
- a callback that outlives its matcher timeout blocks the tool call and the prompt
  whatever ``on_failure`` says (the CLI's own rule for SDK callbacks today).

So the guard's fail-closed judging matchers carry "block" (the first row is shown
by an attack that succeeds without it), and the timeout row is kept as a check of
the whole path with a slow Akto, armed against a CLI that changes its mind. These
real-CLI tests run ``guard.instrument(options)`` with the SDK's ``query`` so that the
matcher the test changes is the one the CLI gets (``guard.query()`` instruments
again, with fresh matchers).
The initialize reply decides whether a session may start at all: tried with
``ScriptedCLI`` (a transport stand-in; the real CLI always applies the hooks of a
session it starts, and it honours on_failure), since only a stand-in can answer
like an old CLI or a joined session.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions, query

from akto_otel import AktoGuardrails
from akto_otel.armed import (
    ARMING_FAULTS,
    FAULT_HOOKS_NOT_APPLIED,
    FAULT_ON_FAILURE_UNSUPPORTED,
    arming_fault,
    on_failure_for,
)
from akto_otel.decision import JUDGING_HOOKS, Rules
from akto_otel.emulator import EmulatorServer
from akto_otel.errors import AktoError, AktoNotArmedError
from akto_otel.hooks import HOOK_EVENTS
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse
from tests.conftest import SpanCapture
from tests.fault_server import ALLOW
from tests.security.attack_kit import guard as make_guard
from tests.security.attack_kit import hook_of
from tests.security.attack_kit import options as agent_options
from tests.security.cli_standin import ARMED_REPLY, ScriptedCLI
from tests.standin_http import StandInServer

pytestmark = pytest.mark.timeout(180)

TOUCH = Scenario(None, [ToolUse("Bash", {"command": "touch marker"}), Text("done")])


# ------------------------------------------------------------------ the matchers


def test_fail_closed_judging_matchers_block_and_the_others_continue() -> None:
    closed = Rules(fail_closed=True)
    for event in HOOK_EVENTS:
        expected = "block" if event in JUDGING_HOOKS else "continue"
        assert on_failure_for(event, closed) == expected, event
    for rules in (Rules(fail_closed=False), Rules(fail_closed=True, sync_mode=False)):
        assert {on_failure_for(event, rules) for event in HOOK_EVENTS} == {"continue"}


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_the_guard_builds_its_matchers_armed(mode: str, capture: SpanCapture) -> None:
    guard = AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url="http://127.0.0.1:9",
        fail_mode=mode,
    )
    options = guard.instrument(ClaudeAgentOptions())
    assert options.hooks is not None
    for event in HOOK_EVENTS:
        [matcher] = options.hooks[event]  # type: ignore[index]
        expected = "block" if mode == "closed" and event in JUDGING_HOOKS else "continue"
        assert matcher.on_failure == expected, (mode, event)


# ------------------------------------------------------------------ the real CLI


def _raising(*_: Any) -> Any:
    async def fails(data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        raise RuntimeError("a failure the guard's own callback never lets out")

    return fails


async def test_a_failing_judging_callback_blocks_the_tool_in_fail_closed_mode(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    """Our callbacks catch their own errors; what fails around them (the SDK turning
    the output into the wire form, a BaseException) reaches the CLI as a failed hook.
    The attack: the guard's PreToolUse matcher, as the guard built it, with a callback
    that fails. Unarmed (no on_failure), the CLI counts it as no decision and `touch`
    runs even in fail-closed mode."""
    guard = make_guard(emulator, capture, fail_mode="closed")
    with FakeAnthropic(TOUCH) as fake:
        options = guard.instrument(agent_options(fake, home, workdir))
        assert options.hooks is not None
        for matcher in options.hooks["PreToolUse"]:  # type: ignore[index]
            matcher.hooks = [_raising()]
        async for _ in query(prompt="touch it", options=options):
            pass
    assert not (workdir / "marker").exists()


async def test_fail_open_lets_a_failing_judging_callback_through_as_configured(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    guard = make_guard(emulator, capture, fail_mode="open")
    with FakeAnthropic(TOUCH) as fake:
        options = guard.instrument(agent_options(fake, home, workdir))
        assert options.hooks is not None
        for matcher in options.hooks["PreToolUse"]:  # type: ignore[index]
            matcher.hooks = [_raising()]
        async for _ in query(prompt="touch it", options=options):
            pass
    assert (workdir / "marker").exists()


class _SlowOnPreToolUse(StandInServer):
    """Akto that answers every check at once with an allow, except PreToolUse's,
    which it accepts and never answers (the prompt must get through to the tool call:
    a slow prompt check would block the prompt and the test would prove nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.pre_tool_use_calls = 0

    def answer(self, path: str, body: bytes) -> bytes | None:
        try:
            record = json.loads(body)
        except ValueError:
            record = None
        if isinstance(record, dict) and hook_of(record) == "PreToolUse":
            self.pre_tool_use_calls += 1
            return None
        return ALLOW


async def test_a_judging_callback_past_its_matcher_timeout_blocks_the_tool_in_fail_closed_mode(
    capture: SpanCapture, home: Path, workdir: Path
) -> None:
    """A slow Akto (PreToolUse checks accepted, never answered) and AKTO_TIMEOUT well
    past a 2 s matcher timeout: the CLI gives up on the PreToolUse callback, and the
    tool must not run. The CLI blocks a timed-out callback today whatever on_failure
    says (see the module docstring): the tool stays blocked unarmed too, and the
    "block" matcher keeps it so if the CLI starts honouring on_failure for timeouts."""
    with _SlowOnPreToolUse() as slow_akto, FakeAnthropic(TOUCH) as fake:
        guard = AktoGuardrails(
            tracer_provider=capture.provider,
            meter_provider=capture.meter_provider,
            ingestion_url=slow_akto.url,
            fail_mode="closed",
            timeout=20.0,
            export_retry_timeout=1.0,
            export_shutdown_timeout=1.0,
        )
        options = guard.instrument(agent_options(fake, home, workdir))
        assert options.hooks is not None
        [matcher] = options.hooks["PreToolUse"]  # type: ignore[index]
        assert matcher.on_failure == "block"
        matcher.timeout = 2
        async for _ in query(prompt="touch it", options=options):
            pass
        assert slow_akto.pre_tool_use_calls >= 1  # the guard was asking when the CLI gave up
        asked, answered = [r for r in fake.records if r.kind == "conversation"]
    assert not (workdir / "marker").exists()
    # The model heard back about the tool call at the matcher timeout, long before the
    # guard's own deny (at AKTO_TIMEOUT, 20 s) could have come: the timeout blocked it.
    assert answered.timestamp - asked.timestamp < 15, answered.timestamp - asked.timestamp
    [result] = [
        block
        for block in answered.body["messages"][-1]["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    assert result.get("is_error") is True


# ------------------------------------------------------------------ the initialize reply


def test_the_initialize_reply_decides_whether_the_guard_is_armed() -> None:
    assert arming_fault(ARMED_REPLY) is None
    assert arming_fault({"hook_on_failure_supported": True}) is None
    assert arming_fault({"commands": []}) == FAULT_ON_FAILURE_UNSUPPORTED  # an old CLI
    assert arming_fault({"hook_on_failure_supported": "yes"}) == FAULT_ON_FAILURE_UNSUPPORTED
    assert arming_fault(None) == FAULT_ON_FAILURE_UNSUPPORTED
    joined = {"hook_on_failure_supported": True, "hooks_applied": False}
    assert arming_fault(joined) == FAULT_HOOKS_NOT_APPLIED


_UNARMED = {
    FAULT_ON_FAILURE_UNSUPPORTED: {"commands": []},
    FAULT_HOOKS_NOT_APPLIED: {**ARMED_REPLY, "hooks_applied": False},
}
_SCRIPT = [("PreToolUse", {"session_id": "s", "tool_name": "Bash", "tool_use_id": "t1"})]


def _unarmed(capture: SpanCapture) -> dict[str, float]:
    return {
        str(p.attributes["fault"]): p.value for p in capture.metric_points("akto.guardrail.unarmed")
    }


@pytest.mark.parametrize("fault", ARMING_FAULTS)
async def test_an_unarmed_cli_refuses_a_fail_closed_session(
    emulator: EmulatorServer, capture: SpanCapture, fault: str
) -> None:
    guard = make_guard(emulator, capture, fail_mode="closed")
    cli = ScriptedCLI(_SCRIPT, initialize_reply=_UNARMED[fault])
    with pytest.raises(AktoNotArmedError) as raised:
        async for _ in guard.query("go", ClaudeAgentOptions(), transport=cli):
            pass
    assert isinstance(raised.value, AktoError)
    assert raised.value.fault == fault
    assert cli.prompts == [] and cli.answers == []  # nothing was sent to the agent
    assert _unarmed(capture)[fault] == 1


@pytest.mark.parametrize("fault", ARMING_FAULTS)
async def test_an_unarmed_cli_in_fail_open_mode_warns_and_counts(
    emulator: EmulatorServer,
    capture: SpanCapture,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    guard = make_guard(emulator, capture, fail_mode="open")
    assert _unarmed(capture) == dict.fromkeys(ARMING_FAULTS, 0)  # started at 0
    cli = ScriptedCLI(_SCRIPT, initialize_reply=_UNARMED[fault])
    with caplog.at_level(logging.WARNING, logger="akto_otel"):
        async for _ in guard.query("go", ClaudeAgentOptions(), transport=cli):
            pass
    assert len(cli.prompts) == 1  # the session ran, as fail-open says
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("AKTO_FAIL_MODE" in r.message for r in warned)
    assert _unarmed(capture)[fault] == 1


async def test_an_armed_cli_starts_a_fail_closed_session_quietly(
    emulator: EmulatorServer, capture: SpanCapture
) -> None:
    guard = make_guard(emulator, capture, fail_mode="closed")
    cli = ScriptedCLI(_SCRIPT)
    async for _ in guard.query("go", ClaudeAgentOptions(), transport=cli):
        pass
    assert len(cli.prompts) == 1
    assert _unarmed(capture) == dict.fromkeys(ARMING_FAULTS, 0)
    assert cli.initialize_request is not None
    sent = cli.initialize_request["hooks"]["PreToolUse"][0]
    assert sent["onFailure"] == "block"


@pytest.mark.parametrize("fault", ARMING_FAULTS)
async def test_instrumented_options_on_an_unarmed_cli_are_refused_by_the_sdk_when_fail_closed(
    emulator: EmulatorServer, capture: SpanCapture, fault: str
) -> None:
    """Without guard.query() (instrument() or session() and the app's own query), the
    guard cannot read the initialize reply; its "block" matchers make the SDK itself
    refuse to connect, before any prompt is sent."""
    from claude_agent_sdk import CLIConnectionError

    guard = make_guard(emulator, capture, fail_mode="closed")
    cli = ScriptedCLI(_SCRIPT, initialize_reply=_UNARMED[fault])
    options = guard.instrument(ClaudeAgentOptions())
    with pytest.raises(CLIConnectionError):
        async for _ in query(prompt="go", options=options, transport=cli):
            pass
    assert cli.prompts == [] and cli.answers == []


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_zero_code_query_reads_the_initialize_reply_too(
    emulator: EmulatorServer,
    capture: SpanCapture,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """Under the zero-code instrumentor an unmodified program's ``query`` gets the
    same check as ``guard.query()``."""
    import claude_agent_sdk

    from akto_otel.config import Settings
    from akto_otel.instrumentation import ClaudeAgentSDKInstrumentor

    instrumentor = ClaudeAgentSDKInstrumentor()
    instrumentor.instrument(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        settings=Settings.from_env({}, ingestion_url=emulator.url, fail_mode=mode, timeout=3.0),
    )
    try:
        cli = ScriptedCLI(_SCRIPT, initialize_reply=_UNARMED[FAULT_HOOKS_NOT_APPLIED])
        with caplog.at_level(logging.WARNING, logger="akto_otel"):
            if mode == "closed":
                with pytest.raises(AktoNotArmedError):
                    async for _ in claude_agent_sdk.query(prompt="go", transport=cli):
                        pass
                assert cli.prompts == []
            else:
                async for _ in claude_agent_sdk.query(prompt="go", transport=cli):
                    pass
                assert len(cli.prompts) == 1
                assert any("AKTO_FAIL_MODE" in r.message for r in caplog.records)
        assert _unarmed(capture)[FAULT_HOOKS_NOT_APPLIED] == 1
    finally:
        instrumentor.uninstrument()
