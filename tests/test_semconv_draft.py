"""The draft GenAI guardrail conventions behind OTEL_SEMCONV_STABILITY_OPT_IN, checked
against the draft's own attribute list (tests/fixtures/genai_semconv_draft.json).

With ``gen_ai_latest_experimental`` in the opt-in, the guardrail call is the draft's
``apply_guardrail Akto`` CLIENT span carrying Akto's own ``Allowed`` (never a
generalized allow/deny), with one ``gen_ai.guardrail.result`` event per finding;
without it, today's ``run_guardrail akto``. Every name a real session emits must be
in the draft's list or in a namespace the package owns or uses (``akto.*``,
``error.type``, ``server.*``, ``mcp.*``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from akto_otel import AktoGuardrails, semconv
from akto_otel.config import Settings
from akto_otel.contract import Verdict, parse_verdict
from akto_otel.emulator import EmulatorServer
from akto_otel.redaction import Redactor
from akto_otel.spans import (
    capture_content,
    guardrail_findings,
    guardrail_result_attributes,
    guardrail_source,
    guardrail_span_start,
    record_guardrail_result,
)
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.conftest import LogCapture, SpanCapture

pytestmark = pytest.mark.timeout(120)

DRAFT = json.loads(
    (Path(__file__).parent / "fixtures" / "genai_semconv_draft.json").read_text(encoding="utf-8")
)
APPLY = DRAFT["spans"]["gen_ai.apply_guardrail.client"]
RESULT_EVENT = DRAFT["events"]["gen_ai.guardrail.result"]
IN_MODEL = frozenset(DRAFT["attributes_in_model"])
#: Namespaces the package owns or uses besides the GenAI draft.
OTHER_REGISTRIES = ("akto.", "server.", "mcp.")
OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def _other(name: str) -> bool:
    return name == "error.type" or name.startswith(OTHER_REGISTRIES)


def _gr(**result: Any) -> dict[str, Any]:
    return {"success": True, "data": {"guardrailsResult": result}}


@pytest.fixture
def no_opt_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv(OPT_IN, raising=False)
    monkeypatch.delenv("AKTO_SEMCONV_SECURITY", raising=False)
    yield monkeypatch


def test_the_draft_list_says_where_it_comes_from_and_holds_together() -> None:
    source = DRAFT["source"]
    assert source["repository"] == "open-telemetry/semantic-conventions-genai"
    assert len(source["commit"]) == 40 and source["spans_from"].startswith("model/")
    for span in DRAFT["spans"].values():
        assert set(span["attributes"]) <= IN_MODEL
        assert set(span["attributes"].values()) <= {
            "required",
            "conditionally_required",
            "recommended",
            "opt_in",
        }
    assert set(RESULT_EVENT["attributes"]) <= IN_MODEL
    assert set(RESULT_EVENT["types"]) == set(RESULT_EVENT["attributes"])
    assert set(APPLY["at_creation"]) <= set(APPLY["attributes"])
    # The names semconv.py spells for the draft are the draft's.
    drafted = {v for k, v in vars(semconv).items() if k.startswith("GEN_AI_GUARDRAIL_")}
    assert drafted <= IN_MODEL


# --- the opt-in ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "on"),
    [
        ("gen_ai_latest_experimental", True),
        ("http, gen_ai_latest_experimental ,database", True),
        ("http/dup,gen_ai_latest_experimental", True),
        ("gen_ai", False),
        ("http", False),
        ("GEN_AI_LATEST_EXPERIMENTAL", False),  # contrib matches exactly
        ("gen_ai_latest_experimental/dup", False),
        ("true", False),  # a list of modes, not a boolean
    ],
)
def test_the_opt_in_is_read_as_the_contrib_instrumentations_read_it(raw: str, on: bool) -> None:
    assert Settings.from_env({OPT_IN: raw}).semconv_security is on


def test_the_old_switch_is_folded_in_and_told(caplog: pytest.LogCaptureFixture) -> None:
    assert Settings.from_env({}).semconv_security is False
    with caplog.at_level(logging.WARNING, logger="akto_otel.config"):
        assert Settings.from_env({"AKTO_SEMCONV_SECURITY": "true"}).semconv_security is True
    assert OPT_IN in caplog.text and "deprecated" in caplog.text
    # The standard variable wins over the old one, and the argument over both.
    env = {OPT_IN: "http", "AKTO_SEMCONV_SECURITY": "true"}
    assert Settings.from_env(env).semconv_security is False
    assert Settings.from_env(env, semconv_security=True).semconv_security is True
    assert Settings.from_env({OPT_IN: "gen_ai_latest_experimental"}, semconv_security="false")
    assert Settings.environment_variables()["semconv_security"] == (
        OPT_IN,
        "AKTO_SEMCONV_SECURITY",
    )


# --- the pure mapping ------------------------------------------------------------

DENY = parse_verdict(
    _gr(
        Allowed=False,
        Reason="rm -rf /home/alice is destructive",
        behaviour="block",
        Metadata={"policy_name": "destructive", "rule_violated": "rm-rf", "severity": "HIGH"},
    )
)
WARN = parse_verdict(
    _gr(Allowed="false", Reason="Reads secrets", behaviour="warn", Metadata={"policy_name": "env"})
)
ALLOW = parse_verdict(_gr(Allowed=True, Reason="", behaviour="", Metadata={}))
MASK = parse_verdict(
    _gr(
        Allowed=True,
        Modified=True,
        ModifiedPayload="{}",
        behaviour="",
        Metadata={"policy_name": "pii", "rule_violated": "email"},
    )
)
FAILED = Verdict.failure("timeout", fail_closed=True)
NOT_RUN = parse_verdict({"success": True, "data": {}})


def test_akto_allowed_is_kept_as_akto_sent_it_and_never_decides() -> None:
    assert (DENY.akto_allowed, WARN.akto_allowed, ALLOW.akto_allowed) == (False, False, True)
    assert MASK.akto_allowed is True and FAILED.akto_allowed is None
    assert NOT_RUN.akto_allowed is None
    # Unreadable Allowed next to a blocking behaviour: a deny, and no value to report.
    unreadable = parse_verdict(_gr(Allowed="maybe", behaviour="block"))
    assert (unreadable.decision, unreadable.akto_allowed) == ("deny", None)
    # Telemetry only: verdicts compare as before.
    expected = Verdict(
        decision="warn", allowed=True, behaviour="warn", reason="Reads secrets", policy_name="env"
    )
    assert expected == WARN


def test_the_overall_result_is_akto_s_allowed_never_the_hook_s_decision() -> None:
    def result(v: Verdict) -> tuple[str, str] | None:
        attributes = guardrail_result_attributes(v)
        if not attributes:
            return None
        return (
            attributes["gen_ai.guardrail.result.type"],
            attributes["gen_ai.guardrail.result.value"],
        )

    assert result(DENY) == ("Allowed", "false")
    # The hook lets a warn pass (akto.guardrail.decision=warn); Akto said Allowed: false.
    assert WARN.allowed is True and result(WARN) == ("Allowed", "false")
    assert result(ALLOW) == ("Allowed", "true")
    assert result(MASK) == ("Allowed", "true")
    assert result(FAILED) is None and result(NOT_RUN) is None
    for v in (DENY, WARN, ALLOW, MASK):
        assert set(guardrail_result_attributes(v).values()) <= {"Allowed", "true", "false"}


def test_one_result_event_per_finding_with_akto_s_own_values() -> None:
    (event,) = guardrail_findings(DENY, request=True, response=False)
    assert event == {
        "gen_ai.guardrail.component.name": "Akto",
        "gen_ai.provider.name": "akto",
        "gen_ai.guardrail.source": "request",
        "gen_ai.guardrail.result.type": "behaviour",
        "gen_ai.guardrail.result.value": "block",
        "gen_ai.guardrail.policy.id": "destructive",
        "gen_ai.guardrail.policy.rule.id": "rm-rf",
        "akto.guardrail.severity": "HIGH",
    }
    # Akto's free-text Reason may quote the content judged: never in the draft's reason.
    assert "gen_ai.guardrail.result.reason" not in event
    (warned,) = guardrail_findings(WARN, request=False, response=True)
    assert warned["gen_ai.guardrail.result.value"] == "warn"
    assert warned["gen_ai.guardrail.source"] == "response"
    (masked,) = guardrail_findings(MASK)
    assert "gen_ai.guardrail.result.type" not in masked  # Akto gave no behaviour
    assert masked["gen_ai.guardrail.policy.rule.id"] == "email"
    assert guardrail_findings(ALLOW) == []
    assert guardrail_findings(FAILED) == [] and guardrail_findings(NOT_RUN) == []
    for e in guardrail_findings(DENY) + guardrail_findings(WARN) + guardrail_findings(MASK):
        for name, value in e.items():
            assert name in RESULT_EVENT["attributes"] or name.startswith("akto."), name
            if name in RESULT_EVENT["types"]:
                assert RESULT_EVENT["types"][name] in ("string", "any")
                assert isinstance(value, str)


def test_source_is_akto_s_side_term() -> None:
    assert guardrail_source(request=True, response=False) == "request"
    assert guardrail_source(request=False, response=True) == "response"
    assert guardrail_source(request=True, response=True) is None


def test_span_start_per_settings() -> None:
    server = {"server.address": "akto.example", "server.port": 443}
    extra = {"akto.guardrail.windows": 3}
    on = guardrail_span_start(
        Settings(semconv_security=True), "PreToolUse", server=server, extra=extra
    )
    assert (
        on.name
        == "apply_guardrail Akto"
        == APPLY["name"].replace("{gen_ai.guardrail.component.name}", "Akto")
    )
    assert on.kind is SpanKind.CLIENT and APPLY["kind"] == "CLIENT"
    for name in APPLY["at_creation"]:
        assert name in on.attributes, name
    assert on.attributes["gen_ai.operation.name"] == APPLY["operation_name"]
    assert on.attributes["gen_ai.provider.name"] == "akto"
    assert on.attributes["gen_ai.guardrail.component.name"] == "Akto"
    assert on.attributes["gen_ai.guardrail.source"] == "request"
    assert on.attributes["akto.hook"] == "PreToolUse"
    assert on.attributes["akto.guardrail.windows"] == 3
    for name in on.attributes:
        assert name in APPLY["attributes"] or name.startswith("akto."), name
    off = guardrail_span_start(Settings(), "Stop", response=True, request=False, server=server)
    assert off.name == "run_guardrail akto" and off.kind is SpanKind.CLIENT
    assert off.attributes["gen_ai.operation.name"] == "run_guardrail"
    assert off.attributes["http.request.method"] == "POST"
    assert not any(k.startswith("gen_ai.guardrail.") for k in off.attributes)
    assert "gen_ai.provider.name" not in off.attributes


def _recorded(verdict: Verdict, settings: Settings, *, own_span: bool = True) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s")
    record_guardrail_result(span, verdict, settings, own_span=own_span)
    span.end()
    (done,) = exporter.get_finished_spans()
    return done


def test_recording_a_verdict_on_the_call_span() -> None:
    on = Settings(semconv_security=True)
    span = _recorded(WARN, on)
    assert span.attributes is not None
    assert span.attributes["akto.guardrail.decision"] == "warn"
    assert span.attributes["gen_ai.guardrail.result.value"] == "false"
    (event,) = span.events
    assert event.name == "gen_ai.guardrail.result" == semconv.EVENT_GUARDRAIL_RESULT
    failed = _recorded(FAILED, on)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "timeout"
    assert not any(k.startswith("gen_ai.guardrail.result") for k in failed.attributes)
    assert failed.events == ()
    # Without the opt-in: today's decision and error, no draft names.
    off = _recorded(DENY, Settings())
    assert off.attributes is not None and off.attributes["akto.guardrail.decision"] == "deny"
    assert not any(k.startswith("gen_ai.") for k in off.attributes) and off.events == ()
    # With AKTO_GUARDRAIL_SPANS=false, the hook's span gets the findings, not the result.
    hook = _recorded(DENY, on, own_span=False)
    assert hook.attributes is not None and "akto.guardrail.decision" not in hook.attributes
    assert "gen_ai.guardrail.result.type" not in hook.attributes
    assert [e.name for e in hook.events] == ["gen_ai.guardrail.result"]


# --- content as log events -------------------------------------------------------------


def test_content_events_are_log_records_redacted_like_span_content(
    content_logs: LogCapture,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    secret = "AKIAIOSFODNN7EXAMPLE"
    for mode, events in (
        ("NO_CONTENT", 0),
        ("SPAN_ONLY", 0),
        ("EVENT_ONLY", 1),
        ("SPAN_AND_EVENT", 1),
    ):
        settings = Settings(capture_content=mode)
        span = provider.get_tracer("t").start_span(mode)
        capture_content(span, "gen_ai.tool.call.arguments", {"k": secret}, settings, Redactor())
        span.end()
        found = [
            r
            for r in content_logs.events(semconv.EVENT_CONTENT)
            if r.log_record.span_id == span.get_span_context().span_id
        ]
        assert len(found) == events, mode
        for record in found:
            text = str(record.log_record.attributes["gen_ai.tool.call.arguments"])
            assert secret not in text and "[REDACTED]" in text
            assert record.log_record.trace_id == span.get_span_context().trace_id
            assert record.instrumentation_scope is not None
            assert record.instrumentation_scope.name == "akto_otel"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert "gen_ai.tool.call.arguments" in (spans["SPAN_AND_EVENT"].attributes or {})
    assert "gen_ai.tool.call.arguments" not in (spans["EVENT_ONLY"].attributes or {})
    assert all(not s.events for s in spans.values())  # no span events any more


@pytest.mark.parametrize("raw", ["true", "True", "1", "yes"])
def test_the_otel_capture_variable_never_turns_content_on_for_a_boolean(raw: str) -> None:
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": raw}
    assert Settings.from_env(env).capture_content == "NO_CONTENT"


# --- a real guarded session ----------------------------------------------------------


async def _session(
    capture: SpanCapture, emulator: EmulatorServer, home: Path, workdir: Path, **kw: Any
) -> Path:
    victim = workdir / "victim"
    victim.mkdir()
    scenario = Scenario(
        None,
        [
            ToolUse("Bash", {"command": f"rm -rf {victim}"}),
            ToolUse("Bash", {"command": "echo fine"}),
            Text("done"),
        ],
    )
    guard = AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=emulator.url,
        timeout=3.0,
        **kw,
    )
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async with guard.session(options) as guarded:
            await run_agent("clean up", guarded)
    guard.force_flush()
    return victim


def _names(attributes: Any) -> set[str]:
    return set(attributes or {})


#: Every name the package spells: all of them live in akto_otel/semconv.py.
DECLARED = frozenset(v for k, v in vars(semconv).items() if k.isupper() and isinstance(v, str))


def _session_names(capture: SpanCapture, logs: LogCapture | None = None) -> set[str]:
    seen: set[str] = set()
    for span in capture.spans:
        seen |= _names(span.attributes) | {e.name for e in span.events}
        for event in span.events:
            seen |= _names(event.attributes)
    for record in logs.records if logs is not None else []:
        seen |= _names(record.log_record.attributes) | {str(record.log_record.event_name)}
    return seen


async def test_a_real_session_with_the_opt_in_emits_the_draft(
    emulator: EmulatorServer,
    capture: SpanCapture,
    content_logs: LogCapture,
    home: Path,
    workdir: Path,
    no_opt_in: pytest.MonkeyPatch,
) -> None:
    no_opt_in.setenv(OPT_IN, "http, gen_ai_latest_experimental")
    victim = await _session(capture, emulator, home, workdir, capture_content="EVENT_ONLY")
    assert victim.exists(), "the denied command ran"
    assert capture.named("run_guardrail") == []
    calls = capture.named("apply_guardrail")
    assert {s.attributes["akto.hook"] for s in calls if s.attributes} >= {
        "UserPromptSubmit",
        "PreToolUse",
        "Stop",
    }
    for call in calls:
        attributes = call.attributes or {}
        assert call.name == "apply_guardrail Akto" and call.kind is SpanKind.CLIENT
        for name in attributes:
            assert name in APPLY["attributes"] or name.startswith("akto."), name
        for name, level in APPLY["attributes"].items():
            if level == "required":
                assert name in attributes, name
        assert attributes["gen_ai.operation.name"] == "apply_guardrail"
        assert attributes["gen_ai.provider.name"] == "akto"
        assert attributes["server.port"] == emulator.port
        # Akto's own field and value, never a generalized verdict.
        assert attributes["gen_ai.guardrail.result.type"] == "Allowed"
        assert attributes["gen_ai.guardrail.result.value"] in ("true", "false")
        for event in call.events:
            assert event.name == "gen_ai.guardrail.result"
            for name in _names(event.attributes):
                assert name in RESULT_EVENT["attributes"] or name.startswith("akto."), name
    denied = [c for c in calls if (c.attributes or {}).get("akto.guardrail.decision") == "deny"]
    assert len(denied) == 1
    deny = denied[0].attributes or {}
    assert deny["gen_ai.guardrail.result.value"] == "false"
    assert deny["gen_ai.guardrail.source"] == "request"
    (finding,) = denied[0].events
    assert dict(finding.attributes or {}) == {
        "gen_ai.guardrail.component.name": "Akto",
        "gen_ai.provider.name": "akto",
        "gen_ai.guardrail.source": "request",
        "gen_ai.guardrail.result.type": "behaviour",
        "gen_ai.guardrail.result.value": "block",
        "gen_ai.guardrail.policy.id": "rm-rf",
        "gen_ai.guardrail.policy.rule.id": "rm-rf",
        "akto.guardrail.severity": "HIGH",
    }
    stop = next(c for c in calls if (c.attributes or {}).get("akto.hook") == "Stop")
    assert (stop.attributes or {})["gen_ai.guardrail.source"] == "response"
    allowed = [c for c in calls if (c.attributes or {}).get("akto.guardrail.decision") == "allow"]
    assert allowed and all(not c.events for c in allowed)  # no finding, no event
    # Every name of every span, span event and content log event of the session.
    assert content_logs.events(semconv.EVENT_CONTENT), "EVENT_ONLY emitted no log event"
    attributes: set[str] = set()
    for span in capture.spans:
        attributes |= _names(span.attributes)
        for event in span.events:
            attributes |= _names(event.attributes)
    for record in content_logs.records:
        attributes |= _names(record.log_record.attributes)
    unknown = {n for n in attributes if n not in IN_MODEL and not _other(n)}
    assert not unknown, f"names in neither the draft nor the package's namespaces: {unknown}"
    event_names = {e.name for s in capture.spans for e in s.events}
    assert {n for n in event_names if not n.startswith("akto.")} == {"gen_ai.guardrail.result"}
    # ... and each one is spelled in akto_otel/semconv.py, the one place names live.
    assert _session_names(capture, content_logs) <= DECLARED


async def test_a_real_session_without_the_opt_in_keeps_today_s_names(
    emulator: EmulatorServer,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    no_opt_in: pytest.MonkeyPatch,
) -> None:
    victim = await _session(capture, emulator, home, workdir)
    assert victim.exists(), "the denied command ran"
    assert capture.named("apply_guardrail") == []
    calls = capture.named("run_guardrail")
    assert calls and all(c.name == "run_guardrail akto" for c in calls)
    for call in calls:
        attributes = call.attributes or {}
        assert attributes["gen_ai.operation.name"] == "run_guardrail"
        assert not any(k.startswith("gen_ai.guardrail.") for k in attributes)
        assert "gen_ai.provider.name" not in attributes
        assert not any(e.name == "gen_ai.guardrail.result" for e in call.events)
    assert any((c.attributes or {}).get("akto.guardrail.decision") == "deny" for c in calls)
    assert _session_names(capture) <= DECLARED
