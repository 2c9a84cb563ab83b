"""Canary for the Claude Agent SDK hook protocol that akto_otel depends on.

A new ``claude-agent-sdk`` release (and the CLI it bundles) can rename a hook
event, drop an input key, or stop honouring an output key. Each check here fails
with one message naming the SDK and CLI versions and the part of the protocol that
changed, instead of an obscure assertion deep in another test.

The live checks drive the real bundled CLI with plain hook callbacks (no
akto_otel code in the loop), so they test the SDK's behaviour, not ours.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import claude_agent_sdk
import pytest
from claude_agent_sdk import ClaudeAgentOptions, HookMatcher
from opentelemetry.sdk.trace import TracerProvider

from akto_otel.hooks import HOOK_EVENTS
from akto_otel.testing import (
    FakeAnthropic,
    Scenario,
    Text,
    ToolUse,
    message_text,
    offline_agent_env,
    run_agent,
)

_BUNDLED = Path(claude_agent_sdk.__file__).parent / "_bundled"
needs_cli = pytest.mark.skipif(
    not (_BUNDLED / "claude").exists(), reason="bundled Claude CLI missing"
)

#: Input keys the hooks read, per event. Checked on what the live CLI sends (the
#: SDK's TypedDicts have lagged behind the CLI: 0.2.150 declares no
#: ``last_assistant_message`` on Stop although the CLI sends it); the live session
#: below covers the four judging events, tests/test_hooks_events.py the others.
INPUT_KEYS: dict[str, set[str]] = {
    "UserPromptSubmit": {"session_id", "prompt", "prompt_id"},
    "PreToolUse": {"session_id", "tool_name", "tool_input", "tool_use_id"},
    "PostToolUse": {"session_id", "tool_name", "tool_input", "tool_response", "tool_use_id"},
    "PostToolUseFailure": {"session_id", "tool_name", "tool_use_id", "error"},
    "Stop": {"session_id", "stop_hook_active", "last_assistant_message"},
    "SubagentStart": {"session_id", "agent_id", "agent_type"},
    "SubagentStop": {"session_id", "agent_id", "stop_hook_active", "last_assistant_message"},
    "PreCompact": {"session_id", "trigger"},
    "Notification": {"session_id", "notification_type"},
    "PermissionRequest": {"session_id", "tool_name"},
}
#: Output keys the hooks write, per TypedDict of claude_agent_sdk.types.
OUTPUT_KEYS: dict[str, set[str]] = {
    "SyncHookJSONOutput": {"continue_", "stopReason", "decision", "systemMessage", "reason"},
    "PreToolUseHookSpecificOutput": {
        "hookEventName",
        "permissionDecision",
        "permissionDecisionReason",
        "updatedInput",
    },
    "PostToolUseHookSpecificOutput": {
        "hookEventName",
        "additionalContext",
        "updatedToolOutput",
        "updatedMCPToolOutput",
    },
}


def _versions() -> str:
    version_file = _BUNDLED / "claude.version"
    cli = version_file.read_text().strip() if version_file.exists() else "unknown"
    return f"claude-agent-sdk {claude_agent_sdk.__version__} (bundled CLI {cli})"


def _changed(what: str) -> str:
    return f"{_versions()} changed the hook protocol akto_otel depends on: {what}"


def test_hook_event_names() -> None:
    literals = typing.get_args(claude_agent_sdk.types.HookEvent)
    events = {value for literal in literals for value in typing.get_args(literal)}
    missing = set(HOOK_EVENTS) - events
    assert not missing, _changed(f"hook events gone: {sorted(missing)}")


@pytest.mark.parametrize("name", sorted(OUTPUT_KEYS))
def test_hook_output_keys(name: str) -> None:
    typed = getattr(claude_agent_sdk.types, name, None)
    assert typed is not None, _changed(f"{name} is gone")
    keys = set(typing.get_type_hints(typed))
    missing = OUTPUT_KEYS[name] - keys
    assert not missing, _changed(f"{name} lost keys {sorted(missing)}")


@needs_cli
@pytest.mark.timeout(120)
async def test_live_protocol(tmp_path: Path) -> None:
    """One real session: input keys arrive, updatedInput rewrites without approving,
    a deny stops a tool, Stop ``decision: block`` re-enters the model with the
    reason, and the SDK passes the current span to the CLI as TRACEPARENT."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    seen: dict[str, list[dict[str, Any]]] = {}
    reason = "CANARY-REASON-7f3a"

    def recorder(event: str) -> Any:
        async def hook(data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
            seen.setdefault(event, []).append(dict(data))
            if event == "PreToolUse":
                command = data["tool_input"].get("command", "")
                if "denied" in command:
                    return {
                        "hookSpecificOutput": {
                            "hookEventName": "PreToolUse",
                            "permissionDecision": "deny",
                            "permissionDecisionReason": "canary deny",
                        }
                    }
                if "original" in command:
                    return {
                        "hookSpecificOutput": {
                            "hookEventName": "PreToolUse",
                            "updatedInput": {"command": "echo rewritten > rewrite.txt"},
                        }
                    }
            if event == "Stop" and len(seen["Stop"]) == 1:
                return {"decision": "block", "reason": reason}
            return {}

        return hook

    scenario = Scenario(
        "canary",
        [
            ToolUse("Bash", {"command": "echo original > rewrite.txt"}),
            ToolUse("Bash", {"command": "echo denied > denied.txt"}),
            ToolUse("Bash", {"command": "printenv TRACEPARENT > traceparent.txt"}),
            Text("first answer"),
            Text("second answer"),
        ],
    )
    events = ("UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop")
    provider = TracerProvider()
    tracer = provider.get_tracer("canary")
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home),
            cwd=str(work),
            allowed_tools=["Bash"],
            hooks={e: [HookMatcher(hooks=[recorder(e)])] for e in events},  # type: ignore[misc]
        )
        with tracer.start_as_current_span("canary-root") as root:
            await run_agent("canary run", options)
        trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()

    for event in events:
        assert seen.get(event), _changed(f"{event} hook never fired")
        missing = INPUT_KEYS[event] - set(seen[event][0])
        assert not missing, _changed(f"{event} input arrived without {sorted(missing)}")

    rewritten = work / "rewrite.txt"
    assert rewritten.exists(), _changed("PreToolUse updatedInput (no decision) did not run")
    assert rewritten.read_text().strip() == "rewritten", _changed(
        "PreToolUse updatedInput was not applied (the original input ran)"
    )
    assert not (work / "denied.txt").exists(), _changed(
        "PreToolUse permissionDecision 'deny' did not stop the tool"
    )

    traceparent_file = work / "traceparent.txt"
    assert traceparent_file.exists(), _changed(
        "an allowed Bash call after a denied one did not run"
    )
    traceparent = traceparent_file.read_text().strip()
    assert trace_id in traceparent, _changed(
        f"the SDK no longer passes the current span as TRACEPARENT (got {traceparent!r})"
    )

    conversation = [r for r in fake.records if r.kind == "conversation"]
    later_user_text = [
        message_text(m.get("content"))
        for r in conversation[1:]
        for m in r.body["messages"]
        if m.get("role") == "user"
    ]
    assert any(reason in text for text in later_user_text), _changed(
        "Stop decision 'block' no longer sends its reason back to the model"
    )
    assert len(seen["Stop"]) >= 2 and seen["Stop"][1]["stop_hook_active"] is True, _changed(
        "Stop decision 'block' no longer makes the model answer again"
    )
