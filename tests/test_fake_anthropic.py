"""Tests for akto_otel.testing: the scripted fake Anthropic Messages API.

The session tests drive the real Claude Agent SDK and its bundled Claude Code
CLI against the fake server, fully offline.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import claude_agent_sdk
import httpx
import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    HookMatcher,
    ResultMessage,
    TextBlock,
)

from akto_otel.hooks import HOOK_EVENTS
from akto_otel.testing import (
    DEFAULT_FINAL_TEXT,
    SIDE_REPLY_TEXT,
    FakeAnthropic,
    Scenario,
    Step,
    Text,
    ToolUse,
    ToolUses,
    count_assistant_turns,
    delegation,
    first_user_text,
    is_side_request,
    load_scenarios,
    message_text,
    offline_agent_env,
    run_agent,
    scenarios_from_data,
    select_scenario,
    step_index,
)

_BUNDLED_CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
needs_cli = pytest.mark.skipif(not _BUNDLED_CLI.exists(), reason="bundled Claude CLI missing")


# ----------------------------------------------------------------------------- helpers


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _conversation(*messages: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "You are a Claude agent."}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "messages": list(messages),
    }


def _title_request(prompt: str) -> dict[str, Any]:
    """The shape of the CLI's session-title side request (CLI 2.1.x)."""
    return {
        "model": "claude-test",
        "max_tokens": 1024,
        "stream": True,
        "system": [{"type": "text", "text": "You are naming a coding session ..."}],
        "tools": [],
        "messages": [_user(f"<session>\n{prompt}\n</session>\n\nWrite the title ...")],
        "output_config": {
            "format": {
                "type": "json_schema",
                "schema": {
                    "type": "object",
                    "properties": {"title": {"type": "string"}},
                    "required": ["title"],
                    "additionalProperties": False,
                },
            }
        },
    }


def _parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


class _HookRecorder:
    """Records every hook input; optional per-event reply."""

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        self.inputs: list[dict[str, Any]] = []
        self.replies = replies or {}

    async def __call__(self, hook_input: Any, tool_use_id: str | None, context: Any) -> Any:
        self.inputs.append(dict(hook_input))
        reply = self.replies.get(hook_input["hook_event_name"])
        return reply(hook_input) if callable(reply) else (reply or {})

    def hooks(self) -> dict[Any, list[HookMatcher]]:
        return {event: [HookMatcher(matcher=None, hooks=[self])] for event in HOOK_EVENTS}

    def events(self) -> list[str]:
        return [i["hook_event_name"] for i in self.inputs]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [i for i in self.inputs if i["hook_event_name"] == event]


def _options(
    fake: FakeAnthropic, tmp_path: Path, recorder: _HookRecorder | None = None, **kw: Any
) -> ClaudeAgentOptions:
    cwd = tmp_path / "work"
    cwd.mkdir(exist_ok=True)
    kw.setdefault("allowed_tools", ["Bash", "Read"])
    return ClaudeAgentOptions(
        env=offline_agent_env(fake, tmp_path / "home"),
        cwd=str(cwd),
        hooks=recorder.hooks() if recorder else None,
        **kw,
    )


def _texts(messages: list[Any]) -> list[str]:
    return [
        block.text
        for m in messages
        if isinstance(m, AssistantMessage) and m.parent_tool_use_id is None
        for block in m.content
        if isinstance(block, TextBlock)
    ]


def _result(messages: list[Any]) -> ResultMessage:
    results = [m for m in messages if isinstance(m, ResultMessage)]
    assert results, messages
    return results[-1]


# ----------------------------------------------------------------------------- scenarios


