"""Fail-open is loud: a call allowed without a verdict is warned, counted and marked.

Through the real CLI (claude-agent-sdk's bundled CLI, the scripted fake Anthropic
API) with Akto stopped, refusing the token, failing with 5xx, or answering its own
``failOpen``: the tool runs (fail-open), and a WARNING names the hook, the tool and
the fault, ``akto.guardrail.unjudged`` counts it on a series that started at 0, the
tool's span carries ``akto.guardrail.unjudged_call=true``, and the session-start probe
warned before the first tool call. Log records are asserted by their attributes,
never by wording.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions, ResultMessage

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.guardrails import GuardrailClient
from akto_otel.metrics import JUDGING_HOOKS, STARTING_FAULTS
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from akto_otel.unjudged import LOGGER_NAME, UnjudgedRecorder, unjudged_fault
from tests.conftest import TEST_RULES, SpanCapture
from tests.fault_server import FaultServer

pytestmark = pytest.mark.timeout(120)

TOKEN = "right-token-123"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def unjudged(self) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "akto_unjudged", False)]

    def probes(self) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "akto_probe", False)]


@pytest.fixture
def logs() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@contextmanager
def _akto(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """An Akto that cannot judge, and the guard settings that meet it."""
    if kind == "stopped":
        server = EmulatorServer(Policy(TEST_RULES))
        server.start()
        url = server.url
        server.stop()
        yield url, {}
    elif kind == "token_refused":
        with EmulatorServer(Policy(TEST_RULES), token=TOKEN) as server:
            yield server.url, {"token": "wrong-token-456"}
    elif kind == "status_503":
        with FaultServer("status_503") as fault:
            yield fault.url, {}
    elif kind == "akto_fail_open":
        with EmulatorServer(Policy(TEST_RULES), fail_open=True) as server:
            yield server.url, {}
    else:
        raise AssertionError(kind)


#: Akto's state -> (the fault the tool call is recorded with, whether the probe warns).
CASES = {
    "stopped": ("connection_refused", True),
    "token_refused": ("http_401", True),
    "status_503": ("http_5xx", True),
    "akto_fail_open": ("akto_fail_open", False),  # it answers and takes the token
}


def _guard(url: str, capture: SpanCapture, **kw: Any) -> AktoGuardrails:
    return AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=url,
        timeout=2.0,
        export_retry_timeout=0.5,
        export_shutdown_timeout=0.5,
        **kw,
    )


def _unjudged_counts(capture: SpanCapture) -> dict[tuple[str, str], int]:
    return {
        (str(p.attributes["hook"]), str(p.attributes["fault"])): int(p.value)
        for p in capture.metric_points("akto.guardrail.unjudged")
    }


async def _run_bash(guard: AktoGuardrails, home: Path, workdir: Path) -> list[Any]:
    scenario = Scenario(None, [ToolUse("Bash", {"command": "echo ran > ran.txt"}), Text("ok")])
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async with guard.session(options) as guarded:
            messages = await run_agent("go", guarded)
    return messages


@pytest.mark.parametrize("kind", list(CASES))
async def test_a_tool_call_allowed_without_a_verdict_is_warned_counted_and_marked(
    kind: str, capture: SpanCapture, logs: _Records, home: Path, workdir: Path
) -> None:
    fault, probe_warns = CASES[kind]
    with _akto(kind) as (url, settings):
        guard = _guard(url, capture, **settings)
        before = _unjudged_counts(capture)
        messages = await _run_bash(guard, home, workdir)
        guard.shutdown()
    assert isinstance(messages[-1], ResultMessage)
    assert (workdir / "ran.txt").exists()  # fail-open: the tool ran, unjudged

    # The WARNING names the hook, the tool and the fault.
    tool_warnings = [
        r
        for r in logs.unjudged()
        if r.akto_hook == "PreToolUse"  # type: ignore[attr-defined]
    ]
    assert tool_warnings, [r.getMessage() for r in logs.records]
    first = tool_warnings[0]
    assert first.levelno == logging.WARNING
    assert first.akto_tool == "Bash"  # type: ignore[attr-defined]
    assert first.akto_fault == fault  # type: ignore[attr-defined]
    assert first.akto_session_id  # type: ignore[attr-defined]

    # The probe at session start warned before the first tool call did.
    probes = logs.probes()
    if probe_warns:
        assert probes and probes[0].levelno == logging.WARNING
        assert probes[0].akto_fault == fault  # type: ignore[attr-defined]
        assert logs.records.index(probes[0]) < logs.records.index(first)
    else:
        assert probes == []

    # Counted, on a series that existed at 0 before the call.
    after = _unjudged_counts(capture)
    assert after[("PreToolUse", fault)] >= 1
    assert before[("PreToolUse", fault)] == 0

    # The tool's span says so.
    tool = capture.one("execute_tool Bash")
    assert tool.attributes is not None
    assert tool.attributes["akto.guardrail.unjudged_call"] is True
    assert tool.attributes["akto.guardrail.fault"] == fault


async def test_a_fail_closed_guard_records_nothing_unjudged(
    capture: SpanCapture, logs: _Records, home: Path, workdir: Path
) -> None:
    with _akto("stopped") as (url, _):
        guard = _guard(url, capture, fail_mode="closed")
        await _run_bash(guard, home, workdir)
        guard.shutdown()
    assert not (workdir / "ran.txt").exists()  # the prompt was denied: no tool call
    assert logs.unjudged() == []
    assert set(_unjudged_counts(capture).values()) == {0}
    prompt = capture.one("akto.user_prompt")
    assert prompt.attributes is not None
    assert prompt.attributes["akto.guardrail.decision"] == "error"
    assert "akto.guardrail.unjudged_call" not in prompt.attributes
    # The probe still tells that Akto is down, and that calls are denied.
    assert [getattr(r, "akto_fail_mode", None) for r in logs.probes()] == ["closed"]


async def test_a_healthy_akto_gets_no_probe_warning_and_no_unjudged_call(
    emulator: EmulatorServer, capture: SpanCapture, logs: _Records, home: Path, workdir: Path
) -> None:
    guard = _guard(emulator.url, capture)
    await _run_bash(guard, home, workdir)
    guard.shutdown()
    assert (workdir / "ran.txt").exists()
    assert logs.unjudged() == [] and logs.probes() == []
    assert set(_unjudged_counts(capture).values()) == {0}


def test_every_judging_hook_starts_its_unjudged_series_at_zero(capture: SpanCapture) -> None:
    guard = _guard("http://127.0.0.1:9", capture)
    counts = _unjudged_counts(capture)
    for hook in JUDGING_HOOKS:
        for fault in STARTING_FAULTS:
            assert counts[(hook, fault)] == 0, (hook, fault)
    guard.shutdown()


class _BrokenClient(GuardrailClient):
    """A guardrail client with a bug (stands in for any internal error before a
    verdict: no real part fails this way on demand)."""

    async def check(self, record: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug")


async def test_an_internal_error_that_fails_open_is_unjudged(
    capture: SpanCapture, logs: _Records, home: Path, workdir: Path
) -> None:
    guard = AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url="http://127.0.0.1:9",
        export_retry_timeout=0.5,
        export_shutdown_timeout=0.5,
        client=_BrokenClient(Settings(ingestion_url="http://127.0.0.1:9")),
    )
    await _run_bash(guard, home, workdir)
    guard.shutdown()
    assert (workdir / "ran.txt").exists()
    tool_calls = [r for r in logs.unjudged() if r.akto_hook == "PreToolUse"]  # type: ignore[attr-defined]
    assert tool_calls and tool_calls[0].akto_fault == "internal_error"  # type: ignore[attr-defined]
    assert tool_calls[0].akto_tool == "Bash"  # type: ignore[attr-defined]
    assert _unjudged_counts(capture)[("PreToolUse", "internal_error")] >= 1


# ------------------------------------------------------------- the recorder itself


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_warnings_are_rate_limited_but_the_first_per_session_and_fault_is_told(
    capture: SpanCapture, logs: _Records
) -> None:
    from akto_otel.metrics import GuardrailMetrics

    clock = _Clock()
    recorder = UnjudgedRecorder(GuardrailMetrics(capture.meter_provider), clock=clock)
    for _ in range(100):
        recorder.record("PreToolUse", "Bash", "timeout", session_id="s-1")
    first = logs.unjudged()
    # The first of session s-1 at once, the first repeat at once (with its count), then quiet.
    assert 1 <= len(first) <= 2
    recorder.record("PreToolUse", "Bash", "timeout", session_id="s-2")  # a new session
    recorder.record("PreToolUse", "Bash", "http_401", session_id="s-1")  # a new fault
    told = logs.unjudged()[len(first) :]
    assert [(r.akto_session_id, r.akto_fault) for r in told] == [  # type: ignore[attr-defined]
        ("s-2", "timeout"),
        ("s-1", "http_401"),
    ]
    clock.now += 61.0
    recorder.record("PreToolUse", "Bash", "timeout", session_id="s-1")
    last = logs.unjudged()[-1]
    assert last.args and last.args["count"] == 99  # type: ignore[call-overload,index]
    # Every call counted, however many lines were written.
    counts = _unjudged_counts(capture)
    assert counts[("PreToolUse", "timeout")] == 102
    assert counts[("PreToolUse", "http_401")] == 1


@pytest.mark.parametrize(
    ("verdict", "fault"),
    [
        ({"decision": "error", "allowed": True, "fail_open": True, "error": "timeout"}, "timeout"),
        ({"decision": "error", "allowed": False, "fail_open": False, "error": "timeout"}, None),
        (
            {"decision": "error", "allowed": True, "fail_open": True, "error": "akto_fail_open"},
            "akto_fail_open",
        ),
        ({"decision": "allow", "allowed": True}, None),
        ({"decision": "deny", "allowed": False, "fail_open": True}, None),
    ],
)
def test_which_verdicts_are_unjudged(verdict: dict[str, Any], fault: str | None) -> None:
    from akto_otel.contract import Verdict

    assert unjudged_fault(Verdict(**verdict)) == fault


async def test_the_probe_asks_akto_once_and_caches_the_answer() -> None:
    from akto_otel.unjudged import StartupProbe

    clock = _Clock()
    with FaultServer("status_401_html") as server:
        settings = Settings(ingestion_url=server.url, timeout=2.0)
        client = GuardrailClient(settings)
        probe = StartupProbe(client, settings, ttl=300.0, clock=clock)
        first = probe.start()
        assert first is not None
        assert await first == "http_401"
        for _ in range(5):  # more sessions and hooks within the TTL: no new request
            assert probe.pending() is None
        assert server.requests == 1
        clock.now += 301.0  # stale: the next session start asks again
        again = probe.pending()
        assert again is not None and again is not first
        await again
        assert server.requests == 2
        await client.aclose()


def test_the_probe_starts_nothing_without_a_running_loop() -> None:
    from akto_otel.unjudged import StartupProbe

    settings = Settings(ingestion_url="http://127.0.0.1:9")
    assert StartupProbe(GuardrailClient(settings), settings).start() is None
    # Observe mode and no URL: nothing to warn about before a verdict.
    observe = Settings(ingestion_url="http://127.0.0.1:9", sync_mode=False)
    assert not StartupProbe(GuardrailClient(observe), observe).enabled
    assert not StartupProbe(GuardrailClient(Settings()), Settings()).enabled


_NO_REPORTER = r"""
import asyncio, json, logging
from claude_agent_sdk import AssistantMessage, ResultMessage, TextBlock
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from akto_otel.answers import AnswerLedger, hold_answers
from akto_otel.unjudged import LOGGER_NAME

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
told = []
logging.getLogger(LOGGER_NAME).addHandler(type("H", (logging.Handler,), {
    "emit": lambda self, r: told.append(getattr(r, "akto_fault", None))})())

