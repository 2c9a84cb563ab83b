"""Zero-code instrumentation through the real CLI: in-process and under opentelemetry-instrument."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import claude_agent_sdk
import pytest
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, HookMatcher

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.emulator import EmulatorServer
from akto_otel.instrumentation import ClaudeAgentSDKInstrumentor
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env
from tests.conftest import SpanCapture
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.timeout(120)
SCENARIO = Scenario(None, [ToolUse("Bash", {"command": "echo instrumented"}), Text("done")])


@pytest.fixture
def instrumentor(
    emulator: EmulatorServer, capture: SpanCapture
) -> Iterator[ClaudeAgentSDKInstrumentor]:
    instrumentor = ClaudeAgentSDKInstrumentor()
    instrumentor.instrument(
        tracer_provider=capture.provider,
        settings=Settings.from_env({}, ingestion_url=emulator.url, timeout=3.0),
    )
    try:
        yield instrumentor
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


async def _run_query(options: ClaudeAgentOptions) -> None:
    # Looked up at call time, the way a program that imported the package sees it.
    async for _ in claude_agent_sdk.query(prompt="go", options=options):
        pass


async def test_query_is_guarded_and_the_callers_options_untouched(
    instrumentor: ClaudeAgentSDKInstrumentor,
    emulator: EmulatorServer,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
) -> None:
    seen: list[str] = []

    async def mine(data: object, tool_use_id: str | None, context: object) -> dict[str, object]:
        seen.append("stop")
        return {}

    with FakeAnthropic(SCENARIO) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home),
            cwd=str(workdir),
            allowed_tools=["Bash"],
            hooks={"Stop": [HookMatcher(hooks=[mine])]},
        )
        for _ in range(3):
            await _run_query(options)
    # The caller's object never accumulates our hooks.
    assert options.hooks is not None
    assert list(options.hooks) == ["Stop"] and len(options.hooks["Stop"]) == 1
    assert seen == ["stop"] * 3
    assert len(capture.named("invoke_agent")) == 3
    assert len(capture.named("execute_tool Bash")) == 3
    assert len(capture.named("akto.stop")) == 3  # one of ours per call, not accumulating
    assert instrumentor.guard is not None
    instrumentor.guard.force_flush()
    assert sum(1 for r in emulator.records if r.hook == "PreToolUse") == 3


async def test_claude_sdk_client_sessions_are_guarded(
    instrumentor: ClaudeAgentSDKInstrumentor, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    with FakeAnthropic(SCENARIO) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async with ClaudeSDKClient(options) as client:
            await client.query("go")
            async for _ in client.receive_response():
                pass
    assert options.hooks is None
    root = capture.one("invoke_agent claude-agent")
    tool = capture.one("execute_tool Bash")
    assert tool.parent is not None and tool.parent.span_id == root.context.span_id


async def test_uninstrument_restores_everything(
    instrumentor: ClaudeAgentSDKInstrumentor, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    wrapped_query = claude_agent_sdk.query
    instrumentor.uninstrument()
    assert claude_agent_sdk.query is not wrapped_query
    assert claude_agent_sdk.query is sys.modules["claude_agent_sdk.query"].query
    before = len(capture.spans)
    with FakeAnthropic(SCENARIO) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        await _run_query(options)
    assert len(capture.spans) == before


def test_instrumentation_dependencies_name_the_sdk() -> None:
    deps = ClaudeAgentSDKInstrumentor().instrumentation_dependencies()
    assert any(d.startswith("claude-agent-sdk") for d in deps)


PROGRAM = """
import asyncio, os
from claude_agent_sdk import ClaudeAgentOptions, query

async def main():
    options = ClaudeAgentOptions(cwd=os.environ["WORKDIR"], allowed_tools=["Bash"])
    async for message in query(prompt="please run it", options=options):
        pass
    print("agent finished")

asyncio.run(main())
"""


def test_opentelemetry_instrument_guards_an_unmodified_program(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path
) -> None:
    program = tmp_path / "agent.py"
    program.write_text(textwrap.dedent(PROGRAM))
    assert "akto_otel" not in program.read_text()
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    with OtlpReceiver() as receiver, FakeAnthropic(SCENARIO) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AKTO_"))}
        env.update(offline_agent_env(fake, home))
        env.update(
            {
                "WORKDIR": str(workdir),
                "AKTO_DATA_INGESTION_URL": emulator.url,
                "OTEL_SERVICE_NAME": "unmodified-agent",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            }
        )
        result = subprocess.run(
            [str(instrument), sys.executable, str(program)],
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
            check=False,
        )
        names = [s["name"] for s in receiver.spans]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "agent finished" in result.stdout
    assert "invoke_agent unmodified-agent" in names
    assert "execute_tool Bash" in names and "akto.user_prompt" in names
    hooks = {r.hook for r in emulator.records}
    assert {"UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"} <= hooks
    trace_ids = {s["trace_id"] for s in receiver.spans if s["name"] != "claude_code.interaction"}
    assert len(trace_ids) == 1


CONFIGURED_PROGRAM = """
import asyncio, os
import akto_otel
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, query