def test_scenario_step_kinds_and_exhaustion() -> None:
    scenario = Scenario(
        "files",
        [
            ToolUse("Bash", {"command": "ls"}),
            "plain string is text",
            ToolUses([ToolUse("Read", {"file_path": "a"}), ToolUse("Read", {"file_path": "b"})]),
            Text("final"),
            ToolUse("Bash", {"command": "true"}),
        ],
    )
    assert scenario.step_at(0).tool_uses[0].name == "Bash"
    assert scenario.step_at(0).stop_reason == "tool_use"
    assert scenario.step_at(1) == Text("plain string is text")
    assert len(scenario.step_at(2).tool_uses) == 2
    assert scenario.step_at(3).stop_reason == "end_turn"
    # Past the end: the last text-only step repeats.
    assert scenario.step_at(5) == Text("final")
    assert scenario.step_at(50) == Text("final")
    assert Scenario("x", [ToolUse("Bash")]).step_at(1) == Text(DEFAULT_FINAL_TEXT)
    assert Scenario(None, []).step_at(0) == Text(DEFAULT_FINAL_TEXT)
    with pytest.raises(ValueError):
        Step()
    with pytest.raises(ValueError):
        ToolUses([])


def test_scenario_from_dict_roundtrip_and_selection() -> None:
    data = {
        "scenarios": [
            {
                "name": "ls",
                "match": "list files",
                "steps": [
                    {"tool_use": {"name": "Bash", "input": {"command": "ls"}}},
                    {
                        "text": "two at once",
                        "tool_uses": [
                            {"name": "Read", "input": {"file_path": "a"}, "id": "toolu_fixed"},
                            {"name": "Read", "input": {"file_path": "b"}},
                        ],
                        "delay": 0.01,
                    },
                    {"text": "Here are the files.", "input_tokens": 5},
                    "bare string",
                ],
            },
            {"match": None, "steps": ["fallback"]},
        ]
    }
    scenarios = scenarios_from_data(data)
    ls, fallback = scenarios
    assert ls.name == "ls" and ls.label == "ls" and fallback.label == "<fallback>"
    assert ls.steps[0] == Step(tool_uses=(ToolUse("Bash", {"command": "ls"}),))
    assert ls.steps[1].text == "two at once" and ls.steps[1].tool_uses[0].id == "toolu_fixed"
    assert ls.steps[1].delay == 0.01
    assert ls.steps[2] == Text("Here are the files.", input_tokens=5)
    assert ls.steps[3] == Text("bare string")
    # to_dict is the inverse of from_dict.
    assert [Scenario.from_dict(s.to_dict()) for s in scenarios] == scenarios

    assert select_scenario(scenarios, "please list files now") is ls
    assert select_scenario(scenarios, "something else") is fallback
    assert select_scenario(scenarios[:1], "something else") is None
    with pytest.raises(ValueError, match="unknown step key"):
        scenarios_from_data([{"steps": [{"txt": "typo"}]}])


def test_load_scenarios_yaml_and_json(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    yaml_file = tmp_path / "scenarios.yaml"
    yaml_file.write_text(
        textwrap.dedent(
            """\
            scenarios:
              - match: "list files"
                steps:
                  - tool_use: {name: Bash, input: {command: "ls"}}
                  - text: "Here are the files."
            """
        )
    )
    json_file = tmp_path / "scenarios.json"
    json_file.write_text(json.dumps([s.to_dict() for s in load_scenarios(yaml_file)]))
    for path in (yaml_file, json_file):
        (scenario,) = load_scenarios(path)
        assert scenario.match is not None and scenario.match.pattern == "list files"
        assert scenario.steps == (
            Step(tool_uses=(ToolUse("Bash", {"command": "ls"}),)),
            Text("Here are the files."),
        )


def test_request_inspection_helpers() -> None:
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>\nattribution\n</system-reminder>\n"},
                {"type": "text", "text": "do the thing"},
            ],
        },
        {"role": "system", "content": "environment"},
        _assistant("one"),
        _user("more"),
        _assistant("two"),
        _user("again"),
    ]
    assert first_user_text(messages) == "do the thing"
    assert count_assistant_turns(messages) == 2
    assert step_index(messages) == 2
    assert not is_side_request(_conversation(*messages))
    assert is_side_request(_title_request("do the thing"))


# ----------------------------------------------------------------------------- HTTP level


def test_server_lifecycle_is_idempotent() -> None:
    fake = FakeAnthropic(Scenario(None, ["hi"]))
    assert not fake.running
    with pytest.raises(RuntimeError):
        _ = fake.url
    fake.start()
    fake.start()
    assert fake.running and fake.url.startswith("http://127.0.0.1:")
    fake.stop()
    fake.stop()
    assert not fake.running
    with fake:
        assert fake.running
    assert not fake.running


