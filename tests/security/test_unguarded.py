"""Never unguarded by accident: a bad setting under zero-code, a missing URL, contradictions."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage

import akto_otel.hooks as hooks_module
from akto_otel import AktoGuardrails
from akto_otel.answers import AnswerLedger
from akto_otel.config import Settings
from akto_otel.emulator import EmulatorServer
from akto_otel.errors import AktoConfigError
from akto_otel.hooks import HOOK_EVENTS
from akto_otel.instrumentation import (
    ClaudeAgentSDKInstrumentor,
    _fail_mode,
    _fallback,
    lockdown_output,
)
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env
from tests.conftest import SpanCapture

pytestmark = pytest.mark.timeout(180)

PROGRAM = """
import asyncio, os
from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query

async def main():
    options = ClaudeAgentOptions(cwd=os.environ["WORKDIR"], allowed_tools=["Bash"])
    async for message in query(prompt="please touch it", options=options):
        if isinstance(message, ResultMessage):
            print("RESULT", message.is_error, message.subtype, message.result)
    print("agent finished")

asyncio.run(main())
"""
SCENARIO = Scenario(None, [ToolUse("Bash", {"command": "touch marker"}), Text("touched")])


def _run_zero_code(
    tmp_path: Path, home: Path, workdir: Path, akto_url: str, extra: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    program = tmp_path / "agent.py"
    program.write_text(textwrap.dedent(PROGRAM))
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    with FakeAnthropic(SCENARIO) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AKTO_"))}
        env.update(offline_agent_env(fake, home))
        env.update(
            {
                "WORKDIR": str(workdir),
                "AKTO_DATA_INGESTION_URL": akto_url,
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                **extra,
            }
        )
        return subprocess.run(
            [str(instrument), sys.executable, str(program)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )


def test_a_bad_setting_in_fail_closed_mode_blocks_the_agent(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    result = _run_zero_code(
        tmp_path,
        home,
        workdir,
        emulator.url,
        {"AKTO_TIMEOUT": "abc", "AKTO_FAIL_MODE": "closed"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "agent finished" in result.stdout
    assert not (workdir / "marker").exists()
    # The app reads why: an error result naming the setting.
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 1 and lines[0].startswith("RESULT True error_guardrail")
    assert "AKTO_TIMEOUT" in lines[0]
    assert "AKTO_TIMEOUT" in result.stderr  # and the operator's log says it too


def test_a_bad_setting_in_fail_open_mode_warns_loudly_once(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    result = _run_zero_code(tmp_path, home, workdir, emulator.url, {"AKTO_TIMEOUT": "abc"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("WITHOUT Akto guardrails") == 1
    assert "AKTO_TIMEOUT" in result.stderr
    assert (workdir / "marker").exists()  # fail open, as configured: it ran, and we said so


@pytest.mark.parametrize("event", ["UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"])
def test_lockdown_denies_every_judging_hook_with_the_setting_named(event: str) -> None:
    ledger = AnswerLedger()
    reason = "akto_otel is misconfigured: AKTO_TIMEOUT='abc' is invalid"
    out = lockdown_output(event, reason, ledger, {"session_id": "s"})
    specific = out.get("hookSpecificOutput", {})
    denied = out.get("continue_") is False or specific.get("permissionDecision") == "deny"
    assert denied
    assert "AKTO_TIMEOUT" in str(out)


def test_lockdown_covers_every_hook_event_without_raising() -> None:
    ledger = AnswerLedger()
    outputs = {event: lockdown_output(event, "r", ledger, None) for event in HOOK_EVENTS}
    assert len(outputs) == len(HOOK_EVENTS)
    judging = {"UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SubagentStop"}
    assert judging <= set(outputs) and all(outputs[e] for e in judging)


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        (None, "open"),
        ("", "open"),
        ("open", "open"),
        (" OPEN ", "open"),
        ("closed", "closed"),
        ("clsoed", "closed"),
        ("no", "closed"),
    ],
)
def test_an_unreadable_fail_mode_counts_as_closed(raw: str | None, mode: str) -> None:
    env = {} if raw is None else {"AKTO_FAIL_MODE": raw}
    assert _fail_mode(env) == mode


def test_a_missing_akto_url_warns_once(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks_module, "_WARNED", set())
    caplog.set_level(logging.WARNING, logger="akto_otel")
    for _ in range(2):
        AktoGuardrails(tracer_provider=capture.provider, ingestion_url="").shutdown()
    warnings = [r for r in caplog.records if "AKTO_DATA_INGESTION_URL" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_observe_mode_with_fail_closed_warns(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks_module, "_WARNED", set())
    caplog.set_level(logging.WARNING, logger="akto_otel")
    AktoGuardrails(
        tracer_provider=capture.provider,
        ingestion_url="http://127.0.0.1:1",
        sync_mode=False,
        fail_mode="closed",
    ).shutdown()
    assert "AKTO_SYNC_MODE=false with AKTO_FAIL_MODE=closed" in caplog.text
    assert "AKTO_DATA_INGESTION_URL" not in caplog.text


def test_a_sound_configuration_warns_nothing(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks_module, "_WARNED", set())
    caplog.set_level(logging.WARNING, logger="akto_otel")
    AktoGuardrails(tracer_provider=capture.provider, ingestion_url="http://127.0.0.1:1").shutdown()
    assert not [r for r in caplog.records if r.name.startswith("akto_otel")]


async def test_a_bad_setting_locks_down_claude_sdk_client_sessions(
    home: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AKTO_TIMEOUT", "abc")
    monkeypatch.setenv("AKTO_FAIL_MODE", "closed")
    instrumentor = ClaudeAgentSDKInstrumentor()
    instrumentor.instrument()
    try:
        assert instrumentor.guard is None  # no guard could be built ...
        with FakeAnthropic(SCENARIO) as fake:
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
            )
            async with ClaudeSDKClient(options) as client:
                await client.query("please touch it")
                messages = [m async for m in client.receive_response()]
            model_calls = len(fake.conversation_requests)
    finally:
        instrumentor.uninstrument()
    assert not (workdir / "marker").exists()  # ... and yet nothing ran
    assert model_calls == 0
    results = [m for m in messages if isinstance(m, ResultMessage)]
    assert len(results) == 1 and results[0].is_error is True
    assert "AKTO_TIMEOUT" in (results[0].result or "")


def test_the_lockdown_reason_shows_no_secret_of_the_bad_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="akto_otel")
    bad = "ftp://akto:" + "PW9" * 6 + "@akto.example"
    with pytest.raises(AktoConfigError) as raised:
        Settings.from_env({"AKTO_DATA_INGESTION_URL": bad})
    lockdown = _fallback(raised.value, {"AKTO_FAIL_MODE": "closed"})
    assert lockdown is not None
    assert "AKTO_DATA_INGESTION_URL" in lockdown.reason and "akto.example" in lockdown.reason
    assert "PW9" not in lockdown.reason and "PW9" not in caplog.text
    assert "AKTO_DATA_INGESTION_URL" in caplog.text
