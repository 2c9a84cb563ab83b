"""Every path an answer takes to the app is judged whole or held (real CLI, emulator,
scripted model), in both fail modes.

The attacks: the model spells a secret across several text blocks of one turn, across
the deltas of a streamed block, inside its thinking, or inside a structured output;
a tool reads a secret the guard denies but the CLI cannot replace (Read, Grep); the
judge of a held text raises. The emulator's ``aws-key`` rule denies the whole key on
Stop and SubagentStop (the response guardrail the held-answer path uses too), its
``secret-read`` rule denies ``SECRET-TOKEN`` in a tool output. Each attack test failed
on the code before docs/security.md's "Paths an answer takes" (noted per test); the
tests without an "Old code" note guard against over-blocking or a regression.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import claude_agent_sdk
import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeSDKClient,
    ResultMessage,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    UserMessage,
)

from akto_otel import AktoGuardrails
from akto_otel import hooks as hooks_module
from akto_otel.answers import (
    GUARDRAIL_ERROR_SUBTYPE,
    AnswerLedger,
    hold_answers,
)
from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.instrumentation import ClaudeAgentSDKInstrumentor
from akto_otel.testing import FakeAnthropic, Scenario, Step, Text, ToolUse, delegation
from tests.conftest import TEST_RULES, SpanCapture
from tests.security.attack_kit import guard as make_guard
from tests.security.attack_kit import options, rule

pytestmark = pytest.mark.timeout(180)

KEY = "AKIAIOSFODNN7EXAMPLE"
#: The key in three blocks: no block, and no pair of neighbours, holds it whole.
THREE_BLOCKS = ("The key is AKIAIOSF", "ODNN7EXAM", "PLE, use it.")
FRAGMENTS = ("AKIAIOSF", "ODNN7EXAM")
REFUSAL = "I cannot share that key."
RULES = (
    *TEST_RULES,
    rule("aws-key", "Stop", KEY, reason="AWS key in response"),
    rule("aws-key-subagent", "SubagentStop", KEY, reason="AWS key in response"),
    rule("secret-read", "PostToolUse", "SECRET-TOKEN", reason="Secret in tool output"),
    rule("private-key-out", "PostToolUse", r"PRIVATE-KEY-\d+", reason="Private key in output"),
    rule("mask-email-out", "PostToolUse", r"[a-z]+@example\.org", mask="[EMAIL]"),
)
FAIL_MODES = ("open", "closed")
#: The span attribute a held text delivered without a verdict carries (spelled out, not
#: imported: this file must also run against the code before it, to watch it fail).
UNJUDGED_ATTRIBUTE = "akto.guardrail.unjudged_call"


@pytest.fixture
def akto() -> Iterator[EmulatorServer]:
    server = EmulatorServer(Policy(RULES))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _guard(akto: EmulatorServer, capture: SpanCapture, fail_mode: str, **kw: Any) -> AktoGuardrails:
    return make_guard(akto, capture, fail_mode=fail_mode, **kw)


def _seen(messages: list[Any]) -> str:
    """Everything the app received, as text (every field of every message)."""
    return "\n".join(repr(m) for m in messages)


def _leaked(messages: list[Any]) -> list[str]:
    seen = _seen(messages)
    return [f for f in (*FRAGMENTS, KEY, "SECRET-TOKEN") if f in seen]


def _result(messages: list[Any]) -> ResultMessage:
    results = [m for m in messages if isinstance(m, ResultMessage)]
    assert len(results) == 1, results
    return results[0]


def _texts(messages: list[Any]) -> list[str]:
    return [
        b.text
        for m in messages
        if isinstance(m, AssistantMessage)
        for b in m.content
        if isinstance(b, TextBlock)
    ]


def _assert_error(result: ResultMessage, reason: str) -> None:
    assert result.is_error is True
    assert result.subtype == GUARDRAIL_ERROR_SUBTYPE
    assert reason in (result.result or "")
    assert result.structured_output is None


# ------------------------------------------------------------ 1. one answer, several blocks


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
async def test_a_key_split_across_three_text_blocks_is_judged_whole(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, fail_mode: str
) -> None:
    """Old code: Stop judged "PLE, use it." and the held path the other two blocks joined
    with a blank line; neither held the key, so all three blocks reached the app."""
    guard = _guard(akto, capture, fail_mode)
    scenario = Scenario(None, [Text(*THREE_BLOCKS), Text(REFUSAL)])
    with FakeAnthropic(scenario) as fake:
        messages = [m async for m in guard.query("go", options(fake, home, workdir))]
    guard.shutdown()
    assert _leaked(messages) == []
    assert _texts(messages) == [REFUSAL]  # Stop saw the whole turn and asked again
    assert _result(messages).is_error is False
    stops = [s.attributes.get("akto.guardrail.decision") for s in capture.named("akto.stop")]
    assert stops == ["deny", "allow"]


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
async def test_a_split_key_at_the_regeneration_bound_is_an_error_result(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, fail_mode: str
) -> None:
    """Old code: a "success" result whose ``result`` was the last block."""
    guard = _guard(akto, capture, fail_mode, max_stop_regenerations=0)
    scenario = Scenario(None, [Text(*THREE_BLOCKS)])
    with FakeAnthropic(scenario) as fake:
        messages = [m async for m in guard.query("go", options(fake, home, workdir))]
    guard.shutdown()
    assert _leaked(messages) == [] and "PLE, use it." not in _seen(messages)
    _assert_error(_result(messages), "AWS key in response")


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
async def test_a_key_split_across_a_delta_stream_and_blocks_is_withheld(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, fail_mode: str
) -> None:
    """``include_partial_messages``: two blocks, each streamed four characters at a time.
    Old code: every delta and both blocks reached the app."""
    guard = _guard(akto, capture, fail_mode, max_stop_regenerations=0)
    scenario = Scenario(None, [Text("The key is AKIAIOSFODNN7", "EXAMPLE, use it.", chunk=4)])
    with FakeAnthropic(scenario) as fake:
        opts = options(fake, home, workdir, include_partial_messages=True)
        messages = [m async for m in guard.query("go", opts)]
    guard.shutdown()
    deltas = [
        m.event["delta"].get("text", "")
        for m in messages
        if isinstance(m, StreamEvent) and m.event.get("type") == "content_block_delta"
    ]
    assert not any(d in "The key is AKIAIOSFODNN7EXAMPLE, use it." and d for d in deltas)
    assert "AKIA" not in _seen(messages) and "EXAMPLE" not in _seen(messages)
    _assert_error(_result(messages), "AWS key in response")


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
async def test_interim_blocks_before_a_tool_call_are_judged_as_one_text(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, fail_mode: str
) -> None:
    """Two text blocks before a tool call (Stop never sees them). Old code: judged joined
    with a blank line ("AKIAIOSFODN\\n\\nN7EXAMPLE"), so the key was never seen whole."""
    guard = _guard(akto, capture, fail_mode)
    step = Step(
        text="Key: AKIAIOSFODN",
        more_text=("N7EXAMPLE. Now listing.",),
        tool_uses=(ToolUse("Bash", {"command": "echo hi"}),),
    )
    with FakeAnthropic(Scenario(None, [step, Text("final words")])) as fake:
        messages = [m async for m in guard.query("go", options(fake, home, workdir))]
    guard.shutdown()
    assert "AKIAIOSFODN" not in _seen(messages) and "N7EXAMPLE" not in _seen(messages)
    assert _texts(messages) == ["final words"]
    held = [s.attributes.get("akto.guardrail.decision") for s in capture.named("akto.held_answer")]
    assert held == ["deny"]
    _assert_error(_result(messages), "AWS key in response")  # withheld: never "success"


# ------------------------------------------------------------------- 2. thinking


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
async def test_thinking_blocks_and_deltas_are_judged_before_delivery(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, fail_mode: str
) -> None:
    """Old code: the ThinkingBlock and its thinking_delta reached the app unjudged."""
    guard = _guard(akto, capture, fail_mode)
    scenario = Scenario(None, [Text("Sure.", thinking=f"the user wants {KEY}")])
    with FakeAnthropic(scenario) as fake:
        opts = options(fake, home, workdir, include_partial_messages=True)
        messages = [m async for m in guard.query("go", opts)]
    guard.shutdown()
    assert KEY not in _seen(messages)
    assert not any(
        isinstance(b, ThinkingBlock)
        for m in messages
        if isinstance(m, AssistantMessage)
        for b in m.content
    )
    _assert_error(_result(messages), "AWS key in response")


async def test_clean_thinking_is_delivered(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    guard = _guard(akto, capture, "closed")
    scenario = Scenario(None, [Text("Sure.", thinking="nothing secret here")])
    with FakeAnthropic(scenario) as fake:
        messages = [m async for m in guard.query("go", options(fake, home, workdir))]
    guard.shutdown()
    thoughts = [
        b.thinking
        for m in messages
        if isinstance(m, AssistantMessage)
        for b in m.content
        if isinstance(b, ThinkingBlock)
    ]
    assert thoughts == ["nothing secret here"] and _texts(messages) == ["Sure."]
    assert _result(messages).is_error is False


# ------------------------------------------------------------ 3. structured output

_SCHEMA = {
    "type": "json_schema",
    "schema": {"type": "object", "properties": {"report": {"type": "object"}}},
}
_NESTED_LEAK = {"report": {"findings": [{"where": "config", "values": ["x", {"key": KEY}]}]}}
_CLEAN = {"report": {"findings": []}}


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
async def test_a_nested_structured_output_is_judged_as_the_answer(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, fail_mode: str
) -> None:
    """Old code: Stop had no text, made no guardrail call, and the app got
    ``ResultMessage(subtype="success", structured_output={...key...})``."""
    guard = _guard(akto, capture, fail_mode, max_stop_regenerations=0)
    scenario = Scenario(None, [ToolUse("StructuredOutput", _NESTED_LEAK), Text("done")])
    with FakeAnthropic(scenario) as fake:
        opts = options(fake, home, workdir, output_format=_SCHEMA)
        messages = [m async for m in guard.query("go", opts)]
    guard.shutdown()
    assert KEY not in _seen(messages)
    _assert_error(_result(messages), "AWS key in response")


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
async def test_a_denied_structured_output_below_the_bound_is_still_an_error(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path, fail_mode: str
) -> None:
    """The CLI does not ask again after Stop blocks a structured output (one model call):
    the app gets the error, never the output."""
    guard = _guard(akto, capture, fail_mode)
    scenario = Scenario(
        None, [ToolUse("StructuredOutput", _NESTED_LEAK), ToolUse("StructuredOutput", _CLEAN)]
    )
    with FakeAnthropic(scenario) as fake:
        opts = options(fake, home, workdir, output_format=_SCHEMA)
        messages = [m async for m in guard.query("go", opts)]
    guard.shutdown()
    assert KEY not in _seen(messages)
    _assert_error(_result(messages), "AWS key in response")


async def test_a_clean_structured_output_is_delivered(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    guard = _guard(akto, capture, "closed")
    scenario = Scenario(None, [ToolUse("StructuredOutput", _CLEAN)])
    with FakeAnthropic(scenario) as fake:
        opts = options(fake, home, workdir, output_format=_SCHEMA)
        messages = [m async for m in guard.query("go", opts)]
    guard.shutdown()
    result = _result(messages)
    assert result.is_error is False and result.structured_output == _CLEAN
    calls = [
        b.input
        for m in messages
        if isinstance(m, AssistantMessage)
        for b in m.content
        if getattr(b, "name", None) == "StructuredOutput"
    ]
    assert calls == [_CLEAN]
    stops = [s.attributes.get("akto.guardrail.decision") for s in capture.named("akto.stop")]
    assert stops == ["allow"]  # Stop judged the structured output (it has no text)
    assert capture.named("akto.held_answer") == []  # ... so the holder did not again


# ------------------------------------------------- 4. tool outputs the CLI keeps


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
@pytest.mark.parametrize(
    "tool",
    [
        ToolUse("Read", {"file_path": "secret.txt"}),
        ToolUse("Grep", {"pattern": "SECRET", "path": ".", "output_mode": "content"}),
    ],
    ids=["Read", "Grep"],
)
async def test_a_denied_read_or_grep_output_never_reaches_the_app(
    akto: EmulatorServer,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    fail_mode: str,
    tool: ToolUse,
) -> None:
    """Old code: the UserMessage's tool_result ``content`` and ``tool_use_result`` carried
    the denied output, then a "success" result with no reason."""
    (workdir / "secret.txt").write_text("the SECRET-TOKEN is 42\n")
    guard = _guard(akto, capture, fail_mode, tool_response_guardrails=True)
    with FakeAnthropic(Scenario(None, [tool, Text("read it")])) as fake:
        opts = options(fake, home, workdir, allowed_tools=["Read", "Grep"])
        messages = [m async for m in guard.query("go", opts)]
        requests = json.dumps(fake.conversation_requests)
    guard.shutdown()
    assert "SECRET-TOKEN" not in requests  # the model never saw it (held before too)
    assert "SECRET-TOKEN" not in _seen(messages)
    results = [m for m in messages if isinstance(m, UserMessage) and m.tool_use_result is not None]
    assert results and all("withheld" in str(m.tool_use_result) for m in results)
    _assert_error(_result(messages), "Secret in tool output")


@pytest.mark.parametrize("fail_mode", FAIL_MODES)
@pytest.mark.parametrize(
    ("command", "original", "shown"),
    [
        ("printf '%s@example.org' bob", "bob@example.org", "[EMAIL]"),
        ("printf 'PRIVATE-%s' KEY-123", "PRIVATE-KEY-123", "withheld"),
    ],
    ids=["masked", "replaced"],
)
async def test_a_masked_or_replaced_bash_output_reaches_the_app_as_the_model_got_it(
    akto: EmulatorServer,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    fail_mode: str,
    command: str,
    original: str,
    shown: str,
) -> None:
    """Shapes the CLI can replace: the app's tool result is what the model got (the CLI
    hands the app the replaced output; the holder keeps it so)."""
    guard = _guard(akto, capture, fail_mode, tool_response_guardrails=True)
    with FakeAnthropic(Scenario(None, [ToolUse("Bash", {"command": command}), "ok"])) as fake:
        messages = [m async for m in guard.query("go", options(fake, home, workdir))]
        requests = json.dumps(fake.conversation_requests)
    guard.shutdown()
    assert original not in requests and shown in requests
    assert original not in _seen(messages)
    results = [m for m in messages if isinstance(m, UserMessage) and m.tool_use_result is not None]
    assert results and all(shown in str(m.tool_use_result) for m in results)


# ----------------------------------------------------------------- 5. subagents


async def test_a_subagent_hands_back_only_its_last_block_which_subagent_stop_judges(
    akto: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    """What the docs' subagent row rests on: a subagent's blocks never reach the parent's
    stream, and the parent (model and app) gets its last block, the text SubagentStop
    judges. A key split across a subagent's blocks is therefore never handed back whole."""
    scenarios = [
        Scenario("Research the repo", [Text("Found AKIAIOSF", "ODNN7EXAMPLE in config")]),
        delegation("delegate", "Research the repo"),
    ]
    guard = _guard(akto, capture, "closed")
    with FakeAnthropic(scenarios) as fake:
        messages = [m async for m in guard.query("please delegate", options(fake, home, workdir))]
        parent = [
            r for r in fake.conversation_requests if "delegate" in json.dumps(r["messages"][:1])
        ]
    guard.shutdown()
    assert not [m for m in messages if isinstance(m, AssistantMessage) and m.parent_tool_use_id]
    assert "AKIAIOSF" not in json.dumps(parent) and "AKIAIOSF" not in _seen(messages)
    assert "ODNN7EXAMPLE in config" in json.dumps(parent)
    stops = capture.named("akto.subagent_stop")
    assert [s.attributes.get("akto.guardrail.decision") for s in stops] == ["allow"]