@pytest.mark.timeout(60)
def test_non_streaming_json_reply_and_other_endpoints() -> None:
    scenario = Scenario(
        "weather",
        [
            Step(text="Let me check.", tool_uses=(ToolUse("Bash", {"command": "date"}),)),
            Text("Sunny."),
        ],
    )
    with FakeAnthropic([scenario]) as fake, httpx.Client(base_url=fake.url) as client:
        first = client.post("/v1/messages", json=_conversation(_user("weather?")))
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("application/json")
        reply = first.json()
        assert reply["type"] == "message" and reply["role"] == "assistant"
        assert reply["model"] == "claude-test"
        assert reply["stop_reason"] == "tool_use"
        text, tool = reply["content"]
        assert text == {"type": "text", "text": "Let me check."}
        assert tool["type"] == "tool_use" and tool["name"] == "Bash"
        assert tool["input"] == {"command": "date"} and tool["id"].startswith("toolu_")
        assert reply["usage"]["input_tokens"] > 0

        second = client.post(
            "/v1/messages?beta=true",
            json=_conversation(
                _user("weather?"),
                {"role": "assistant", "content": reply["content"]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": tool["id"], "content": "x"}],
                },
            ),
        ).json()
        assert second["content"] == [{"type": "text", "text": "Sunny."}]
        assert second["stop_reason"] == "end_turn"

        tokens = client.post("/v1/messages/count_tokens", json=_conversation(_user("weather?")))
        assert tokens.status_code == 200 and tokens.json()["input_tokens"] > 0
        assert client.head("/api/hello").status_code == 200
        assert client.get("/v1/models").json()["data"]
        missing = client.post("/v1/nothing-here", json={})
        assert missing.status_code == 404 and missing.json()["type"] == "error"

    kinds = [r.kind for r in fake.records]
    assert kinds == ["conversation", "conversation", "count_tokens", "probe", "models", "unknown"]
    assert [r.step for r in fake.records[:2]] == [0, 1]
    assert len(fake.requests) == 2 and fake.unknown_requests[0].path == "/v1/nothing-here"


