"""The held-answer decisions without the CLI: what is judged as one answer, what is held,
what the app gets. Fast, for the decisions tests/security/test_answer_paths.py proves
through the real CLI."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from claude_agent_sdk import (
    AssistantMessage,
    ResultMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

from akto_otel.answers import (
    GUARDRAIL_ERROR_SUBTYPE,
    AnswerLedger,
    Holder,
    Unjudged,
    hook_answer,
    note_hook_output,
    structured_text,
    whole_answer,
)


def _text(text: str, parent: str | None = None) -> AssistantMessage:
    return AssistantMessage(content=[TextBlock(text=text)], model="m", parent_tool_use_id=parent)


def _thinking(text: str) -> AssistantMessage:
    return AssistantMessage(content=[ThinkingBlock(thinking=text, signature="s")], model="m")


def _call(name: str, value: Any, call_id: str = "t1") -> AssistantMessage:
    return AssistantMessage(content=[ToolUseBlock(id=call_id, name=name, input=value)], model="m")


def _tool_result(call_id: str, content: Any) -> UserMessage:
    return UserMessage(
        content=[ToolResultBlock(tool_use_id=call_id, content=content)], tool_use_result=content
    )


def _result(text: str | None = "done", structured: Any = None) -> ResultMessage:
    return ResultMessage(
        subtype="success",
        duration_ms=1,
        duration_api_ms=1,
        is_error=False,
        num_turns=1,
        session_id="s",
        result=text,
        structured_output=structured,
    )


def _batch(out: list[Any]) -> Unjudged:
    assert len(out) == 1 and isinstance(out[0], Unjudged), out
    return out[0]


def test_the_blocks_of_a_turn_are_one_text_with_no_separator() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    for part in ("The key is AKIA", "IOSFODNN7", "EXAMPLE"):
        assert holder.feed(_text(part)) == []
    batch = _batch(holder.feed(_result("EXAMPLE")))
    assert batch.texts == ("The key is AKIAIOSFODNN7EXAMPLE",)


def test_a_tool_result_starts_a_new_turn() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_text("before "))
    holder.feed(_call("Bash", {"command": "ls"}))
    first = _batch(holder.feed(_tool_result("t1", "out")))
    # The call's input reaches the app too: judged with the turn's text, in one check.
    assert first.texts == ('before \n{"command":"ls"}',)
    holder.settle(first, {u: None for u in first.unjudged})
    holder.feed(_text("after"))
    assert _batch(holder.feed(_result("after"))).texts == ("after",)


def test_thinking_is_judged_on_its_own() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_thinking("hmm "))
    holder.feed(_thinking("secret"))
    holder.feed(_text("ok"))
    units = _batch(holder.feed(_result("ok"))).unjudged
    assert sorted((u.kind, u.text) for u in units) == [("text", "ok"), ("thinking", "hmm secret")]


def test_what_stop_judged_whole_is_not_judged_again() -> None:
    ledger = AnswerLedger()
    ledger.record_allowed("ab")
    holder = Holder(ledger, judging=True)
    holder.feed(_text("a"))
    holder.feed(_text("b"))
    out = holder.feed(_result("b"))
    assert [type(m).__name__ for m in out] == [
        "AssistantMessage",
        "AssistantMessage",
        "ResultMessage",
    ]


def test_a_judged_last_block_does_not_count_for_the_whole_turn() -> None:
    ledger = AnswerLedger()
    ledger.record_allowed("EXAMPLE and more words")  # only the last block was judged
    holder = Holder(ledger, judging=True)
    holder.feed(_text("The key is AKIAIOSFODNN7"))
    holder.feed(_text("EXAMPLE and more words"))
    batch = _batch(holder.feed(_result("EXAMPLE and more words")))
    assert batch.texts == ("The key is AKIAIOSFODNN7EXAMPLE and more words",)


def test_a_turn_the_judge_denies_is_dropped_and_the_result_is_an_error() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_text("The key is AKIA"))
    holder.feed(_text("IOSFODNN7EXAMPLE"))
    batch = _batch(holder.feed(_result("IOSFODNN7EXAMPLE")))
    out = holder.settle(batch, {u: "AWS key" for u in batch.unjudged})
    assert len(out) == 1 and isinstance(out[0], ResultMessage)
    assert out[0].is_error is True and out[0].subtype == GUARDRAIL_ERROR_SUBTYPE
    assert "AWS key" in (out[0].result or "") and holder.dropped == 2


def test_a_turn_stop_denied_is_dropped_and_the_regenerated_one_passes() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("leaked SECRET", "Secret")
    ledger.record_allowed("clean")
    holder = Holder(ledger, judging=True)
    holder.feed(_text("leaked "))
    holder.feed(_text("SECRET"))
    assert holder.feed(UserMessage(content="Stop hook feedback: Secret")) != []
    holder.feed(_text("clean"))
    out = holder.feed(_result("clean"))
    texts = [b.text for m in out if isinstance(m, AssistantMessage) for b in m.content]
    assert texts == ["clean"] and isinstance(out[-1], ResultMessage)
    assert out[-1].is_error is False


def test_a_structured_output_is_held_until_the_result() -> None:
    ledger = AnswerLedger()
    value = {"b": [1], "a": {"k": "v"}}
    holder = Holder(ledger, judging=True)
    assert holder.feed(_call("StructuredOutput", value, "s1")) == []
    out = holder.feed(_tool_result("s1", "Structured output provided successfully"))
    assert [type(m).__name__ for m in out] == ["UserMessage"]  # the call is still held
    batch = _batch(holder.feed(_result('{"a":...}', structured=value)))
    assert batch.texts == (structured_text(value),) == ('{"a":{"k":"v"},"b":[1]}',)
    out = holder.settle(batch, {u: "leak" for u in batch.unjudged})
    assert len(out) == 1 and out[0].is_error is True and out[0].structured_output is None


def test_a_withheld_tool_output_reaches_the_app_as_the_reason() -> None:
    ledger = AnswerLedger()
    note_hook_output(
        ledger,
        "PostToolUse",
        {"tool_use_id": "r1"},
        {"continue_": False, "stopReason": "Blocked by Akto Guardrails: Secret in output"},
    )
    holder = Holder(ledger)
    holder.feed(_call("Read", {"file_path": "x"}, "r1"))
    out = holder.feed(_tool_result("r1", "the SECRET"))
    shown = out[-1]
    assert isinstance(shown, UserMessage) and "SECRET" not in repr(shown)
    assert "Secret in output" in str(shown.tool_use_result)
    result = holder.feed(_result("ok"))[0]
    assert result.is_error is True and "Secret in output" in result.result


def test_a_replaced_tool_output_reaches_the_app_replaced_and_the_turn_goes_on() -> None:
    ledger = AnswerLedger()
    replacement = {"stdout": "[EMAIL]", "stderr": "", "interrupted": False}
    output = {
        "hookSpecificOutput": {"hookEventName": "PostToolUse", "updatedToolOutput": replacement}
    }
    note_hook_output(ledger, "PostToolUse", {"tool_use_id": "b1"}, output)
    holder = Holder(ledger)
    out = holder.feed(_tool_result("b1", "bob@example.org"))
    shown = out[-1]
    assert shown.tool_use_result == replacement
    assert shown.content[0].content == "[EMAIL]"
    assert holder.feed(_result("ok"))[0].is_error is False


def test_a_subagent_answer_the_parent_gets_is_replaced_when_denied() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("Found SECRET-TOKEN in config", "Secret")
    holder = Holder(ledger)
    handback = [{"type": "text", "text": "[Subagent hand-back]\n  Found SECRET-TOKEN in config"}]
    out = holder.feed(_tool_result("a1", handback))
    assert "SECRET-TOKEN" not in repr(out[-1])


def test_hook_answer_takes_the_whole_turn_only_when_it_ends_with_the_named_block() -> None:
    data = {"last_assistant_message": "EXAMPLE "}
    assert hook_answer(data) == "EXAMPLE"
    assert hook_answer(data, "The key is AKIAIOSFODNN7EXAMPLE") == (
        "The key is AKIAIOSFODNN7EXAMPLE"
    )
    assert hook_answer(data, "an older turn") == "EXAMPLE"
    assert hook_answer({}, '{"a":1}') == '{"a":1}'
    assert hook_answer({"last_assistant_message": 3}) == ""


def test_whole_answer_waits_for_the_holder_to_see_the_named_block() -> None:
    async def scenario() -> tuple[str, str, str, str]:
        ledger = AnswerLedger()
        data = {"last_assistant_message": "EXAMPLE"}
        untracked = await whole_answer(ledger, data)
        ledger.tracking = True
        ledger.set_live("The key is AKIA", None)

        async def later() -> None:
            await asyncio.sleep(0.05)
            ledger.set_live("The key is AKIAIOSFODNN7EXAMPLE", None)

        task = asyncio.create_task(later())
        waited = await whole_answer(ledger, data)
        await task
        ledger.set_live("unrelated", None)
        timed_out = await whole_answer(ledger, data, wait=0.05)
        ledger.set_live(None, '{"a":1}')
        structured = await whole_answer(ledger, {})
        return untracked, waited, timed_out, structured

    untracked, waited, timed_out, structured = asyncio.run(scenario())
    assert untracked == "EXAMPLE"
    assert waited == "The key is AKIAIOSFODNN7EXAMPLE"
    assert timed_out == "EXAMPLE"
    assert structured == '{"a":1}'


def test_a_subagent_stop_is_judged_on_its_last_block() -> None:
    async def scenario() -> str:
        ledger = AnswerLedger()
        ledger.tracking = True
        ledger.set_live("parent text EXAMPLE", None)
        return await whole_answer(ledger, {"last_assistant_message": "EXAMPLE", "agent_id": "a"})

    assert asyncio.run(scenario()) == "EXAMPLE"


def test_a_stop_denial_also_denies_the_last_block_the_result_carries() -> None:
    ledger = AnswerLedger()
    note_hook_output(
        ledger,
        "Stop",
        {"last_assistant_message": "IOSFODNN7EXAMPLE"},
        {"decision": "block", "reason": "AWS key"},
        answer="The key is AKIAIOSFODNN7EXAMPLE",
    )
    assert ledger.denial_reason("The key is AKIAIOSFODNN7EXAMPLE") == "AWS key"
    assert ledger.denial_reason("IOSFODNN7EXAMPLE") == "AWS key"


# ------------------------------------------------------------ tool-call inputs

_KEY = "AKIAIOSFODNN7EXAMPLE"


def _pre_tool(ledger: AnswerLedger, call_id: str, specific: dict[str, Any]) -> None:
    output = {"hookSpecificOutput": {"hookEventName": "PreToolUse", **specific}} if specific else {}
    note_hook_output(ledger, "PreToolUse", {"tool_use_id": call_id}, output)


def _denied_call(ledger: AnswerLedger, call_id: str, reason: str = "Key in call") -> None:
    _pre_tool(
        ledger,
        call_id,
        {
            "permissionDecision": "deny",
            "permissionDecisionReason": f"Blocked by Akto Guardrails: {reason}",
        },
    )


def test_the_ledger_hears_pretooluse_verdicts_by_call_id() -> None:
    ledger = AnswerLedger()
    _denied_call(ledger, "d1")
    _pre_tool(ledger, "m1", {"updatedInput": {"command": "echo [MASKED]"}})
    _pre_tool(ledger, "a1", {})
    note_hook_output(ledger, "PreToolUse", {"tool_use_id": "c1"}, {"continue_": False})
    note_hook_output(ledger, "PreToolUse", {"tool_use_id": ""}, {})
    note_hook_output(ledger, "PreToolUse", {}, {})
    assert ledger.tool_call("d1") == ("deny", "Key in call")
    assert ledger.tool_call("m1") == ("mask", {"command": "echo [MASKED]"})
    assert ledger.tool_call("a1") == ("allow", None)
    assert ledger.tool_call("c1") == ("deny", "blocked")
    assert ledger.tool_call("") is None and ledger.tool_call("unknown") is None


def test_a_tool_input_is_judged_with_the_turns_text_in_one_unit() -> None:
    ledger = AnswerLedger()
    _pre_tool(ledger, "t1", {})  # allowed as a request: still judged as what the app sees
    holder = Holder(ledger, judging=True)
    holder.feed(_text("Let me look."))
    holder.feed(_call("Bash", {"description": f"note {_KEY}"}, "t1"))
    batch = _batch(holder.feed(_tool_result("t1", "")))
    assert batch.texts == (f'Let me look.\n{{"description":"note {_KEY}"}}',)


def test_a_tool_input_with_no_pretooluse_verdict_is_judged_too() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_call("mcp__web__fetch", {"url": _KEY}, "t1"))
    batch = _batch(holder.feed(_tool_result("t1", "")))
    assert batch.texts == (f'{{"url":"{_KEY}"}}',)


def test_a_tool_input_the_judge_denies_reaches_the_app_withheld_with_an_error_result() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_call("Bash", {"description": _KEY}, "t1"))
    batch = _batch(holder.feed(_tool_result("t1", "")))
    out = holder.settle(batch, {u: "AWS key" for u in batch.unjudged})
    [call, shown] = out
    assert isinstance(call, AssistantMessage) and _KEY not in repr(call)
    assert isinstance(call.content[0], ToolUseBlock) and call.content[0].id == "t1"
    assert "AWS key" in str(call.content[0].input) and isinstance(shown, UserMessage)
    result = holder.feed(_result("done"))[0]
    assert result.is_error is True and result.subtype == GUARDRAIL_ERROR_SUBTYPE
    assert "AWS key" in result.result


def test_an_allowed_tool_input_reaches_the_app_as_written() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    call = _call("Bash", {"command": "ls"}, "t1")
    holder.feed(call)
    batch = _batch(holder.feed(_tool_result("t1", "")))
    out = holder.settle(batch, {u: None for u in batch.unjudged})
    assert out[0] is call
    assert holder.feed(_result("done"))[0].is_error is False


def test_a_pretooluse_denied_input_is_withheld_unjudged_and_the_result_says_why() -> None:
    ledger = AnswerLedger()
    _denied_call(ledger, "t1")
    holder = Holder(ledger, judging=True)
    holder.feed(_text("Running it."))
    holder.feed(_call("Bash", {"command": "echo CALL-SECRET"}, "t1"))
    batch = _batch(holder.feed(_tool_result("t1", "denied")))
    assert batch.texts == ("Running it.",)  # the withheld input is not judged
    out = holder.settle(batch, {u: None for u in batch.unjudged})
    assert "CALL-SECRET" not in repr(out) and "Key in call" in repr(out[1])
    assert [type(m).__name__ for m in out] == ["AssistantMessage"] * 2 + ["UserMessage"]
    result = holder.feed(_result("ok"))[0]
    assert result.is_error is True and "Key in call" in result.result


def test_a_pretooluse_denied_input_is_withheld_without_a_judge() -> None:
    ledger = AnswerLedger()
    _denied_call(ledger, "t1")
    holder = Holder(ledger)
    holder.feed(_call("Bash", {"command": "echo CALL-SECRET"}, "t1"))
    out = holder.feed(_tool_result("t1", "denied"))
    assert "CALL-SECRET" not in repr(out)
    assert holder.feed(_result("ok"))[0].is_error is True


def test_a_masked_input_reaches_the_app_masked_and_the_turn_goes_on() -> None:
    ledger = AnswerLedger()
    _pre_tool(ledger, "t1", {"updatedInput": {"command": "echo [MASKED]"}})
    holder = Holder(ledger, judging=True)
    holder.feed(_call("Bash", {"command": "echo CALL-SECRET"}, "t1"))
    batch = _batch(holder.feed(_tool_result("t1", "[MASKED]")))
    assert batch.texts == ('{"command":"echo [MASKED]"}',)  # what the app would see
    out = holder.settle(batch, {u: None for u in batch.unjudged})
    assert out[0].content[0].input == {"command": "echo [MASKED]"}
    assert holder.feed(_result("ok"))[0].is_error is False


def test_partial_events_beside_a_withheld_input_are_dropped() -> None:
    from claude_agent_sdk import StreamEvent

    ledger = AnswerLedger()
    _denied_call(ledger, "t1")
    delta = {"type": "content_block_delta", "delta": {"partial_json": "CALL-SECRET"}}
    event = StreamEvent(uuid="u", session_id="s", event=delta)
    holder = Holder(ledger)
    assert holder.feed(event) == []
    holder.feed(_call("Bash", {"command": "echo CALL-SECRET"}, "t1"))
    out = holder.feed(_tool_result("t1", "denied"))
    assert "CALL-SECRET" not in repr(out) and not any(isinstance(m, StreamEvent) for m in out)


def test_what_repeats_a_withheld_input_is_withheld_too() -> None:
    """The Agent call's description and prompt come back in the task messages and the
    subagent's first message; a denied call comes back in the result's denials."""
    from claude_agent_sdk import TaskStartedMessage

    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_call("Agent", {"description": f"d {_KEY}", "prompt": f"p {_KEY}"}, "a1"))
    started = TaskStartedMessage(
        subtype="task_started",
        data={"description": f"d {_KEY}"},
        task_id="k",
        description=f"d {_KEY}",
        uuid="u",
        session_id="s",
        tool_use_id="a1",
    )
    batch = _batch(holder.feed(started))
    out = holder.settle(batch, {u: "AWS key" for u in batch.unjudged})
    prompt = UserMessage(content=[TextBlock(text=f"p {_KEY}")], parent_tool_use_id="a1")
    out += holder.feed(prompt)
    result = dataclasses.replace(
        _result("done"),
        permission_denials=[{"tool_name": "Agent", "tool_use_id": "a1", "tool_input": {"k": _KEY}}],
    )
    out += holder.feed(result)
    assert len(out) == 4 and _KEY not in repr(out)
    assert "AWS key" in out[1].description and "AWS key" in str(out[2].content)
    assert out[3].is_error is True and "AWS key" in str(out[3].permission_denials)


def test_a_subagents_progress_is_judged_with_its_call_and_withheld_with_it() -> None:
    from claude_agent_sdk import TaskProgressMessage

    holder = Holder(AnswerLedger(), judging=True)
    progress = TaskProgressMessage(
        subtype="task_progress",
        data={"description": f"Running note {_KEY}"},
        task_id="k",
        description=f"Running note {_KEY}",
        usage={},
        uuid="u",
        session_id="s",
        tool_use_id="a1",
    )
    assert holder.feed(progress) == []
    sub_call = AssistantMessage(
        content=[ToolUseBlock(id="t2", name="Bash", input={"description": f"note {_KEY}"})],
        model="m",
        parent_tool_use_id="a1",
    )
    holder.feed(sub_call)
    done = UserMessage(
        content=[ToolResultBlock(tool_use_id="t2", content="")], parent_tool_use_id="a1"
    )
    batch = _batch(holder.feed(done))
    assert batch.texts == (f'{{"description":"note {_KEY}"}}\nRunning note {_KEY}',)
    assert [u.key for u in batch.unjudged] == ["a1"]
    out = holder.settle(batch, {u: "AWS key" for u in batch.unjudged})
    assert len(out) == 3 and _KEY not in repr(out)
    assert "AWS key" in out[0].data["description"]


def test_an_unjudged_tool_input_is_withheld_when_the_judge_fails() -> None:
    from akto_otel.answers import hold_answers

    async def broken(text: str) -> str | None:
        raise RuntimeError("akto down")

    async def stream() -> Any:
        yield _call("Bash", {"description": _KEY}, "t1")
        yield _tool_result("t1", "")
        yield _result("done")

    async def run() -> list[Any]:
        return [m async for m in hold_answers(stream(), AnswerLedger(), judge=broken)]

    out = asyncio.run(run())
    assert _KEY not in repr(out) and out[-1].is_error is True


def test_a_deferred_call_whose_input_was_withheld_is_withheld_in_the_result() -> None:
    from claude_agent_sdk.types import DeferredToolUse

    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_call("Bash", {"description": _KEY}, "t1"))
    batch = _batch(holder.feed(_result("done")))
    deferred = DeferredToolUse(id="t1", name="Bash", input={"description": _KEY})
    batch = dataclasses.replace(
        batch, trailing=dataclasses.replace(batch.trailing, deferred_tool_use=deferred)
    )
    out = holder.settle(batch, {u: "AWS key" for u in batch.unjudged})
    assert len(out) == 2 and _KEY not in repr(out)
    result = out[-1]
    assert result.deferred_tool_use.id == "t1" and "AWS key" in str(result.deferred_tool_use.input)
    assert result.is_error is True
