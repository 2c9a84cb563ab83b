"""The less common hook events through the real CLI: subagents, tool failures,
permission requests, notifications and compaction."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    PermissionResultAllow,
    ToolPermissionContext,
)

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer
from akto_otel.testing import (
    FakeAnthropic,
    Scenario,
    Step,
    Text,
    ToolUse,
    delegation,
    offline_agent_env,
    run_agent,
)
from tests.conftest import SpanCapture

pytestmark = pytest.mark.timeout(120)


def _guard(emulator: EmulatorServer, capture: SpanCapture) -> AktoGuardrails:
    return AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=emulator.url,
        timeout=3.0,
    )


def _children(capture: SpanCapture, parent: Any) -> list[Any]:
    return [
        s
        for s in capture.spans
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


async def test_subagent_span_nests_its_tools_and_guards_its_answer(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenarios = [
        Scenario(
            "Research the repo",
            [
                ToolUse("Bash", {"command": "echo from-subagent"}),
                Text("Found SECRET-TOKEN in config"),
                Text("Nothing sensitive found."),
            ],
        ),
        delegation("delegate", "Research the repo"),
    ]
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenarios) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async with guard.session(options) as guarded:
            await run_agent("please delegate", guarded)
    root = capture.one("invoke_agent claude-agent")
    sub = capture.one("invoke_agent general-purpose")
    assert sub.parent is not None and sub.parent.span_id == root.context.span_id
    assert sub.attributes["gen_ai.agent.id"]
    nested = _children(capture, sub)
    assert [s.name for s in nested if s.name.startswith("execute_tool")] == ["execute_tool Bash"]
    stops = [s for s in nested if s.name == "akto.subagent_stop"]
    # The subagent's first answer leaked a token and was regenerated.
    assert [s.attributes.get("akto.guardrail.decision") for s in stops] == ["deny", "allow"]
    agent_tool = capture.one("execute_tool Agent")
    assert agent_tool.parent is not None and agent_tool.parent.span_id == root.context.span_id
    assert any(r.hook == "SubagentStop" for r in emulator.records)


async def test_tool_failure_ends_the_tool_span_with_an_error(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenario = Scenario(None, [ToolUse("Bash", {"command": "exit 3"}), Text("it failed")])
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async with guard.session(options) as guarded:
            await run_agent("fail", guarded)
    tool = capture.one("execute_tool Bash")
    assert tool.attributes["error.type"] == "tool_error"
    assert any(e.name == "akto.tool.failure" for e in tool.events)


async def test_permission_request_and_notification_spans(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"

    async def slow_approval(
        tool_name: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResultAllow:
        await asyncio.sleep(7)  # the CLI notifies after about 6 s of waiting
        return PermissionResultAllow()

    scenario = Scenario(
        None, [ToolUse("Write", {"file_path": str(outside), "content": "x"}), Text("ok")]
    )
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), can_use_tool=slow_approval
        )
        async with guard.session(options) as guarded:
            await run_agent("write outside", guarded)
    permission = capture.one("akto.permission_request")
    assert permission.attributes["gen_ai.tool.name"] == "Write"
    notification = capture.one("akto.notification")
    assert notification.attributes["akto.notification.type"] == "permission_prompt"


async def test_auto_compaction_is_traced(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    scenario = Scenario(
        None,
        [
            ToolUse("Bash", {"command": "echo one"}),
            Step(text="a very long context", input_tokens=990_000),
            Text("after compaction"),
        ],
    )
    guard = _guard(emulator, capture)
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home),
            cwd=str(workdir),
            allowed_tools=["Bash"],
            max_turns=6,
        )
        async with guard.session(options) as guarded, ClaudeSDKClient(guarded) as client:
            for prompt in ("grow the context", "and again"):
                await client.query(prompt)
                async for _ in client.receive_response():
                    pass
    compact = capture.named("akto.pre_compact")
    assert compact, [s.name for s in capture.spans]
    assert compact[0].attributes["akto.compact.trigger"] == "auto"
