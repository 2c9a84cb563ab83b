"""The held-answer path's small decisions, one at a time (pure, no CLI): how a denied
text is recognised, what a hook output tells the ledger, the forms the app gets.

They pin the behaviour the real-CLI suites (tests/security/test_answer_paths.py,
tests/security/test_held_answers.py) prove end to end, fast enough to run per mutant
(``nox -s mutation -- answers``).
"""

from __future__ import annotations

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