@pytest.mark.timeout(60)
def test_streaming_reply_event_sequence() -> None:
    scenario = Scenario(
        None,
        [ToolUses([ToolUse("Bash", {"command": "ls"}), ToolUse("Read", {"file_path": "a"})])],
    )
    with FakeAnthropic(scenario) as fake, httpx.Client(base_url=fake.url) as client:
        response = client.post(
            "/v1/messages?beta=true", json=_conversation(_user("go"), stream=True)
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _parse_sse(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        *["content_block_start", "content_block_delta", "content_block_stop"] * 2,
        "message_delta",
        "message_stop",
    ]
    assert events and all(data["type"] == name for name, data in events)
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert [d["type"] for d in deltas] == ["input_json_delta", "input_json_delta"]
    assert json.loads(deltas[0]["partial_json"]) == {"command": "ls"}
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert [s["name"] for s in starts] == ["Bash", "Read"]
    assert len({s["id"] for s in starts}) == 2
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "tool_use"
    assert message_delta["usage"]["output_tokens"] > 0


@pytest.mark.timeout(60)
def test_side_requests_do_not_consume_steps() -> None:
    scenario = Scenario("count", ["one", "two", "three"])
    with FakeAnthropic(scenario) as fake, httpx.Client(base_url=fake.url) as client:

        def ask(*messages: dict[str, Any]) -> str:
            reply = client.post("/v1/messages", json=_conversation(*messages)).json()
            return str(reply["content"][0]["text"])

        assert ask(_user("count please")) == "one"
        # A title request that mentions the prompt: answered with valid JSON for
        # its schema, not with a scripted step.
        title = client.post(
            "/v1/messages", json={**_title_request("count please"), "stream": False}
        ).json()
        assert json.loads(title["content"][0]["text"]) == {"title": "Fake session"}
        # A tool-less side request without a schema gets a harmless short text.
        side = client.post(
            "/v1/messages",
            json={"model": "m", "max_tokens": 1, "messages": [_user("")], "tools": []},
        ).json()
        assert side["content"][0]["text"] == SIDE_REPLY_TEXT
        history = [_user("count please"), _assistant("one"), _user("go on")]
        assert ask(*history) == "two"
        assert ask(*history, _assistant("two"), _user("more")) == "three"
    assert [r.kind for r in fake.records] == [
        "conversation",
        "side",
        "side",
        "conversation",
        "conversation",
    ]
    assert [r.note for r in fake.records if r.kind == "side"] == ["structured", "side"]
    assert [r.step for r in fake.records if r.kind == "conversation"] == [0, 1, 2]


def test_unmatched_prompt_gets_a_visible_reply() -> None:
    with FakeAnthropic(Scenario("only this", ["x"])) as fake:
        reply = fake.reply_for(_conversation(_user("something else")))
    assert "no scenario matches" in reply["content"][0]["text"]
    assert reply["stop_reason"] == "end_turn"


# ----------------------------------------------------------------------------- real sessions


@needs_cli
@pytest.mark.timeout(60)
async def test_text_only_session(tmp_path: Path) -> None:
    recorder = _HookRecorder()
    with FakeAnthropic([Scenario("hello", [Text("Hi from the fake model.")])]) as fake:
        messages = await run_agent("hello there", _options(fake, tmp_path, recorder))
    assert _texts(messages) == ["Hi from the fake model."]
    result = _result(messages)
    assert not result.is_error and result.num_turns == 1
    conversation = [r for r in fake.records if r.kind == "conversation"]
    assert [r.step for r in conversation] == [0]
    body = conversation[0].body
    assert body["stream"] is True and first_user_text(body["messages"]) == "hello there"
    assert conversation[0].session_id == result.session_id
    assert recorder.events() == ["UserPromptSubmit", "Stop"]
    (prompt,) = recorder.of("UserPromptSubmit")
    assert prompt["prompt"] == "hello there"
    assert prompt["cwd"] == str(tmp_path / "work")
    (stop,) = recorder.of("Stop")
    assert stop["last_assistant_message"] == "Hi from the fake model."
    assert stop["stop_hook_active"] is False
    # Transcripts went to the temporary HOME.
    assert Path(stop["transcript_path"]).is_relative_to(tmp_path / "home")
    assert not fake.unknown_requests


@needs_cli
@pytest.mark.timeout(60)
async def test_bash_tool_session_runs_tool_and_fires_hooks(tmp_path: Path) -> None:
    command = "echo guarded > made.txt"
    scenario = Scenario(
        "make a file",
        [ToolUse("Bash", {"command": command, "description": "make it"}), Text("Made it.")],
    )
    recorder = _HookRecorder()
    with FakeAnthropic(scenario) as fake:
        messages = await run_agent("please make a file", _options(fake, tmp_path, recorder))
    assert (tmp_path / "work" / "made.txt").read_text() == "guarded\n"
    assert _texts(messages) == ["Made it."]
    assert recorder.events() == ["UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"]
    (pre,) = recorder.of("PreToolUse")
    (post,) = recorder.of("PostToolUse")
    assert pre["tool_name"] == post["tool_name"] == "Bash"
    assert pre["tool_input"] == post["tool_input"] == {"command": command, "description": "make it"}
    assert pre["tool_use_id"] == post["tool_use_id"]
    assert pre["tool_use_id"].startswith("toolu_")
    assert post["tool_response"]["stdout"] == ""
    assert post["tool_response"]["interrupted"] is False
    # The tool result went back to the fake model in the second request.
    second = [r.body for r in fake.records if r.kind == "conversation"][1]
    (tool_result,) = [
        block for block in second["messages"][-1]["content"] if block.get("type") == "tool_result"
    ]
    assert tool_result["tool_use_id"] == pre["tool_use_id"]
    assert tool_result["is_error"] is False


@needs_cli
@pytest.mark.timeout(60)
async def test_failing_tools_fire_post_tool_use_failure(tmp_path: Path) -> None:
    scenario = Scenario(
        "fail",
        [
            ToolUse("Bash", {"command": "exit 3"}),
            ToolUse("Read", {"file_path": str(tmp_path / "missing.txt")}),
            Text("Both failed."),
        ],
    )
    recorder = _HookRecorder()
    with FakeAnthropic(scenario) as fake:
        await run_agent("please fail", _options(fake, tmp_path, recorder))
    assert recorder.events() == [
        "UserPromptSubmit",
        *["PreToolUse", "PostToolUseFailure"] * 2,
        "Stop",
    ]
    bash, read = recorder.of("PostToolUseFailure")
    assert bash["tool_name"] == "Bash" and bash["error"] == "Exit code 3"
    assert read["tool_name"] == "Read" and read["error"].startswith("File does not exist")
    assert bash["is_interrupt"] is False


@needs_cli
@pytest.mark.timeout(60)
async def test_concurrent_sessions_do_not_interfere(tmp_path: Path) -> None:
    scenarios = [
        Scenario("alpha", [ToolUse("Bash", {"command": "echo a > alpha.txt"}), Text("alpha done")]),
        Scenario(
            "beta",
            [
                ToolUse("Bash", {"command": "echo b > beta.txt"}),
                ToolUse("Bash", {"command": "echo b2 >> beta.txt"}),
                Text("beta done"),
            ],
        ),
    ]
    with FakeAnthropic(scenarios) as fake:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        alpha, beta = await asyncio.gather(
            run_agent("task alpha", _options(fake, tmp_path / "a")),
            run_agent("task beta", _options(fake, tmp_path / "b")),
        )
    assert _texts(alpha) == ["alpha done"]
    assert _texts(beta) == ["beta done"]
    assert (tmp_path / "a" / "work" / "alpha.txt").read_text() == "a\n"
    assert (tmp_path / "b" / "work" / "beta.txt").read_text() == "b\nb2\n"
    assert not (tmp_path / "a" / "work" / "beta.txt").exists()
    steps: dict[str | None, list[int | None]] = {}
    for record in fake.records:
        if record.kind == "conversation":
            steps.setdefault(record.scenario, []).append(record.step)
    assert steps == {"alpha": [0, 1], "beta": [0, 1, 2]}


@needs_cli
@pytest.mark.timeout(60)
async def test_stop_hook_block_sends_reason_back(tmp_path: Path) -> None:
    blocked: list[str] = []

    def block_once(hook_input: dict[str, Any]) -> dict[str, Any]:
        if blocked:
            return {}
        blocked.append(hook_input["last_assistant_message"])
        return {"decision": "block", "reason": "GUARDRAIL: redact the secret"}

    recorder = _HookRecorder({"Stop": block_once})
    scenario = Scenario("secret", [Text("the secret is 42"), Text("[redacted]")])
    with FakeAnthropic(scenario) as fake:
        messages = await run_agent("tell me the secret", _options(fake, tmp_path, recorder))
    assert blocked == ["the secret is 42"]
    assert _texts(messages) == ["the secret is 42", "[redacted]"]
    first_stop, second_stop = recorder.of("Stop")
    assert first_stop["stop_hook_active"] is False and second_stop["stop_hook_active"] is True
    # On re-entry the fake sees the blocked answer plus the reason as a user turn.
    conversation = [r for r in fake.records if r.kind == "conversation"]
    assert [r.step for r in conversation] == [0, 1]
    reentry = [m for m in conversation[1].body["messages"] if m["role"] != "system"]
    assert reentry[-2] == _assistant("the secret is 42")
    # The CLI owns the wrapper around the reason (plain text up to 0.2.187, a
    # <system-reminder> block from 0.2.189): assert only that the model gets it
    # in the user turn after the blocked answer.
    assert reentry[-1]["role"] == "user"
    assert "GUARDRAIL: redact the secret" in message_text(reentry[-1]["content"])
    assert "GUARDRAIL: redact the secret" not in "".join(
        message_text(m["content"]) for m in conversation[0].body["messages"]
    )


@needs_cli
@pytest.mark.timeout(60)
async def test_subagent_scripted_by_its_own_scenario(tmp_path: Path) -> None:
    scenarios = [
        Scenario(
            "SUBTASK",
            [ToolUse("Bash", {"command": "echo sub > sub.txt"}), Text("subagent report")],
            name="sub",
        ),
        delegation(
            "delegate",
            "SUBTASK: write sub.txt",
            description="write sub file",
            answer="main done",
            name="main",
        ),
    ]
    recorder = _HookRecorder()
    with FakeAnthropic(scenarios) as fake:
        messages = await run_agent("please delegate", _options(fake, tmp_path, recorder))
    assert (tmp_path / "work" / "sub.txt").read_text() == "sub\n"
    assert _texts(messages) == ["main done"]
    assert recorder.events() == [
        "UserPromptSubmit",
        "PreToolUse",  # Agent
        "SubagentStart",
        "PreToolUse",  # Bash inside the subagent
        "PostToolUse",
        "SubagentStop",
        "PostToolUse",  # Agent
        "Stop",
    ]
    (start,) = recorder.of("SubagentStart")
    (stop,) = recorder.of("SubagentStop")
    assert start["agent_type"] == stop["agent_type"] == "general-purpose"
    assert start["agent_id"] == stop["agent_id"]
    assert stop["last_assistant_message"] == "subagent report"
    inner_pre = recorder.of("PreToolUse")[1]
    assert inner_pre["agent_id"] == start["agent_id"]
    assert recorder.of("PostToolUse")[1]["tool_response"]["status"] == "completed"
    order = [(r.scenario, r.step) for r in fake.records if r.kind == "conversation"]
    assert order == [("main", 0), ("sub", 0), ("sub", 1), ("main", 1)]


@needs_cli
@pytest.mark.timeout(60)
async def test_quiet_env_skips_side_traffic(tmp_path: Path) -> None:
    with FakeAnthropic(Scenario(None, ["ok"])) as fake:
        options = _options(fake, tmp_path)
        options.env = offline_agent_env(fake, tmp_path / "home", quiet=True)
        await run_agent("a prompt long enough to deserve a session title", options)
    assert [r.kind for r in fake.records] == ["conversation"]


@needs_cli
@pytest.mark.timeout(60)
async def test_permission_request_for_tool_not_allowed(tmp_path: Path) -> None:
    target = tmp_path / "outside" / "w.txt"
    target.parent.mkdir()
    scenario = Scenario(
        "write",
        [ToolUse("Write", {"file_path": str(target), "content": "x"}), Text("tried")],
    )
    recorder = _HookRecorder()
    with FakeAnthropic(scenario) as fake:
        await run_agent("please write", _options(fake, tmp_path, recorder))
    assert not target.exists()
    assert recorder.events() == ["UserPromptSubmit", "PreToolUse", "PermissionRequest", "Stop"]
    (request,) = recorder.of("PermissionRequest")
    assert request["tool_name"] == "Write"
    assert request["tool_input"] == {"file_path": str(target), "content": "x"}
    assert isinstance(request["permission_suggestions"], list)
    denied = [r.body for r in fake.records if r.kind == "conversation"][1]["messages"][-1]
    assert denied["content"][0]["is_error"] is True


@needs_cli
@pytest.mark.timeout(60)
async def test_compaction_keeps_the_scenario_position(tmp_path: Path) -> None:
    from claude_agent_sdk import ClaudeSDKClient

    scenario = Scenario(
        "remember",
        [
            Text("first", input_tokens=990_000),  # context "full": auto-compact next turn
            Text("second"),
            Text("third"),
        ],
    )
    recorder = _HookRecorder()
    texts: list[str] = []
    with FakeAnthropic(scenario) as fake:
        async with ClaudeSDKClient(options=_options(fake, tmp_path, recorder)) as client:
            for prompt in ("remember this", "go on", "/compact be brief", "and again"):
                await client.query(prompt)
                texts += _texts([m async for m in client.receive_response()])
    assert texts == ["first", "second", "third"]
    auto, manual = recorder.of("PreCompact")
    assert auto["trigger"] == "auto" and auto["custom_instructions"] is None
    assert manual["trigger"] == "manual" and manual["custom_instructions"] == "be brief"
    assert [r.note for r in fake.records if r.kind == "side"].count("compact") == 2
    assert [r.step for r in fake.records if r.kind == "conversation"] == [0, 1, 2]