async def main():
    guard = akto_otel.configure()
    base = ClaudeAgentOptions(cwd=os.environ["WORKDIR"], allowed_tools=["Bash"])
    async with guard.session(base) as options:
        async for message in query(prompt="please run it", options=options):
            print(repr(message))
    async with guard.session(base) as options:
        async with ClaudeSDKClient(options) as client:
            await client.query("please run it again")
            async for message in client.receive_response():
                print(repr(message))
    print("agent finished")

asyncio.run(main())
"""
LEAKY = Scenario(
    None,
    [
        ToolUse("Bash", {"command": "echo instrumented"}),
        Text("the key is SECRET-TOKEN"),
        Text("I cannot share that key."),
    ],
)


@pytest.mark.parametrize("spans", ["full", "guard"])
def test_zero_code_with_configure_gives_one_agent_span_per_session_and_holds_answers(
    emulator: EmulatorServer, home: Path, workdir: Path, tmp_path: Path, spans: str
) -> None:
    """A program that calls configure() and guard.session() run under opentelemetry-instrument:
    each session is one invoke_agent span (not the instrumentor's nested in the guard's), its
    tools nest under it, and a denied answer still never reaches the program. With
    ``AKTO_SPANS=guard`` and the CLI's own telemetry on, that one span is the CLI's and the
    guard adds only its guardrail calls."""
    program = tmp_path / "agent.py"
    program.write_text(textwrap.dedent(CONFIGURED_PROGRAM))
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    with OtlpReceiver() as receiver, FakeAnthropic(LEAKY) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AKTO_"))}
        env.update(offline_agent_env(fake, home))
        env.update(
            {
                "WORKDIR": str(workdir),
                "AKTO_DATA_INGESTION_URL": emulator.url,
                "OTEL_SERVICE_NAME": "configured-agent",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "AKTO_SPANS": spans,
            }
        )
        if spans == "guard":
            env.update(CLAUDE_CODE_ENABLE_TELEMETRY="1", CLAUDE_CODE_ENHANCED_TELEMETRY_BETA="1")
        result = subprocess.run(
            [str(instrument), sys.executable, str(program)],
            capture_output=True,
            text=True,
            env=env,
            timeout=110,
            check=False,
        )
        deadline = time.monotonic() + (15 if spans == "guard" else 0)
        while time.monotonic() < deadline and _operations(receiver.spans).count("invoke_agent") < 2:
            time.sleep(0.2)
        received = list(receiver.spans)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "agent finished" in result.stdout
    assert "SECRET-TOKEN" not in result.stdout  # held, then dropped, on both paths
    assert sum(1 for r in emulator.records if r.hook == "PreToolUse") == 2
    if spans == "guard":
        ours = [s for s in received if not s["name"].startswith("claude_code.")]
        assert ours and {s["name"] for s in ours} == {"run_guardrail akto"}
        operations = _operations(received)
        assert operations.count("invoke_agent") == 2, operations  # the CLI's, one a session
        assert operations.count("execute_tool") == 2, operations
        return
    agents = [s for s in received if s["name"].startswith("invoke_agent")]
    assert len(agents) == 2, [(s["name"], s["parent_id"]) for s in agents]
    agent_ids = {s["span_id"] for s in agents}
    assert not any(s["parent_id"] in agent_ids for s in agents)  # none nested in another
    tools = [s for s in received if s["name"] == "execute_tool Bash"]
    assert len(tools) == 2 and all(s["parent_id"] in agent_ids for s in tools)


def _operations(spans: list[dict[str, Any]]) -> list[Any]:
    return [s.get("attributes", {}).get("gen_ai.operation.name") for s in spans]


@pytest.mark.parametrize("made", ["as-given", "copied-by-the-app", "from-hooks"])
async def test_zero_code_keeps_the_apps_guard_for_options_it_instrumented(
    instrumentor: ClaudeAgentSDKInstrumentor,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    made: str,
) -> None:
    """The attack: the app asked for fail-closed (its Akto is down, so every tool call must
    be denied); the zero-code wrapper must not swap its hooks for the instrumentor's
    environment guard (fail open, Akto up, which allows the command), also when the app
    tweaks a copy of the options (``dataclasses.replace``) or builds them with
    ``hooks=guard.hooks()``."""
    marker = workdir / "ran"
    strict = AktoGuardrails(
        tracer_provider=capture.provider,
        ingestion_url="http://127.0.0.1:9",
        fail_mode="closed",
        timeout=1.0,
    )
    scenario = Scenario(None, [ToolUse("Bash", {"command": f"touch {marker}"}), Text("done")])
    with FakeAnthropic(scenario) as fake:
        base = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        if made == "from-hooks":
            options = dataclasses.replace(base, hooks=strict.hooks())  # type: ignore[arg-type]
        else:
            options = strict.instrument(base)
        if made == "copied-by-the-app":
            options = dataclasses.replace(options, max_turns=5)
        await _run_query(options)
    assert not marker.exists()
    agents = capture.named("invoke_agent")
    assert len(agents) == 1 and agents[0].parent is None
