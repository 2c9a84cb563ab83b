"""Secrets stay out of the agent, the telemetry and the logs.

The attack: the scripted model asks Bash for the Akto token (``printenv``, ``env``).
The CLI inherits the Python process's environment, so without the guard's
blanking the token lands in the next model request, the PostToolUse record
Akto receives and the tool span.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import claude_agent_sdk
import pytest
from claude_agent_sdk import ClaudeAgentOptions

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.emulator import EmulatorServer
from akto_otel.errors import AktoConfigError
from akto_otel.guardrails import GuardrailClient
from akto_otel.instrumentation import ClaudeAgentSDKInstrumentor
from akto_otel.redaction import (
    Redactor,
    agent_env_overrides,
    redact_url,
    url_without_credentials,
)
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.conftest import LogCapture, SpanCapture

pytestmark = pytest.mark.timeout(120)

TOKEN = "akto-token-" + "Z9" * 12
ALT_TOKEN = "akto-alt-" + "K3" * 12
URL_PASSWORD = "urlpw" + "X4" * 8
ATTACK = Scenario(
    None,
    [
        ToolUse("Bash", {"command": "printenv AKTO_API_TOKEN AKTO_TOKEN AKTO_DATA_INGESTION_URL"}),
        ToolUse("Bash", {"command": "env"}),
        Text("Here is what I found."),
    ],
)
SECRETS = (TOKEN, ALT_TOKEN, URL_PASSWORD)


def _span_text(capture: SpanCapture, logs: LogCapture | None = None) -> str:
    """Every span, span event and (content) log record, as text."""
    records = logs.records if logs is not None else []
    return "\n".join(
        [
            f"{s.name} {dict(s.attributes or {})} "
            f"{[(e.name, dict(e.attributes or {})) for e in s.events]}"
            for s in capture.spans
        ]
        + [f"{r.log_record.event_name} {dict(r.log_record.attributes or {})}" for r in records]
    )


#: The two credential forms (a token, or user:password in the URL): never both at
#: once, which the settings refuse (tests/test_credentials.py).
CREDENTIAL_FORMS = pytest.mark.parametrize("form", ["token", "url-password"])


def _set_secrets(monkeypatch: pytest.MonkeyPatch, url: str, form: str) -> None:
    host = url.split("://", 1)[1]
    if form == "token":
        monkeypatch.setenv("AKTO_API_TOKEN", TOKEN)
        monkeypatch.setenv("AKTO_TOKEN", ALT_TOKEN)
        monkeypatch.setenv("AKTO_DATA_INGESTION_URL", url)
    else:
        monkeypatch.setenv("AKTO_DATA_INGESTION_URL", f"http://akto:{URL_PASSWORD}@{host}")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_AND_EVENT")


@CREDENTIAL_FORMS
async def test_agent_cannot_read_the_akto_token(
    form: str,
    emulator: EmulatorServer,
    capture: SpanCapture,
    content_logs: LogCapture,
    home: Path,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set_secrets(monkeypatch, emulator.url, form)
    guard = AktoGuardrails(tracer_provider=capture.provider, timeout=3.0)
    with FakeAnthropic(ATTACK) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async with guard.session(options) as guarded:
            await run_agent("look around", guarded)
        requests = json.dumps(fake.conversation_requests)
    guard.force_flush()
    # The attack ran: both commands' output went back to the model.
    assert "AKTO_DATA_INGESTION_URL=http://127.0.0.1:" in requests
    assert "AKTO_API_TOKEN=" in requests
    results = [r for r in emulator.records if r.hook == "PostToolUse"]
    assert len(results) == 2
    spans = _span_text(capture, content_logs)
    assert "gen_ai.tool.call.result" in spans
    assert content_logs.events("gen_ai.client.inference.operation.details")
    for secret in SECRETS:
        assert secret not in requests
        assert all(secret not in json.dumps(r.record) for r in results)
        assert secret not in spans
    guard.shutdown()


@CREDENTIAL_FORMS
async def test_zero_code_query_hides_the_token(
    form: str,
    emulator: EmulatorServer,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set_secrets(monkeypatch, emulator.url, form)
    instrumentor = ClaudeAgentSDKInstrumentor()
    instrumentor.instrument(tracer_provider=capture.provider)
    try:
        with FakeAnthropic(ATTACK) as fake:
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
            )
            async for _ in claude_agent_sdk.query(prompt="look around", options=options):
                pass
            requests = json.dumps(fake.conversation_requests)
    finally:
        instrumentor.uninstrument()
    assert "printenv" in requests
    for secret in SECRETS:
        assert secret not in requests


def test_every_guarded_options_path_blanks_the_secrets(
    capture: SpanCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AKTO_API_TOKEN", TOKEN)
    guard = AktoGuardrails(
        tracer_provider=capture.provider, ingestion_url="http://127.0.0.1:1", token=TOKEN
    )
    mine = ClaudeAgentOptions(env={"KEEP": "1"})
    handle = guard.open_session(mine)
    for options in (guard.instrument(mine), handle.options):
        assert options.env["AKTO_API_TOKEN"] == "" and options.env["AKTO_TOKEN"] == ""
        assert options.env["KEEP"] == "1"
    handle.close()
    assert "AKTO_API_TOKEN" not in mine.env  # the caller's object is untouched
    guard.shutdown()


def test_a_token_the_app_passes_on_purpose_is_kept() -> None:
    app_env = {"AKTO_API_TOKEN": "for-the-agent"}
    overrides = agent_env_overrides({"AKTO_API_TOKEN": TOKEN}, app_env)
    assert "AKTO_API_TOKEN" not in overrides and overrides["AKTO_TOKEN"] == ""
    overrides = agent_env_overrides(
        {"AKTO_DATA_INGESTION_URL": f"https://u:{URL_PASSWORD}@akto.example:8443"}, {}
    )
    assert overrides["AKTO_DATA_INGESTION_URL"] == "https://akto.example:8443"
    assert "AKTO_DATA_INGESTION_URL" not in agent_env_overrides(
        {"AKTO_DATA_INGESTION_URL": "https://akto.example"}, {}
    )


def test_redact_url_keeps_the_user_and_hides_the_password() -> None:
    assert redact_url("https://akto:pw@h:1/x") == "https://akto:***@h:1/x"
    assert redact_url("http://akto:Zq@[::1") == "http://akto:***@[::1"  # not even valid
    assert redact_url("https://h/x") == "https://h/x"


def test_url_without_credentials() -> None:
    assert url_without_credentials("https://u:p@h:1/x") == "https://h:1/x"
    assert url_without_credentials("https://h/x") == "https://h/x"
    assert url_without_credentials("https://only-user@h") == "https://h"


class _BrokenRedactor(Redactor):
    def redact(self, text: str) -> str:
        raise RuntimeError("redactor bug")


async def test_a_redactor_that_raises_drops_the_content_from_the_span(
    emulator: EmulatorServer, capture: SpanCapture
) -> None:
    guard = AktoGuardrails(
        tracer_provider=capture.provider,
        ingestion_url=emulator.url,
        capture_content="SPAN_AND_EVENT",
    )
    guard.redactor = _BrokenRedactor()
    hooks = {e: m[0].hooks[0] for e, m in guard.hooks().items()}
    secret_prompt = f"my key is {TOKEN}"
    await hooks["UserPromptSubmit"]({"session_id": "s", "prompt": secret_prompt}, None, {})
    await hooks["PreToolUse"](
        {"session_id": "s", "tool_name": "Bash", "tool_input": {"command": f"echo {TOKEN}"}},
        "t1",
        {},
    )
    prompt_span = capture.one("akto.user_prompt")
    assert prompt_span.attributes is not None
    assert prompt_span.attributes.get("akto.content.dropped") is True
    # The prompt was still judged: dropping content never skips the guardrail.
    assert prompt_span.attributes.get("akto.guardrail.decision") == "allow"
    assert TOKEN not in _span_text(capture)
    guard.shutdown()


def test_a_password_in_the_akto_url_is_never_shown(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="akto_otel")
    url = f"http://akto:{URL_PASSWORD}@127.0.0.1:1"
    settings = Settings.from_env({"AKTO_DATA_INGESTION_URL": url})
    guard = AktoGuardrails(settings, tracer_provider=capture.provider, timeout=0.5)
    shown = [repr(settings), str(settings), repr(GuardrailClient(settings)), repr(guard.client)]
    doctor = subprocess.run(
        [sys.executable, "-m", "akto_otel.cli", "doctor"],
        capture_output=True,
        text=True,
        env={"AKTO_DATA_INGESTION_URL": url, "AKTO_TIMEOUT": "0.5", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    everything = "\n".join([*shown, doctor.stdout, doctor.stderr, caplog.text])
    assert "127.0.0.1:1" in doctor.stdout  # the URL is shown, its password is not
    assert URL_PASSWORD not in everything
    guard.shutdown()


async def test_the_guardrail_failure_log_hides_the_url_password(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="akto_otel")
    guard = AktoGuardrails(
        tracer_provider=capture.provider,
        ingestion_url=f"http://akto:{URL_PASSWORD}@127.0.0.1:1",
        timeout=0.5,
    )
    hooks = {e: m[0].hooks[0] for e, m in guard.hooks().items()}
    out: Any = await hooks["UserPromptSubmit"]({"session_id": "s", "prompt": "hi"}, None, {})
    assert isinstance(out, dict)
    assert "failed" in caplog.text  # the failure was logged ...
    assert URL_PASSWORD not in caplog.text  # ... without the password
    guard.shutdown()


def test_a_bad_akto_url_with_a_password_is_reported_without_it() -> None:
    bad = f"http://akto:{URL_PASSWORD}@127.0.0.1:1/?q=1"
    with pytest.raises(AktoConfigError) as raised:
        Settings.from_env({"AKTO_DATA_INGESTION_URL": bad})
    assert "AKTO_DATA_INGESTION_URL" in str(raised.value)
    assert URL_PASSWORD not in str(raised.value)
    doctor = subprocess.run(
        [sys.executable, "-m", "akto_otel.cli", "doctor"],
        capture_output=True,
        text=True,
        env={"AKTO_DATA_INGESTION_URL": bad, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert doctor.returncode == 2  # doctor's exit code for an invalid setting
    assert "AKTO_DATA_INGESTION_URL" in doctor.stdout + doctor.stderr
    assert URL_PASSWORD not in doctor.stdout + doctor.stderr
