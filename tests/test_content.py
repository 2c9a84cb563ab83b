"""Content stays off telemetry by default; when captured it is truncated and redacted."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer
from akto_otel.redaction import REDACTED, Redactor
from akto_otel.spans import EVENT_CONTENT
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.conftest import LogCapture, SpanCapture

pytestmark = pytest.mark.timeout(120)

SECRETS = {
    "anthropic": "sk-ant-api03-AAAAbbbbCCCCddddEEEEffff",
    "bearer": "Bearer eyJhbGciOi.payloadpart123.signature456",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "url": "https://deploy:hunter2pass@git.example.org/repo.git",
    "email": "alice.secret@example.org",
    "github": "ghp_" + "a1B2c3D4e5" * 4,
    "private_key": (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"
    ),
    "password": "password=Sup3rS3cret!",
}
SECRET_VALUES = [
    "AAAAbbbbCCCCddddEEEEffff",
    "payloadpart123",
    "AKIAIOSFODNN7EXAMPLE",
    "hunter2pass",
    "alice.secret@example.org",
    "a1B2c3D4e5a1B2c3D4e5",
    "MIIEowIBAAKCAQEA7",
    "Sup3rS3cret!",
]
PROMPT_MARK = "PROMPT-MARK-7731"
INPUT_MARK = "INPUT-MARK-4410"
OUTPUT_MARK = "OUTPUT-MARK-9902"
ANSWER_MARK = "ANSWER-MARK-5567"


def _all_text(capture: SpanCapture, logs: LogCapture | None = None) -> str:
    """Every attribute and event attribute of every span (and log record), as one string."""
    parts: list[str] = []
    for record in logs.records if logs is not None else []:
        parts.append(str(record.log_record.event_name))
        parts.extend(f"{k}={v}" for k, v in (record.log_record.attributes or {}).items())
    for span in capture.spans:
        parts.append(span.name)
        parts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            parts.append(event.name)
            parts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    return "\n".join(parts)


async def _session(
    capture: SpanCapture, emulator: EmulatorServer, home: Path, workdir: Path, **settings: Any
) -> AktoGuardrails:
    secrets = " ".join(SECRETS.values())
    scenario = Scenario(
        None,
        [
            ToolUse(
                "Bash", {"command": f"echo {OUTPUT_MARK}", "description": f"{INPUT_MARK} {secrets}"}
            ),
            Text(f"{ANSWER_MARK} {secrets} " + "x" * 5000),
        ],
    )
    guard = AktoGuardrails(
        tracer_provider=capture.provider, ingestion_url=emulator.url, timeout=3.0, **settings
    )
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async with guard.session(options) as guarded:
            await run_agent(f"{PROMPT_MARK} {secrets}", guarded)
    guard.force_flush()
    return guard


async def test_no_content_on_spans_by_default(
    emulator: EmulatorServer,
    capture: SpanCapture,
    content_logs: LogCapture,
    home: Path,
    workdir: Path,
) -> None:
    await _session(capture, emulator, home, workdir)
    text = _all_text(capture, content_logs)
    for mark in (PROMPT_MARK, INPUT_MARK, OUTPUT_MARK, ANSWER_MARK, *SECRET_VALUES):
        assert mark not in text
    # Akto still received the content it judges.
    akto = json.dumps([r.record for r in emulator.records])
    assert PROMPT_MARK in akto and INPUT_MARK in akto and ANSWER_MARK in akto


@pytest.mark.parametrize("mode", ["SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"])
async def test_captured_content_is_truncated_and_redacted(
    emulator: EmulatorServer,
    capture: SpanCapture,
    content_logs: LogCapture,
    home: Path,
    workdir: Path,
    mode: str,
) -> None:
    await _session(capture, emulator, home, workdir, capture_content=mode, capture_max_length=2000)
    text = _all_text(capture, content_logs)
    for mark in (PROMPT_MARK, INPUT_MARK, OUTPUT_MARK, ANSWER_MARK):
        assert mark in text, mark
    for secret in SECRET_VALUES:
        assert secret not in text, secret
    assert REDACTED in text
    stop = capture.one("akto.stop")
    if mode != "EVENT_ONLY":
        answer = str(stop.attributes["gen_ai.output.messages"])
        assert len(answer) < 2100 and "truncated" in answer
        assert "gen_ai.tool.call.arguments" in capture.one("execute_tool Bash").attributes
    else:
        assert "gen_ai.output.messages" not in stop.attributes
    # Events are log records through the global LoggerProvider, in the spans' trace.
    events = content_logs.events(EVENT_CONTENT)
    assert bool(events) is (mode != "SPAN_ONLY")
    assert not any(e.name == EVENT_CONTENT for s in capture.spans for e in s.events)
    trace_ids = {s.context.trace_id for s in capture.spans}
    assert all(e.log_record.trace_id in trace_ids for e in events)
    if mode == "EVENT_ONLY":
        answers = [e for e in events if "gen_ai.output.messages" in (e.log_record.attributes or {})]
        assert answers and all(
            "truncated" in str(e.log_record.attributes["gen_ai.output.messages"]) for e in answers
        )


def test_custom_patterns_and_every_builtin_rule() -> None:
    redactor = Redactor(extra_patterns=(r"ACME-\d{4}",))
    text = " | ".join([*SECRETS.values(), "ticket ACME-1234"])
    out = redactor.redact(text)
    for secret in SECRET_VALUES:
        assert secret not in out
    assert "ACME-1234" not in out
    assert out.count(REDACTED) >= len(SECRETS) + 1
    assert "Bearer [REDACTED]" in out and "https://deploy:[REDACTED]@git.example.org" in out


def test_failed_redaction_drops_the_content() -> None:
    class Broken(Redactor):
        def redact(self, text: str) -> str:
            raise RuntimeError("boom")

    assert Broken().redact_or_none("secret") is None


async def test_log_payloads_redacts_and_never_logs_the_token(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"
    token = "tok-" + "Z9" * 12
    emulator.token = token
    await _session(
        capture,
        emulator,
        home,
        workdir,
        log_dir=str(log_dir),
        log_level="DEBUG",
        log_payloads=True,
        token=token,
    )
    logging.getLogger("akto_otel").setLevel(logging.WARNING)
    content = (log_dir / "akto-agent-sdk.log").read_text()
    assert "request payload" in content and PROMPT_MARK in content
    assert token not in content
    for secret in SECRET_VALUES:
        assert secret not in content
    # The token reached Akto (the emulator enforces it) but nothing else.
    assert emulator.records and all(r.headers["authorization"] == token for r in emulator.records)