# ------------------------------------------------------------ 6. zero-code paths


@pytest.fixture
def instrumentor(akto: EmulatorServer, capture: SpanCapture) -> Iterator[Any]:
    instrumentor = ClaudeAgentSDKInstrumentor()
    instrumentor.instrument(
        tracer_provider=capture.provider,
        guard=_guard(akto, capture, "closed", max_stop_regenerations=0),
    )
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


async def test_zero_code_query_judges_a_split_answer_whole(
    instrumentor: ClaudeAgentSDKInstrumentor, home: Path, workdir: Path
) -> None:
    with FakeAnthropic(Scenario(None, [Text(*THREE_BLOCKS)])) as fake:
        opts = options(fake, home, workdir, include_partial_messages=True)
        messages = [m async for m in claude_agent_sdk.query(prompt="go", options=opts)]
    assert _leaked(messages) == []
    _assert_error(_result(messages), "AWS key in response")


async def test_zero_code_client_judges_a_split_answer_whole(
    instrumentor: ClaudeAgentSDKInstrumentor, home: Path, workdir: Path
) -> None:
    with FakeAnthropic(Scenario(None, [Text(*THREE_BLOCKS)])) as fake:
        async with ClaudeSDKClient(options(fake, home, workdir)) as client:
            await client.query("go")
            messages = [m async for m in client.receive_response()]
    assert _leaked(messages) == []
    _assert_error(_result(messages), "AWS key in response")


