"""The held-answer path's small decisions, one at a time (pure, no CLI): how a denied
text is recognised, what a hook output tells the ledger, the forms the app gets.

They pin the behaviour the real-CLI suites (tests/security/test_answer_paths.py,
tests/security/test_held_answers.py) prove end to end, fast enough to run per mutant
(``nox -s mutation -- answers``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from claude_agent_sdk import ResultMessage

from akto_otel.answers import (
    ANSWER_BLOCK_PREFIX,
    GUARDRAIL_ERROR_SUBTYPE,
    AnswerLedger,
    hook_answer,
    note_hook_output,
    structured_text,
    withheld_agent_output,
)


def _result(**kw: Any) -> ResultMessage:
    fields: dict[str, Any] = {
        "subtype": "success",
        "duration_ms": 1,
        "duration_api_ms": 1,
        "is_error": False,
        "num_turns": 1,
        "session_id": "s",
        "result": "done",
    }
    fields.update(kw)
    return ResultMessage(**fields)


# ------------------------------------------------------------- recognising a denial


def test_a_denied_text_is_recognised_whole_inside_or_around_but_not_when_short() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("the key is SECRET-42", "Secret")
    assert ledger.denial_reason("the key is SECRET-42") == "Secret"
    assert ledger.denial_reason("  the key is SECRET-42\n") == "Secret"
    assert ledger.denial_reason("prefix the key is SECRET-42 suffix") == "Secret"
    assert ledger.denial_reason("SECRET-42") == "Secret"  # 9 characters, inside it
    assert ledger.denial_reason("key is") is None  # 6 characters: equal only
    assert ledger.denial_reason("") is None and ledger.denial_reason("   ") is None
    assert ledger.denial_reason("something else entirely") is None


def test_an_eight_character_text_inside_a_denied_one_counts_and_seven_does_not() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("abcdefghijkl", "r")
    assert ledger.denial_reason("abcdefgh") == "r"
    assert ledger.denial_reason("abcdefg") is None
    assert ledger.denial_reason("abcdefghijkl") == "r"


def test_the_newest_denial_of_a_text_gives_the_reason() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("the same long answer", "old")
    ledger.record_denial("the same long answer", "new")
    assert ledger.denial_reason("the same long answer") == "new"


def test_blank_notes_are_ignored() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("   ", "r")
    ledger.record_allowed("  ")
    assert ledger.denial_reason("   ") is None
    assert not ledger.was_judged("  ") and not ledger.was_judged_exactly("  ")


def test_judged_exactly_means_equal_and_judged_means_contained() -> None:
    ledger = AnswerLedger()
    ledger.record_allowed("an allowed answer")
    assert ledger.was_judged_exactly(" an allowed answer ")
    assert not ledger.was_judged_exactly("an allowed answer and more")
    assert ledger.was_judged("an allowed answer and more")
    assert not ledger.was_judged("unrelated words here")
    ledger.record_denial("a denied answer", "r")
    assert ledger.was_judged("a denied answer")


def test_a_prompt_block_is_taken_once_and_a_lone_one_matches_no_session() -> None:
    ledger = AnswerLedger()
    ledger.record_prompt_block("s1", "Injection")
    assert ledger.take_prompt_block("other") is None
    assert ledger.take_prompt_block("s1") == "Injection"
    assert ledger.take_prompt_block("s1") is None
    ledger.record_prompt_block("s2", "r2")
    assert ledger.take_prompt_block("") == "r2"
    ledger.record_prompt_block("a", "ra")
    ledger.record_prompt_block("b", "rb")
    assert ledger.take_prompt_block("") is None  # two candidates: neither


def test_the_ledgers_maps_keep_the_newest_entries() -> None:
    ledger = AnswerLedger()
    for i in range(1100):
        ledger.record_prompt_block(f"s{i}", f"r{i}")
        ledger.record_tool_output(f"t{i}", f"r{i}", None, stopped=True)
        ledger.record_tool_call(f"c{i}", "deny", f"r{i}")
    assert ledger.take_prompt_block("s1099") == "r1099"
    assert ledger.take_prompt_block("s0") is None
    assert ledger.tool_output("t1099") == ("r1099", None, True)
    assert ledger.tool_output("t0") is None
    assert ledger.tool_call("c1099") == ("deny", "r1099")
    assert ledger.tool_call("c0") is None
    assert ledger.tool_call("c76") == ("deny", "r76")  # 1024 kept


def test_a_recorded_replacement_is_a_copy() -> None:
    ledger = AnswerLedger()
    replacement = {"stdout": "[EMAIL]"}
    ledger.record_tool_output("t", "r", replacement, stopped=False)
    masked = {"command": "echo [M]"}
    ledger.record_tool_call("c", "mask", masked)
    replacement["stdout"] = "bob@example.org"
    masked["command"] = "echo secret"
    assert ledger.tool_output("t") == ("r", {"stdout": "[EMAIL]"}, False)
    assert ledger.tool_call("c") == ("mask", {"command": "echo [M]"})


# ---------------------------------------------------------- what a hook output says


def test_a_stop_output_notes_its_reason_without_the_prefix() -> None:
    for key in ("reason", "stopReason", "systemMessage"):
        ledger = AnswerLedger()
        output = {"decision": "block", key: ANSWER_BLOCK_PREFIX + "Secret in response"}
        note_hook_output(ledger, "Stop", {"last_assistant_message": "a long answer"}, output)
        assert ledger.denial_reason("a long answer") == "Secret in response", key
    ledger = AnswerLedger()
    note_hook_output(
        ledger, "Stop", {"last_assistant_message": "a long answer"}, {"continue_": False}
    )
    assert ledger.denial_reason("a long answer") == "blocked"
    ledger = AnswerLedger()
    output = {"decision": "block", "reason": "", "stopReason": "Blocked by Akto Guardrails: P"}
    note_hook_output(ledger, "Stop", {"last_assistant_message": "a long answer"}, output)
    assert ledger.denial_reason("a long answer") == "P"


def test_a_stop_allow_is_noted_as_judged_and_a_continue_true_is_no_denial() -> None:
    ledger = AnswerLedger()
    output = {"continue_": True}
    note_hook_output(ledger, "SubagentStop", {"last_assistant_message": "fine words"}, output)
    assert ledger.was_judged_exactly("fine words") and ledger.denial_reason("fine words") is None


def test_a_stop_denial_of_a_whole_turn_also_denies_its_last_block() -> None:
    ledger = AnswerLedger()
    data = {"last_assistant_message": "EXAMPLE, use it."}
    output = {"decision": "block", "reason": "AWS key"}
    note_hook_output(ledger, "Stop", data, output, answer="key AKIAIOSFODNN7EXAMPLE, use it.")
    assert ledger.denial_reason("EXAMPLE, use it.") == "AWS key"
    assert ledger.denial_reason("key AKIAIOSFODNN7EXAMPLE, use it.") == "AWS key"


def test_an_empty_answer_notes_nothing() -> None:
    ledger = AnswerLedger()
    note_hook_output(ledger, "Stop", {"last_assistant_message": ""}, {"decision": "block"})
    assert ledger.denial_reason("") is None and not ledger.was_judged_exactly("blocked")


def test_a_prompt_block_is_noted_by_session_and_an_allowed_prompt_is_not() -> None:
    ledger = AnswerLedger()
    note_hook_output(ledger, "UserPromptSubmit", {"session_id": "s"}, {})
    assert ledger.take_prompt_block("s") is None
    output = {"continue_": False, "stopReason": "Blocked by Akto Guardrails: Injection"}
    note_hook_output(ledger, "UserPromptSubmit", {"session_id": "s"}, output)
    assert ledger.take_prompt_block("s") == "Injection"


def test_a_tool_output_withheld_or_replaced_is_noted_by_call_id() -> None:
    ledger = AnswerLedger()
    stop = {"continue_": False, "stopReason": "Blocked by Akto Guardrails: Secret"}
    note_hook_output(ledger, "PostToolUseFailure", {"tool_use_id": "f"}, stop)
    assert ledger.tool_output("f") == ("Secret", None, True)
    for key in ("updatedToolOutput", "updatedMCPToolOutput"):
        specific = {"hookEventName": "PostToolUse", key: {"x": 1}}
        note_hook_output(
            ledger, "PostToolUse", {"tool_use_id": key}, {"hookSpecificOutput": specific}
        )
        assert ledger.tool_output(key) == ("blocked", {"x": 1}, False)
    note_hook_output(ledger, "PostToolUse", {"tool_use_id": "ok"}, {"hookSpecificOutput": {}})
    note_hook_output(ledger, "PostToolUse", {"tool_use_id": "ok2"}, {"hookSpecificOutput": "x"})
    note_hook_output(ledger, "PostToolUse", {"tool_use_id": 7}, stop)
    assert ledger.tool_output("ok") is None and ledger.tool_output("ok2") is None


def test_malformed_outputs_note_nothing_and_never_raise() -> None:
    ledger = AnswerLedger()
    note_hook_output(ledger, "Stop", {"last_assistant_message": "a long answer"}, None)
    note_hook_output(ledger, "Stop", None, {"decision": "block"})
    note_hook_output(ledger, "PreToolUse", {"tool_use_id": "c"}, "deny")
    assert ledger.denial_reason("a long answer") is None and ledger.tool_call("c") is None


def test_a_pretooluse_ask_or_allow_is_not_a_denial() -> None:
    ledger = AnswerLedger()
    ask = {"hookSpecificOutput": {"permissionDecision": "ask", "permissionDecisionReason": "r"}}
    note_hook_output(ledger, "PreToolUse", {"tool_use_id": "a"}, ask)
    note_hook_output(ledger, "PreToolUse", {"tool_use_id": "b"}, {"hookSpecificOutput": "x"})
    assert ledger.tool_call("a") == ("allow", None) and ledger.tool_call("b") == ("allow", None)


def test_a_pretooluse_deny_without_a_reason_is_still_a_denial() -> None:
    ledger = AnswerLedger()
    deny = {"hookSpecificOutput": {"permissionDecision": "deny"}}
    note_hook_output(ledger, "PreToolUse", {"tool_use_id": "a"}, deny)
    assert ledger.tool_call("a") == ("deny", "blocked")


# ------------------------------------------------------------------ texts and forms


def test_hook_answer_prefers_the_whole_turn_that_ends_with_the_named_block() -> None:
    data = {"last_assistant_message": " tail "}
    assert hook_answer(data) == "tail"
    assert hook_answer(data, " head tail ") == "head tail"
    assert hook_answer(data, "head other") == "tail"
    assert hook_answer({}, " whole ") == "whole"
    assert hook_answer({"last_assistant_message": 3}) == ""


def test_structured_text_is_canonical_json_or_the_value_as_text() -> None:
    assert structured_text({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    assert structured_text({1, 2}).startswith("{")  # not JSON: str()


def test_a_denied_subagent_answer_in_the_agent_tools_result_is_replaced() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("Found SECRET-TOKEN in config", "Secret")
    response = {"content": [{"type": "text", "text": "Found SECRET-TOKEN in config"}], "id": 1}
    for tool in ("Agent", "Task"):
        out = withheld_agent_output(ledger, tool, response)
        assert out is not None
        replaced = out["hookSpecificOutput"]["updatedToolOutput"]
        assert replaced == {
            "content": [{"type": "text", "text": ANSWER_BLOCK_PREFIX + "Secret"}],
            "id": 1,
        }
        assert out["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    assert response["content"][0]["text"] == "Found SECRET-TOKEN in config"  # not mutated
    assert withheld_agent_output(ledger, "Bash", response) is None
    assert withheld_agent_output(ledger, "Agent", {"content": "x"}) is None
    assert withheld_agent_output(ledger, "Agent", "x") is None
    clean = {"content": [{"type": "text", "text": "all fine here"}, "odd"]}
    assert withheld_agent_output(ledger, "Agent", clean) is None


def test_the_error_result_keeps_everything_but_the_answer() -> None:
    from akto_otel.answers import AnswerLedger as _L
    from akto_otel.answers import Holder

    ledger = _L()
    ledger.record_denial("the long denied answer", "Secret")
    out = Holder(ledger).feed(_result(result="the long denied answer", structured_output={"a": 1}))
    [shown] = out
    assert shown.is_error is True and shown.subtype == GUARDRAIL_ERROR_SUBTYPE
    assert shown.result == ANSWER_BLOCK_PREFIX + "Secret" and shown.structured_output is None
    assert shown.session_id == "s" and shown.num_turns == 1


# ------------------------------------------------------- the holder, message by message

from claude_agent_sdk import (  # noqa: E402
    AssistantMessage,
    StreamEvent,
    SystemMessage,
    TaskNotificationMessage,
    TaskStartedMessage,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

from akto_otel.answers import (  # noqa: E402
    PROMPT_BLOCK_PREFIX,
    Holder,
    Unjudged,
    hold_answers,
    whole_answer,
)

_WITHHELD = "[tool input withheld: Blocked by Akto Guardrails: {}]"


def _text(text: str, parent: str | None = None) -> AssistantMessage:
    return AssistantMessage(content=[TextBlock(text=text)], model="m", parent_tool_use_id=parent)


def _call(name: str, value: Any, call_id: str, parent: str | None = None) -> AssistantMessage:
    block = ToolUseBlock(id=call_id, name=name, input=value)
    return AssistantMessage(content=[block], model="m", parent_tool_use_id=parent)


def _tool_result(call_id: str, content: Any = "", parent: str | None = None) -> UserMessage:
    return UserMessage(
        content=[ToolResultBlock(tool_use_id=call_id, content=content)],
        tool_use_result=content,
        parent_tool_use_id=parent,
    )


def _prompt_outcome(kind: str, session_id: str | None = "s1") -> SystemMessage:
    data: dict[str, Any] = {"prompt_submit_outcome": {"kind": kind}}
    if session_id is not None:
        data["session_id"] = session_id
    return SystemMessage(subtype="status", data=data)


def _settled(holder: Holder, out: list[Any], reason: str | None) -> list[Any]:
    assert len(out) == 1 and isinstance(out[0], Unjudged), out
    batch = out[0]
    return holder.settle(batch, {u: reason for u in batch.unjudged})


def test_a_prompt_outcome_notice_carries_the_block_reason_to_the_result() -> None:
    ledger = AnswerLedger()
    ledger.record_prompt_block("s1", "Injection")
    holder = Holder(ledger)
    notice = _prompt_outcome("hook_blocked")
    assert holder.feed(notice) == [notice]
    [result] = holder.feed(_result())
    assert result.is_error is True and result.result == PROMPT_BLOCK_PREFIX + "Injection"
    assert ledger.take_prompt_block("s1") is None  # taken by the notice


def test_a_prompt_outcome_notice_without_a_session_takes_the_lone_block() -> None:
    ledger = AnswerLedger()
    ledger.record_prompt_block("sX", "Injection")
    holder = Holder(ledger)
    holder.feed(_prompt_outcome("hook", session_id=None))
    [result] = holder.feed(_result())
    assert result.result == PROMPT_BLOCK_PREFIX + "Injection"


def test_other_system_messages_are_no_prompt_outcome() -> None:
    for message in (
        _prompt_outcome("model"),
        SystemMessage(subtype="status", data={"prompt_submit_outcome": "hook"}),
        SystemMessage(subtype="status", data={"session_id": "s1"}),
        TaskNotificationMessage(
            subtype="task_notification",
            data={"prompt_submit_outcome": {"kind": "hook"}, "session_id": "s1"},
            task_id="k",
            status="completed",
            output_file="f",
            summary="fine",
            uuid="u",
            session_id="s1",
        ),
    ):
        ledger = AnswerLedger()
        ledger.record_prompt_block("s1", "Injection")
        holder = Holder(ledger)
        assert holder.feed(message) == [message]
        [result] = holder.feed(_result())
        assert result.is_error is False, message
        assert ledger.take_prompt_block("s1") == "Injection"


def test_a_task_notification_with_a_denied_summary_gets_the_reason() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("Found SECRET-TOKEN in config", "Secret")
    note = TaskNotificationMessage(
        subtype="task_notification",
        data={"summary": "Found SECRET-TOKEN in config", "task_id": "k"},
        task_id="k",
        status="completed",
        output_file="f",
        summary="Found SECRET-TOKEN in config",
        uuid="u",
        session_id="s",
    )
    [shown] = Holder(ledger).feed(note)
    assert shown.summary == ANSWER_BLOCK_PREFIX + "Secret"
    assert shown.data == {"summary": ANSWER_BLOCK_PREFIX + "Secret", "task_id": "k"}
    assert shown.task_id == "k" and shown.status == "completed"
    clean = dataclasses.replace(note, summary="all fine here", data={"summary": "all fine here"})
    assert Holder(ledger).feed(clean) == [clean]
    assert Holder(ledger).feed(dataclasses.replace(note, summary=None)) == [
        dataclasses.replace(note, summary=None)
    ]


def _started(call_id: str) -> TaskStartedMessage:
    return TaskStartedMessage(
        subtype="task_started",
        data={"description": "d KEY", "task_id": "k"},
        task_id="k",
        description="d KEY",
        uuid="u",
        session_id="s",
        tool_use_id=call_id,
    )


def test_a_task_started_for_a_withheld_call_gets_the_reason_and_others_pass() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_call("Agent", {"description": "d KEY"}, "a1"))
    out = _settled(holder, holder.feed(_started("a1")), "Key")
    shown = out[-1]
    assert shown.description == _WITHHELD.format("Key")
    assert shown.data == {"description": _WITHHELD.format("Key"), "task_id": "k"}
    other = _started("a2")
    assert holder.feed(other) == [other]
    nameless = dataclasses.replace(other, tool_use_id=None)
    assert holder.feed(nameless) == [nameless]


def test_a_subagents_prompt_for_a_withheld_call_gets_the_reason() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_call("Agent", {"prompt": "p KEY"}, "a1"))
    _settled(holder, holder.feed(_tool_result("x")), "Key")
    prompt = UserMessage(content=[TextBlock(text="p KEY")], parent_tool_use_id="a1")
    [shown] = holder.feed(prompt)
    assert shown.content == _WITHHELD.format("Key") and shown.parent_tool_use_id == "a1"
    result_of_sub = _tool_result("t9", "out", parent="a1")
    assert holder.feed(result_of_sub) == [result_of_sub]  # a tool result, not the prompt
    other = UserMessage(content=[TextBlock(text="p")], parent_tool_use_id="a2")
    assert holder.feed(other) == [other]
    main = UserMessage(content="hello")
    assert holder.feed(main) == [main]


def test_a_tool_result_resets_only_its_agents_turn_and_keeps_the_structured_output() -> None:
    ledger = AnswerLedger()
    holder = Holder(ledger, judging=True)
    holder.feed(_call("StructuredOutput", {"a": 1}, "s1"))
    holder.feed(_text("main words"))
    assert ledger.live_text() == "main words" and ledger.live_structured() == '{"a":1}'
    out = holder.feed(_tool_result("s1"))
    _settled(holder, out, None)
    assert ledger.live_text() is None and ledger.live_structured() == '{"a":1}'
    holder.feed(_text("more words"))
    holder.feed(_text("sub words", parent="a1"))
    _settled(holder, holder.feed(_tool_result("t2", parent="a1")), None)
    assert ledger.live_text() == "more words"
    holder.feed(_text(" and on"))
    [batch] = holder.feed(_tool_result("t3"))
    assert isinstance(batch, Unjudged)
    assert sorted(u.text for u in batch.unjudged) == ["more words and on"]


def test_the_results_denials_show_each_input_as_the_app_got_it() -> None:
    ledger = AnswerLedger()
    ledger.record_tool_call("d1", "deny", "Key")
    ledger.record_tool_call("m1", "mask", {"command": "[M]"})
    ledger.record_tool_call("a1", "allow")
    denials: list[Any] = [
        "odd",
        {"tool_name": "Bash", "tool_use_id": "d1", "tool_input": {"command": "KEY"}},
        {"tool_name": "Bash", "tool_use_id": "m1", "tool_input": {"command": "KEY"}},
        {"tool_name": "Bash", "tool_use_id": "a1", "tool_input": {"command": "ls"}},
        {"tool_name": "Bash", "tool_use_id": "n1", "tool_input": {"command": "pwd"}},
        {"tool_name": "Bash", "tool_use_id": 5, "tool_input": {}},
    ]
    [result] = Holder(ledger).feed(_result(permission_denials=denials))
    assert result.permission_denials == [
        "odd",
        {
            "tool_name": "Bash",
            "tool_use_id": "d1",
            "tool_input": {"withheld": _WITHHELD.format("Key")},
        },
        {"tool_name": "Bash", "tool_use_id": "m1", "tool_input": {"command": "[M]"}},
        denials[3],
        denials[4],
        denials[5],
    ]
    none = _result(permission_denials=[])
    assert Holder(ledger).feed(none) == [none]


def test_a_denied_answer_in_a_tool_result_is_replaced_but_does_not_end_the_turn() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("Found SECRET-TOKEN in config", "Secret")
    holder = Holder(ledger)
    handback = UserMessage(
        content=[
            TextBlock(text="before"),
            ToolResultBlock(tool_use_id="a1", content=[{"type": "text", "text": "fine"}]),
            ToolResultBlock(
                tool_use_id="a2", content=[{"type": "text", "text": "Found SECRET-TOKEN in config"}]
            ),
        ],
        tool_use_result={"status": "completed"},
    )
    [shown] = holder.feed(handback)
    withheld = "[tool output withheld: Blocked by Akto Guardrails: Secret]"
    assert shown.content[0] == TextBlock(text="before")
    assert shown.content[1] == handback.content[1]
    assert shown.content[2] == ToolResultBlock(tool_use_id="a2", content=withheld)
    assert shown.tool_use_result == withheld
    assert holder.feed(_result())[0].is_error is False
    clean = _tool_result("a3", "fine output")
    assert holder.feed(clean) == [clean]


def test_tool_output_forms_for_the_app() -> None:
    ledger = AnswerLedger()
    ledger.record_tool_output("b", "r", {"stdout": "out", "stderr": "err"}, stopped=False)
    ledger.record_tool_output("c", "r", {"stdout": "out", "stderr": ""}, stopped=False)
    ledger.record_tool_output("l", "r", [{"type": "text", "text": "x"}], stopped=False)
    ledger.record_tool_output("o", "r", {"k": 1}, stopped=False)
    ledger.record_tool_output("s", "r", "plain", stopped=False)
    holder = Holder(ledger)
    shown = {k: holder.feed(_tool_result(k, "orig"))[0].content[0].content for k in "bclos"}
    assert shown == {
        "b": "out\nerr",
        "c": "out",
        "l": [{"type": "text", "text": "x"}],
        "o": '{"k":1}',
        "s": "plain",
    }


def test_settle_records_the_judges_verdicts_and_the_first_reason_wins() -> None:
    ledger = AnswerLedger()
    holder = Holder(ledger, judging=True)
    holder.feed(_text("first denied text"))
    holder.feed(_text("sub denied text", parent="a1"))
    [batch] = holder.feed(_tool_result("t1"))
    reasons = {u: ("R-main" if u.key is None else "R-sub") for u in batch.unjudged}
    out = holder.settle(batch, reasons)
    assert [type(m).__name__ for m in out] == ["UserMessage"] and holder.dropped == 2
    assert ledger.denial_reason("first denied text") == "R-main"
    assert ledger.denial_reason("sub denied text") == "R-sub"
    holder.feed(_text("clean words"))
    [batch] = holder.feed(_tool_result("t2"))
    holder.settle(batch, {u: None for u in batch.unjudged})
    assert ledger.was_judged_exactly("clean words")
    [result] = holder.feed(_result())
    assert result.result == ANSWER_BLOCK_PREFIX + "R-main"


def test_a_hook_denied_main_turn_errors_the_result_unless_a_later_turn_passes() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("a hook denied turn", "Stop said no")
    holder = Holder(ledger, judging=True)
    holder.feed(_text("a hook denied turn"))
    [result] = holder.feed(_result())
    assert result.is_error is True and result.result == ANSWER_BLOCK_PREFIX + "Stop said no"
    holder = Holder(ledger, judging=True)
    holder.feed(_text("a hook denied turn"))
    assert holder.feed(UserMessage(content="Stop hook feedback")) != []
    holder.feed(_text("a later turn", parent="a1"))  # a subagent's: not the main turn
    _settled(holder, holder.feed(UserMessage(content="x", parent_tool_use_id="a1")), None)
    ledger.record_allowed("better words")
    holder.feed(_text("better words"))
    [*_, result] = holder.feed(_result())
    assert result.is_error is False


def test_partial_events_are_dropped_only_beside_a_denial() -> None:
    event = StreamEvent(uuid="u", session_id="s", event={"type": "content_block_delta"})
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(event)
    holder.feed(_text("clean"))
    out = _settled(holder, holder.feed(_tool_result("t1")), None)
    assert out[0] is event and len(out) == 3
    holder.feed(event)
    holder.feed(_text("denied"))
    out = _settled(holder, holder.feed(_tool_result("t2")), "no")
    assert [type(m).__name__ for m in out] == ["UserMessage"] and holder.dropped == 2


def test_a_thinking_denial_withholds_no_tool_input() -> None:
    from claude_agent_sdk import ThinkingBlock

    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(AssistantMessage(content=[ThinkingBlock(thinking="hmm", signature="s")], model="m"))
    call = _call("Bash", {"command": "ls"}, "t1")
    holder.feed(call)
    [batch] = holder.feed(_tool_result("t1"))
    out = holder.settle(
        batch, {u: ("no" if u.kind == "thinking" else None) for u in batch.unjudged}
    )
    assert out[0] is call


def test_fallback_forms_when_a_message_cannot_be_judged() -> None:
    class _Ledger(AnswerLedger):
        def denial_reason(self, text: str) -> str | None:
            raise RuntimeError("bug")

    async def stream() -> Any:
        yield _text("some words")
        yield SystemMessage(subtype="status", data={})
        yield _text("more words")
        yield _tool_result("t1", "out")
        yield _text("last words")
        yield _result()

    reports: list[tuple[str, str]] = []

    async def run(**kw: Any) -> list[Any]:
        return [m async for m in hold_answers(stream(), _Ledger(), **kw)]

    closed = asyncio.run(run())
    assert [type(m).__name__ for m in closed] == ["SystemMessage", "ResultMessage"]
    assert closed[-1].result == ANSWER_BLOCK_PREFIX + "could not be checked"
    assert closed[-1].subtype == GUARDRAIL_ERROR_SUBTYPE
    opened = asyncio.run(run(fail_open=True, on_unjudged=lambda w, e: reports.append((w, e))))
    assert [type(m).__name__ for m in opened] == [
        "AssistantMessage",
        "SystemMessage",
        "AssistantMessage",
        "UserMessage",
        "AssistantMessage",
        "ResultMessage",
    ]
    assert reports == [("held message", "RuntimeError")] * 3


def test_a_failure_at_the_end_of_the_stream_withholds_what_is_held() -> None:
    class _Ledger(AnswerLedger):
        def denial_reason(self, text: str) -> str | None:
            raise RuntimeError("bug")

    async def stream() -> Any:
        yield _text("held to the end")

    async def run(**kw: Any) -> list[Any]:
        return [m async for m in hold_answers(stream(), _Ledger(), **kw)]

    assert asyncio.run(run()) == []
    [shown] = asyncio.run(run(fail_open=True, on_unjudged=lambda w, e: None))
    assert shown.content[0].text == "held to the end"


def test_the_judge_is_asked_per_unit_and_its_failure_follows_the_fail_mode() -> None:
    asked: list[str] = []
    reports: list[tuple[str, str]] = []

    async def judge(text: str) -> str | None:
        asked.append(text)
        if "bad" in text:
            raise ValueError("down")
        return "Policy" if "deny" in text else None

    async def stream() -> Any:
        yield _text("please deny this")
        yield _tool_result("t1")
        yield _text("a bad one")
        yield _tool_result("t2")
        yield _text("fine words")
        yield _result(result="fine words")

    async def run(**kw: Any) -> list[Any]:
        return [m async for m in hold_answers(stream(), AnswerLedger(), judge=judge, **kw)]

    closed = asyncio.run(run())
    texts = [b.text for m in closed if isinstance(m, AssistantMessage) for b in m.content]
    assert texts == ["fine words"] and asked == ["please deny this", "a bad one", "fine words"]
    assert closed[-1].result == ANSWER_BLOCK_PREFIX + "Policy"
    asked.clear()
    opened = asyncio.run(run(fail_open=True, on_unjudged=lambda w, e: reports.append((w, e))))
    texts = [b.text for m in opened if isinstance(m, AssistantMessage) for b in m.content]
    assert texts == ["a bad one", "fine words"] and reports == [("held text", "ValueError")]


def test_without_a_judge_nothing_is_judged_and_hold_false_passes_at_once() -> None:
    async def stream() -> Any:
        yield _text("words")
        yield _result(result="words")

    async def run(**kw: Any) -> list[Any]:
        ledger = AnswerLedger()
        out = []
        async for m in hold_answers(stream(), ledger, **kw):
            out.append((m, ledger.tracking))
        assert ledger.tracking is False and ledger.live_text() is None
        return out

    out = asyncio.run(run())
    assert [type(m).__name__ for m, _ in out] == ["AssistantMessage", "ResultMessage"]
    assert all(tracking for _, tracking in out)
    out = asyncio.run(run(hold=False))
    assert [type(m).__name__ for m, _ in out] == ["AssistantMessage", "ResultMessage"]


def test_a_fresh_ledger_tracks_nothing_and_forgets_the_oldest_of_many_answers() -> None:
    ledger = AnswerLedger()
    assert ledger.tracking is False
    assert ledger.live_text() is None and ledger.live_structured() is None
    for i in range(300):
        ledger.record_denial(f"denied answer number {i:04d}", f"r{i}")
        ledger.record_allowed(f"allowed answer number {i:04d}")
    assert ledger.denial_reason("denied answer number 0299") == "r299"
    assert ledger.denial_reason("denied answer number 0000") is None  # 256 kept
    assert ledger.denial_reason("denied answer number 0044") == "r44"
    assert ledger.was_judged_exactly("allowed answer number 0299")
    assert not ledger.was_judged_exactly("allowed answer number 0000")


def test_whole_answer_without_a_holder_or_for_a_subagent_is_the_last_block() -> None:
    ledger = AnswerLedger()
    ledger.set_live("head tail", '{"a":1}')
    data = {"last_assistant_message": "tail"}
    assert asyncio.run(whole_answer(ledger, data, wait=0.01)) == "tail"
    ledger.tracking = True
    assert asyncio.run(whole_answer(ledger, {**data, "agent_id": "x"}, wait=0.01)) == "tail"
    assert asyncio.run(whole_answer(ledger, data, wait=0.01)) == "head tail"
    assert asyncio.run(whole_answer(ledger, {}, wait=0.01)) == '{"a":1}'
    ledger.set_live("other words", None)
    assert asyncio.run(whole_answer(ledger, data, wait=0.05)) == "tail"  # past the wait


def test_whole_answer_waits_briefly_for_the_holder() -> None:
    ledger = AnswerLedger()
    ledger.tracking = True

    async def run() -> str:
        async def later() -> None:
            await asyncio.sleep(0.05)
            ledger.set_live("head tail", None)

        task = asyncio.create_task(later())
        text = await whole_answer(ledger, {"last_assistant_message": "tail"}, wait=2.0)
        await task
        return text

    assert asyncio.run(run()) == "head tail"


def test_a_result_with_no_model_call_takes_its_sessions_prompt_block() -> None:
    ledger = AnswerLedger()
    ledger.record_prompt_block("s", "Injection")
    ledger.record_prompt_block("t", "Other")
    [result] = Holder(ledger).feed(_result(num_turns=0))
    assert result.result == PROMPT_BLOCK_PREFIX + "Injection"
    assert ledger.take_prompt_block("t") == "Other"
    ledger.record_prompt_block("s", "Again")
    [result] = Holder(ledger).feed(_result(num_turns=1))
    assert result.is_error is False


def test_the_results_structured_output_is_judged_and_a_denied_one_is_an_error() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    [batch] = holder.feed(_result(result=None, structured_output={"k": "v"}))
    assert isinstance(batch, Unjudged) and batch.texts == ('{"k":"v"}',)
    [result] = holder.settle(batch, {u: "Leak" for u in batch.unjudged})
    assert result.structured_output is None and result.result == ANSWER_BLOCK_PREFIX + "Leak"
    ledger = AnswerLedger()
    ledger.record_denial('{"k":"v"}', "Hook said no")
    [result] = Holder(ledger).feed(_result(result=None, structured_output={"k": "v"}))
    assert result.result == ANSWER_BLOCK_PREFIX + "Hook said no"
    [result] = Holder(ledger).feed(_result(result='{"k":"v"}'))
    assert result.result == ANSWER_BLOCK_PREFIX + "Hook said no"


def test_a_structured_output_call_waits_for_the_result_not_a_system_message() -> None:
    ledger = AnswerLedger()
    holder = Holder(ledger, judging=True)
    holder.feed(_call("StructuredOutput", {"k": 1}, "s1"))
    assert ledger.live_structured() == '{"k":1}'
    status = SystemMessage(subtype="status", data={})
    assert holder.feed(status) == [status]
    [batch] = holder.feed(_result(structured_output={"k": 1}))
    assert isinstance(batch, Unjudged) and batch.texts == ('{"k":1}',)
    out = holder.settle(batch, {u: None for u in batch.unjudged})
    assert [type(m).__name__ for m in out] == ["AssistantMessage", "ResultMessage"]


def test_a_subagents_progress_without_a_description_is_not_judged() -> None:
    from claude_agent_sdk import TaskProgressMessage

    holder = Holder(AnswerLedger(), judging=True)
    progress = TaskProgressMessage(
        subtype="task_progress",
        data={},
        task_id="k",
        description="",
        usage={},
        uuid="u",
        session_id="s",
        tool_use_id="a1",
    )
    assert holder.feed(progress) == []
    assert holder.feed(_tool_result("x", parent="a1")) == [progress, _tool_result("x", parent="a1")]
    holder.feed(dataclasses.replace(progress, description="Running ls"))
    [batch] = holder.feed(_tool_result("y", parent="a1"))
    assert isinstance(batch, Unjudged) and batch.texts == ("Running ls",)
    out = holder.settle(batch, {u: None for u in batch.unjudged})
    assert out[0].description == "Running ls"


def test_many_withheld_inputs_keep_the_newest() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    for i in range(1030):
        holder.feed(_call("Bash", {"n": i}, f"c{i}"))
        [batch] = holder.feed(_tool_result(f"c{i}"))
        holder.settle(batch, {u: f"r{i}" for u in batch.unjudged})
    newest = holder.feed(_started("c1029"))[0]
    oldest = _started("c0")
    assert newest.description == _WITHHELD.format("r1029")
    assert holder.feed(oldest) == [oldest]


def test_an_unjudged_delivery_without_a_reporter_is_told_and_marked() -> None:
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    from akto_otel.answers import note_unjudged
    from akto_otel.unjudged import LOGGER_NAME

    told: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = told.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        span = TracerProvider().get_tracer("t").start_span("s")
        note_unjudged(span, "held text", "RuntimeError")
        span.end()
        note_unjudged(None, "held text", "ValueError")
    finally:
        logger.removeHandler(handler)
    attributes = dict(span.attributes or {})  # type: ignore[attr-defined]
    assert attributes["akto.guardrail.unjudged_call"] is True
    assert attributes["akto.guardrail.fault"] == "RuntimeError"
    marks = [(getattr(r, "akto_hook", None), getattr(r, "akto_fault", None)) for r in told]
    assert marks == [("Stop", "RuntimeError"), ("Stop", "ValueError")]


def test_a_reporter_that_raises_does_not_break_the_stream() -> None:
    async def judge(text: str) -> str | None:
        raise RuntimeError("down")

    def reporter(where: str, error: str) -> None:
        raise ValueError("reporter bug")

    async def stream() -> Any:
        yield _text("words")
        yield _result(result="words")

    async def run() -> list[Any]:
        ledger = AnswerLedger()
        return [
            m
            async for m in hold_answers(
                stream(), ledger, judge=judge, fail_open=True, on_unjudged=reporter
            )
        ]

    out = asyncio.run(run())
    assert [type(m).__name__ for m in out] == ["AssistantMessage", "ResultMessage"]
    assert out[-1].is_error is False


# ------------------------------------------------------------ second round of pins


def test_a_prompt_outcome_notice_takes_its_own_sessions_block() -> None:
    ledger = AnswerLedger()
    ledger.record_prompt_block("s1", "First")
    ledger.record_prompt_block("s2", "Second")
    holder = Holder(ledger)
    holder.feed(_prompt_outcome("hook", session_id="s2"))
    [result] = holder.feed(_result())
    assert result.result == PROMPT_BLOCK_PREFIX + "Second"
    assert ledger.take_prompt_block("s1") == "First"


def test_a_result_with_no_session_and_no_model_call_takes_the_lone_block() -> None:
    ledger = AnswerLedger()
    ledger.record_prompt_block("q", "Lone")
    [result] = Holder(ledger).feed(_result(num_turns=0, session_id=""))
    assert result.result == PROMPT_BLOCK_PREFIX + "Lone"


def test_a_stop_denial_notes_a_last_block_that_is_not_part_of_the_judged_answer() -> None:
    ledger = AnswerLedger()
    data = {"last_assistant_message": " a different last block "}
    output = {"decision": "block", "reason": "Policy X"}
    note_hook_output(ledger, "Stop", data, output, answer="the whole judged turn")
    assert ledger.denial_reason("a different last block") == "Policy X"
    assert ledger.denial_reason("the whole judged turn") == "Policy X"
    ledger = AnswerLedger()
    note_hook_output(ledger, "Stop", {"last_assistant_message": 5}, output, answer="whole turn")
    assert ledger.denial_reason("whole turn") == "Policy X"


def test_a_prompt_block_without_a_session_is_noted_under_no_session() -> None:
    ledger = AnswerLedger()
    ledger.record_prompt_block("a", "First")
    note_hook_output(ledger, "UserPromptSubmit", {}, {"continue_": False, "stopReason": "Q"})
    assert ledger.take_prompt_block("") == "Q"


def test_a_tool_output_without_a_call_id_is_not_noted() -> None:
    ledger = AnswerLedger()
    note_hook_output(ledger, "PostToolUse", {"tool_use_id": ""}, {"continue_": False})
    assert ledger.tool_output("") is None


def test_whole_answer_polls_often() -> None:
    import time

    ledger = AnswerLedger()
    ledger.tracking = True

    async def run() -> str:
        async def later() -> None:
            await asyncio.sleep(0.02)
            ledger.set_live("head tail", None)

        task = asyncio.create_task(later())
        text = await whole_answer(ledger, {"last_assistant_message": "tail"}, wait=5.0)
        await task
        return text

    start = time.monotonic()
    assert asyncio.run(run()) == "head tail"
    assert time.monotonic() - start < 0.5


def test_an_unjudged_delivery_through_the_holder_without_a_reporter_is_told() -> None:
    import logging

    from akto_otel.unjudged import LOGGER_NAME

    told: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = told.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)

    async def judge(text: str) -> str | None:
        raise KeyError("down")

    async def stream() -> Any:
        yield _text("words")
        yield _result(result="words")

    async def run() -> list[Any]:
        return [
            m async for m in hold_answers(stream(), AnswerLedger(), judge=judge, fail_open=True)
        ]

    try:
        out = asyncio.run(run())
    finally:
        logger.removeHandler(handler)
    assert len(out) == 2
    assert [getattr(r, "akto_fault", None) for r in told] == ["KeyError"]


def test_a_deferred_call_that_was_not_withheld_is_left_alone() -> None:
    from claude_agent_sdk.types import DeferredToolUse

    deferred = DeferredToolUse(id="t1", name="Bash", input={"command": "ls"})
    result = _result(deferred_tool_use=deferred)
    assert Holder(AnswerLedger()).feed(result) == [result]


def test_a_progress_message_without_a_text_description_is_not_judged() -> None:
    from claude_agent_sdk import TaskProgressMessage

    holder = Holder(AnswerLedger(), judging=True)
    progress = TaskProgressMessage(
        subtype="task_progress",
        data={},
        task_id="k",
        description=None,  # type: ignore[arg-type]
        usage={},
        uuid="u",
        session_id="s",
        tool_use_id="a1",
    )
    holder.feed(progress)
    out = holder.feed(_tool_result("x", parent="a1"))
    assert out == [progress, _tool_result("x", parent="a1")]


def test_after_the_result_no_structured_output_is_live() -> None:
    ledger = AnswerLedger()
    holder = Holder(ledger)
    holder.feed(_call("StructuredOutput", {"a": 1}, "s1"))
    holder.feed(_result(structured_output={"a": 1}))
    holder.feed(_tool_result("t1"))
    assert ledger.live_structured() is None


def test_a_subagents_turn_does_not_clear_the_main_turns_denial() -> None:
    ledger = AnswerLedger()
    ledger.record_denial("a hook denied main turn", "Main no")
    holder = Holder(ledger, judging=True)
    holder.feed(_text("a hook denied main turn"))
    holder.feed(SystemMessage(subtype="status", data={}))
    holder.feed(_text("sub words", parent="a1"))
    _settled(holder, holder.feed(_tool_result("t1", parent="a1")), None)
    [result] = holder.feed(_result())
    assert result.result == ANSWER_BLOCK_PREFIX + "Main no"


def test_a_denied_subagent_turn_drops_only_its_own_messages_and_drops_add_up() -> None:
    holder = Holder(AnswerLedger(), judging=True)
    holder.feed(_text("main words"))
    holder.feed(_text("sub words", parent="a1"))
    [batch] = holder.feed(_tool_result("t1", parent="a1"))
    out = holder.settle(batch, {u: ("no" if u.key == "a1" else None) for u in batch.unjudged})
    assert [type(m).__name__ for m in out] == ["AssistantMessage", "UserMessage"]
    assert out[0].content[0].text == "main words" and holder.dropped == 1
    holder.feed(_text("more sub", parent="a1"))
    _settled(holder, holder.feed(_tool_result("t2", parent="a1")), "no")
    assert holder.dropped == 2


def test_a_withheld_progress_and_the_withheld_inputs_bound() -> None:
    from claude_agent_sdk import TaskProgressMessage

    holder = Holder(AnswerLedger(), judging=True)
    progress = TaskProgressMessage(
        subtype="task_progress",
        data={"description": "Running KEY"},
        task_id="k",
        description="Running KEY",
        usage={},
        uuid="u",
        session_id="s",
        tool_use_id="a1",
    )
    holder.feed(progress)
    out = _settled(holder, holder.feed(_tool_result("x", parent="a1")), "Key")
    assert out[0].description == _WITHHELD.format("Key")
    assert out[0].data == {"description": _WITHHELD.format("Key")}
    for i in range(1030):
        holder.feed(_call("Bash", {"n": i}, f"c{i}"))
        _settled(holder, holder.feed(_tool_result(f"c{i}")), f"r{i}")
    assert holder.feed(_started("c5")) == [_started("c5")]
    assert holder.feed(_started("c6"))[0].description == _WITHHELD.format("r6")
