"""configure(): joins the app's pipeline or builds one; never replaces, never doubles.

Each case runs in a fresh interpreter because the global providers can be set once.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from akto_otel.emulator import EmulatorServer
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.timeout(120)


def _run(code: str, env: dict[str, str]) -> str:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AKTO_"))}
    full.update(env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=90,
        env=full,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_keeps_the_apps_provider_and_attaches_once() -> None:
    with EmulatorServer() as akto:
        out = _run(
            """
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            import akto_otel

            mine = TracerProvider()
            trace.set_tracer_provider(mine)
            first = akto_otel.configure()
            second = akto_otel.configure()
            assert first is second
            assert trace.get_tracer_provider() is mine
            assert first.tracer_provider is mine
            processors = mine._active_span_processor._span_processors
            print(sum(type(p).__name__ == "AktoSpanProcessor" for p in processors))
            """,
            {"AKTO_DATA_INGESTION_URL": akto.url},
        )
    assert out.strip() == "1"


def test_builds_an_otlp_pipeline_when_the_app_has_none() -> None:
    with OtlpReceiver() as receiver, EmulatorServer() as akto:
        _run(
            """
            import asyncio
            from opentelemetry import trace
            import akto_otel

            guard = akto_otel.configure()
            assert trace.get_tracer_provider() is guard.tracer_provider
            hooks = guard.hooks()
            data = {"session_id": "s1", "prompt": "hello", "hook_event_name": "UserPromptSubmit"}
            asyncio.run(hooks["UserPromptSubmit"][0].hooks[0](data, None, {}))
            guard.shutdown()
            trace.get_tracer_provider().shutdown()
            """,
            {
                "AKTO_DATA_INGESTION_URL": akto.url,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "my-agent",
            },
        )
        names = {s["name"] for s in receiver.spans}
    assert {"akto.user_prompt", "run_guardrail akto", "invoke_agent my-agent"} <= names


def test_rejects_an_unknown_exporter_name() -> None:
    out = _run(
        """
        import akto_otel
        from akto_otel.errors import AktoConfigError
        try:
            akto_otel.configure()
        except AktoConfigError as exc:
            print(exc)
        """,
        {"OTEL_TRACES_EXPORTER": "zipkinish"},
    )
    assert "OTEL_TRACES_EXPORTER" in out and "otlp, console, none" in out


def test_a_second_configure_with_other_settings_raises_instead_of_ignoring_them() -> None:
    with EmulatorServer() as akto:
        out = _run(
            """
            import akto_otel
            from akto_otel.errors import AktoConfigError

            first = akto_otel.configure()
            assert akto_otel.configure() is first
            assert akto_otel.configure(fail_mode="open") is first   # what it already has
            try:
                akto_otel.configure(fail_mode="closed", timeout=1.0)
            except AktoConfigError as exc:
                print("raised:", exc)
            else:
                print("silently returned fail_mode", first.settings.fail_mode)
            """,
            {"AKTO_DATA_INGESTION_URL": akto.url},
        )
    assert out.startswith("raised:"), out
    assert "fail_mode='closed'" in out and "timeout=1.0" in out


def test_bad_akto_and_otel_values_are_reported_together() -> None:
    out = _run(
        """
        import akto_otel
        from akto_otel.errors import AktoConfigError
        try:
            akto_otel.configure(sync_mode="maybe")
        except AktoConfigError as exc:
            print(sorted(p.name for p in exc.problems))
        """,
        {
            "AKTO_TIMEOUT": "soon",
            "OTEL_TRACES_EXPORTER": "jaeger",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
        },
    )
    assert out.strip() == str(
        sorted(
            [
                "AKTO_TIMEOUT",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_TRACES_EXPORTER",
                "sync_mode (AKTO_SYNC_MODE)",
            ]
        )
    )


def test_exporter_plan_says_what_configure_builds() -> None:
    from akto_otel.configure import PlannedExporter, exporter_plan

    assert exporter_plan({}) == []
    assert exporter_plan({"OTEL_TRACES_EXPORTER": "console,none"}) == [
        PlannedExporter("traces", "console")
    ]
    plan = exporter_plan(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        }
    )
    assert [(p.signal, p.kind, p.protocol) for p in plan] == [
        ("traces", "otlp", "http/protobuf"),
        ("metrics", "otlp", "grpc"),
    ]
    assert all(p.module.startswith("opentelemetry.exporter.otlp.proto.") for p in plan)


def test_content_events_plan_logs_like_traces_never_as_a_requirement() -> None:
    from akto_otel.configure import exporter_plan

    # Content events alone: no endpoint, no logs exporter (nothing sent to a default port).
    assert exporter_plan({}, content_logs=True) == []
    assert exporter_plan({"OTEL_LOGS_EXPORTER": "none"}, content_logs=True) == []
    plan = exporter_plan(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, content_logs=True
    )
    assert [(p.signal, p.kind) for p in plan] == [
        ("traces", "otlp"),
        ("metrics", "otlp"),
        ("logs", "otlp"),
    ]


def test_configure_sends_content_events_through_its_logs_pipeline() -> None:
    with OtlpReceiver() as receiver, EmulatorServer() as akto:
        _run(
            """
            import asyncio
            from opentelemetry import trace
            from opentelemetry._logs import get_logger_provider
            import akto_otel

            guard = akto_otel.configure()
            hooks = guard.hooks()
            data = {"session_id": "s1", "prompt": "CONTENT-MARK-1 AKIAIOSFODNN7EXAMPLE",
                    "hook_event_name": "UserPromptSubmit"}
            asyncio.run(hooks["UserPromptSubmit"][0].hooks[0](data, None, {}))
            guard.shutdown()
            trace.get_tracer_provider().shutdown()
            get_logger_provider().shutdown()
            """,
            {
                "AKTO_DATA_INGESTION_URL": akto.url,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "EVENT_ONLY",
            },
        )
        sent = b"".join(body for _, body, _ in receiver.log_requests)
    assert b"gen_ai.client.inference.operation.details" in sent
    assert b"CONTENT-MARK-1" in sent and b"AKIAIOSFODNN7EXAMPLE" not in sent


def test_exporter_plan_rejects_what_configure_cannot_build() -> None:
    from akto_otel.configure import exporter_plan
    from akto_otel.errors import AktoConfigError

    with pytest.raises(AktoConfigError) as info:
        exporter_plan({"OTEL_TRACES_EXPORTER": "jaeger"})
    assert info.value.name == "OTEL_TRACES_EXPORTER"
    with pytest.raises(AktoConfigError) as info:
        exporter_plan(
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp,zipkin",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift",
            }
        )
    assert [p.name for p in info.value.problems] == [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_METRICS_EXPORTER",
    ]


def test_the_apps_own_processor_is_used_by_configure() -> None:
    with EmulatorServer() as akto:
        out = _run(
            """
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
            import akto_otel
            from akto_otel.processor import find_processors

            mine = TracerProvider()
            processor = akto_otel.AktoSpanProcessor()
            mine.add_span_processor(processor)
            trace.set_tracer_provider(mine)
            guard = akto_otel.configure()
            print(guard.processor is processor, len(find_processors(mine)))
            """,
            {"AKTO_DATA_INGESTION_URL": akto.url},
        )
    assert out.split() == ["True", "1"]


@pytest.mark.parametrize(
    ("env", "says", "never"),
    [
        ({}, "not exported", "localhost"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "printed to stdout", "OTLP"),
        (  # what opentelemetry-distro sets under opentelemetry-instrument
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "localhost:4317, the default",
            "not exported",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp"},
            "localhost:4318/v1/traces, the default",
            "not exported",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw-123@collector:4318"},
            "collector:4318",
            "pw-123",
        ),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "not exported: OTEL_TRACES_EXPORTER", "OTLP ("),
    ],
)
def test_where_spans_go_is_said_plainly(env: dict[str, str], says: str, never: str) -> None:
    from akto_otel.configure import where_spans_go

    message = where_spans_go(env)
    assert says in message and never not in message, message


def test_where_spans_go_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    from akto_otel.configure import tell_where_spans_go

    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    caplog.set_level(logging.WARNING, logger="akto_otel")
    for _ in range(3):
        tell_where_spans_go(env)
    lines = [r.getMessage() for r in caplog.records if "localhost:4317" in r.getMessage()]
    assert len(lines) == 1, lines
