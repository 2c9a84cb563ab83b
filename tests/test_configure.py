"""configure(): joins the app's pipeline or builds one; never replaces, never doubles.

Each case runs in a fresh interpreter because the global providers can be set once.
"""

from __future__ import annotations

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