async def judge(text):
    raise RuntimeError("akto down")

async def stream():
    yield AssistantMessage(content=[TextBlock(text="unjudged words")], model="m")
    yield ResultMessage(subtype="success", duration_ms=1, duration_api_ms=1, is_error=False,
                        num_turns=1, session_id="s", result="unjudged words")

async def main():
    return [m async for m in hold_answers(stream(), AnswerLedger(), judge=judge, fail_open=True)]

out = asyncio.run(main())
counts = {}
data = reader.get_metrics_data()
for rm in data.resource_metrics if data is not None else []:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            if m.name == "akto.guardrail.unjudged":
                for p in m.data.data_points:
                    counts[f"{p.attributes['hook']}/{p.attributes['fault']}"] = p.value
print(json.dumps({"delivered": len(out), "counts": counts, "told": told}))
"""


def test_hold_answers_without_a_reporter_still_counts_what_it_delivers_unjudged() -> None:
    """``hold_answers(..., fail_open=True)`` with no ``on_unjudged`` (an app wiring the
    holder itself): a held text delivered without a verdict is counted on the global
    MeterProvider's ``akto.guardrail.unjudged`` and warned, as the guard's own reporter
    does. In a fresh interpreter: the global provider can be set once per process."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _NO_REPORTER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["delivered"] == 2  # fail-open: the text and the result
    assert seen["counts"].get("Stop/RuntimeError") == 1
    assert "RuntimeError" in seen["told"]