async def test_zero_code_client_withholds_structured_output(
    instrumentor: ClaudeAgentSDKInstrumentor, home: Path, workdir: Path
) -> None:
    scenario = Scenario(None, [ToolUse("StructuredOutput", _NESTED_LEAK), Text("done")])
    with FakeAnthropic(scenario) as fake:
        async with ClaudeSDKClient(options(fake, home, workdir, output_format=_SCHEMA)) as client:
            await client.query("go")
            messages = [m async for m in client.receive_response()]
    assert KEY not in _seen(messages)
    _assert_error(_result(messages), "AWS key in response")


# ------------------------------------------------------------ 7. a judge that raises


def _raise_on_interim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The held-answer judge fails for the interim text only (Stop's own judging works)."""
    real = hooks_module.windows.plan_turn

    def plan_turn(wire: Any, prompt: str, text: str, hook: str, limits: Any) -> Any:
        if "interim" in text:
            raise RuntimeError("injected planning bug")
        return real(wire, prompt, text, hook, limits)

    monkeypatch.setattr(hooks_module.windows, "plan_turn", plan_turn)


def _interim() -> Scenario:
    step = Step(text="interim note", tool_uses=(ToolUse("Bash", {"command": "echo hi"}),))
    return Scenario(None, [step, Text("final words")])


async def test_a_raising_judge_withholds_the_text_in_fail_closed_mode(
    akto: EmulatorServer,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Old code: the text was withheld but the result said "success"."""
    _raise_on_interim(monkeypatch)
    guard = _guard(akto, capture, "closed")
    with FakeAnthropic(_interim()) as fake:
        messages = [m async for m in guard.query("go", options(fake, home, workdir))]
    guard.shutdown()
    assert "interim note" not in _seen(messages)
    _assert_error(_result(messages), "could not check")


async def test_a_raising_judge_delivers_and_records_unjudged_in_fail_open_mode(
    akto: EmulatorServer,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Old code: delivered silently, nothing on the span."""
    _raise_on_interim(monkeypatch)
    guard = _guard(akto, capture, "open")
    with FakeAnthropic(_interim()) as fake:
        messages = [m async for m in guard.query("go", options(fake, home, workdir))]
    guard.shutdown()
    assert _texts(messages) == ["interim note", "final words"]
    assert _result(messages).is_error is False
    held = capture.named("akto.held_answer")
    assert [s.attributes.get(UNJUDGED_ATTRIBUTE) for s in held] == [True]
    assert any(
        r.levelname == "WARNING" and getattr(r, "akto_unjudged", False) for r in caplog.records
    )


# ------------------------------------------------------- the pieces, without the CLI


async def test_a_wrapper_failure_follows_the_fail_mode() -> None:
    """An internal error of the holder itself: withheld when closed, reported when open."""

    class Broken(AnswerLedger):
        def denial_reason(self, text: str) -> str | None:
            raise RuntimeError("ledger bug")

    def stream() -> Any:
        async def gen() -> Any:
            yield AssistantMessage(content=[TextBlock(text="maybe denied")], model="m")
            yield ResultMessage(
                subtype="success",
                duration_ms=1,
                duration_api_ms=1,
                is_error=False,
                num_turns=1,
                session_id="s",
                result="maybe denied",
            )

        return gen()

    async def judge(text: str) -> str | None:
        return None

    closed = [m async for m in hold_answers(stream(), Broken(), judge=judge)]
    assert _texts(closed) == [] and _result(closed).is_error is True
    reports: list[tuple[str, str]] = []
    opened = [
        m
        async for m in hold_answers(
            stream(),
            Broken(),
            judge=judge,
            fail_open=True,
            on_unjudged=lambda where, error: reports.append((where, error)),
        )
    ]
    assert _texts(opened) == ["maybe denied"] and _result(opened).is_error is False
    assert reports and all(error == "RuntimeError" for _, error in reports)
