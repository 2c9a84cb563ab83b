"""The held-answer decisions without the CLI: what is judged as one answer, what is held,
what the app gets. Fast, for the decisions tests/security/test_answer_paths.py proves
through the real CLI."""

from __future__ import annotations

import asyncio
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
    assert first.texts == ("before ",)
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
