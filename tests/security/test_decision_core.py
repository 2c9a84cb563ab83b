"""The decision core, row by row and as properties over every combination.

The properties show a deny never comes out allow-shaped; the later tests pin every
output, reason and boundary (a changed reason text, a dropped key, an off-by-one),
which the properties leave loose (``nox -s mutation -- decision``,
docs/reliability.md).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from akto_otel.config import Settings
from akto_otel.contract import Verdict
from akto_otel.decision import (
    JUDGING_HOOKS,
    Case,
    Outcome,
    Rules,
    decide,
    replacement_output,
    stance,
)

DECISIONS = ("allow", "deny", "warn", "alert", "ask", "modify", "error")


def _verdict(decision: str, allowed: bool | None = None, reason: str = "r") -> Verdict:
    if allowed is None:
        allowed = decision in ("allow", "warn", "alert", "modify")
    return Verdict(decision=decision, allowed=allowed, reason=reason)  # type: ignore[arg-type]


def _walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for item in value.values():
            found += _walk(item)
    elif isinstance(value, list):
        for item in value:
            found += _walk(item)
    return found


def _blocks(hook: str, output: dict[str, Any]) -> bool:
    """Whether ``output`` keeps the original content from passing, per the real CLI."""
    specific = output.get("hookSpecificOutput") or {}
    if hook == "UserPromptSubmit":
        return output.get("continue_") is False
    if hook == "PreToolUse":
        return specific.get("permissionDecision") == "deny"
    if hook == "PostToolUse":
        replaced = "updatedToolOutput" in specific or "updatedMCPToolOutput" in specific
        return output.get("continue_") is False or replaced
    return output.get("decision") == "block" or output.get("continue_") is False


verdicts = st.one_of(
    st.none(),
    st.builds(
        Verdict,
        decision=st.sampled_from(DECISIONS),
        allowed=st.booleans(),
        behaviour=st.sampled_from(["", "block", "warn", "alert", "approval", "weird"]),
        reason=st.text(max_size=3000),
        modified_payload=st.one_of(st.none(), st.text(max_size=50)),
        rule_violated=st.text(max_size=20),
    ),
)
rules = st.builds(
    Rules,
    fail_closed=st.booleans(),
    sync_mode=st.booleans(),
    approval_ask=st.booleans(),
    max_regenerations=st.integers(0, 5),
)
cases = st.builds(
    Case,
    hook=st.sampled_from(JUDGING_HOOKS),
    verdict=verdicts,
    rules=rules,
    masked=st.one_of(
        st.none(), st.just({"command": "echo [MASKED]"}), st.just([{"type": "text", "text": "[M]"}])
    ),
    shape=st.sampled_from(["bash", "mcp", "unknown"]),
    regenerations=st.integers(0, 6),
)


@settings(max_examples=400, deadline=None)
@given(cases)
def test_a_denying_verdict_never_yields_an_allow_shaped_output(case: Case) -> None:
    outcome = decide(case)
    st_ = stance(case.hook, case.verdict, case.rules)
    if st_ in ("deny", "ask") and not (st_ == "ask" and case.hook == "PreToolUse"):
        assert outcome.output != {}
        assert _blocks(case.hook, outcome.output), (case, outcome)
    if outcome.output == {}:
        assert st_ == "allow"


@settings(max_examples=400, deadline=None)
@given(cases)
def test_never_permission_allow_and_reasons_are_bounded(case: Case) -> None:
    outcome = decide(case)
    for node in _walk(outcome.output):
        if isinstance(node, dict):
            assert node.get("permissionDecision") in (None, "deny", "ask")
    assert len(json.dumps(outcome.output)) < 4000
    json.dumps(outcome.output)  # always JSON


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(JUDGING_HOOKS), st.integers(0, 5), st.integers(0, 6), st.booleans())
def test_fail_closed_internal_error_blocks_every_judging_hook(
    hook: str, bound: int, regenerations: int, approval_ask: bool
) -> None:
    rules_ = Rules(
        fail_closed=True, sync_mode=True, approval_ask=approval_ask, max_regenerations=bound
    )
    outcome = decide(Case(hook, None, rules_, regenerations=regenerations))
    assert _blocks(hook, outcome.output)
    # Fail-open and async mode: an internal error lets the content through.
    assert decide(Case(hook, None, Rules(fail_closed=False))).output == {}
    assert decide(Case(hook, None, Rules(fail_closed=True, sync_mode=False))).output == {}


@settings(max_examples=300, deadline=None)
@given(cases)
def test_masking_never_grants_permission(case: Case) -> None:
    outcome = decide(case)
    if case.hook == "PreToolUse" and outcome.action == "mask":
        specific = outcome.output["hookSpecificOutput"]
        assert "permissionDecision" not in specific
        assert specific["updatedInput"] == case.masked


@settings(max_examples=300, deadline=None)
@given(cases)
def test_answers_regenerate_exactly_up_to_the_bound(case: Case) -> None:
    outcome = decide(case)
    if case.hook not in ("Stop", "SubagentStop"):
        return
    if stance(case.hook, case.verdict, case.rules) == "allow":
        assert outcome.action == "allow"
    elif case.verdict is None:
        assert outcome.action == "give_up"
    elif case.regenerations < case.rules.max_regenerations:
        assert outcome.action == "regenerate" and outcome.output["decision"] == "block"
    else:
        assert outcome.action == "give_up" and outcome.output["continue_"] is False


# ----------------------------------------------------------------- the table, row by row

R = Rules()
CLOSED = Rules(fail_closed=True)


@pytest.mark.parametrize(
    ("hook", "verdict", "rules_", "extra", "action"),
    [
        ("UserPromptSubmit", _verdict("allow"), R, {}, "allow"),
        ("UserPromptSubmit", _verdict("deny"), R, {}, "deny"),
        ("UserPromptSubmit", _verdict("modify"), R, {}, "deny"),
        ("UserPromptSubmit", _verdict("warn", allowed=True), R, {}, "allow"),
        ("UserPromptSubmit", _verdict("ask", allowed=False), Rules(approval_ask=True), {}, "deny"),
        ("PreToolUse", _verdict("deny"), R, {}, "deny"),
        ("PreToolUse", _verdict("modify"), R, {"masked": {"command": "x"}}, "mask"),
        ("PreToolUse", _verdict("modify"), R, {}, "deny"),
        ("PreToolUse", _verdict("modify", allowed=False), R, {"masked": {"c": 1}}, "deny"),
        ("PreToolUse", _verdict("ask", allowed=False), R, {}, "deny"),
        ("PreToolUse", _verdict("ask", allowed=False), Rules(approval_ask=True), {}, "ask"),
        ("PreToolUse", _verdict("error", allowed=False), CLOSED, {}, "deny"),
        ("PreToolUse", _verdict("error", allowed=True), R, {}, "allow"),
        ("PreToolUse", _verdict("alert", allowed=True), R, {}, "allow"),
        ("PostToolUse", _verdict("deny"), R, {"shape": "bash"}, "replace_output"),
        ("PostToolUse", _verdict("deny"), R, {"shape": "mcp"}, "replace_output"),
        ("PostToolUse", _verdict("deny"), R, {"shape": "unknown"}, "stop_turn"),
        (
            "PostToolUse",
            _verdict("modify"),
            R,
            {"shape": "bash", "masked": {"stdout": "x"}},
            "mask",
        ),
        ("PostToolUse", _verdict("modify"), R, {"shape": "bash"}, "replace_output"),
        (
            "PostToolUse",
            _verdict("modify"),
            R,
            {"shape": "unknown", "masked": {"a": 1}},
            "stop_turn",
        ),
        ("Stop", _verdict("deny"), R, {}, "regenerate"),
        ("Stop", _verdict("modify"), R, {}, "regenerate"),
        ("Stop", _verdict("deny"), R, {"regenerations": 2}, "give_up"),
        ("Stop", None, CLOSED, {}, "give_up"),
        ("Stop", None, R, {}, "allow"),
        (
            "SubagentStop",
            _verdict("deny"),
            Rules(max_regenerations=1),
            {"regenerations": 1},
            "give_up",
        ),
        (
            "SubagentStop",
            _verdict("ask", allowed=False),
            Rules(approval_ask=True),
            {},
            "regenerate",
        ),
        ("SubagentStop", None, CLOSED, {}, "give_up"),
        ("PreCompact", _verdict("deny"), R, {}, "allow"),
    ],
)
def test_decision_table(
    hook: str, verdict: Verdict | None, rules_: Rules, extra: dict[str, Any], action: str
) -> None:
    assert decide(Case(hook, verdict, rules_, **extra)).action == action


def test_prompt_mask_says_what_was_masked() -> None:
    verdict = Verdict(decision="modify", allowed=True, rule_violated="email-address")
    outcome = decide(Case("UserPromptSubmit", verdict, R))
    assert outcome.output["continue_"] is False
    assert "masked" in outcome.reason and "email-address" in outcome.reason


def test_denied_tool_output_is_replaced_in_its_schema() -> None:
    bash = decide(Case("PostToolUse", _verdict("deny", reason="key"), R, shape="bash")).output
    replaced = bash["hookSpecificOutput"]["updatedToolOutput"]
    assert set(replaced) == {"stdout", "stderr", "interrupted"} and "key" in replaced["stdout"]
    mcp = decide(Case("PostToolUse", _verdict("deny"), R, shape="mcp")).output
    assert mcp["hookSpecificOutput"]["updatedMCPToolOutput"][0]["type"] == "text"


def test_rules_follow_the_settings_and_approval_defaults_to_deny() -> None:
    assert Rules.from_settings(Settings()) == Rules(
        fail_closed=False, sync_mode=True, approval_ask=False, max_regenerations=2
    )
    assert Rules.from_settings(Settings(approval_decision="ask")).approval_ask
    assert Rules.from_settings(Settings(fail_mode="closed")).fail_closed


def test_a_bug_in_the_core_still_blocks() -> None:
    class Broken(Verdict):
        @property  # type: ignore[misc]
        def decision(self) -> str:  # type: ignore[override]
            raise RuntimeError("bug")

    broken = Broken.__new__(Broken)
    for hook in JUDGING_HOOKS:
        assert _blocks(hook, decide(Case(hook, broken, R)).output)


def test_every_combination_exhaustively() -> None:
    """Hook x verdict shape x fail mode x sync mode x approval x mask x shape x count."""
    import itertools

    shapes: list[Verdict | None] = [None]
    for decision, allowed in itertools.product(DECISIONS, (True, False)):
        shapes.append(_verdict(decision, allowed=allowed))
    checked = 0
    for hook, verdict, closed, sync, ask, masked, shape, count in itertools.product(
        (*JUDGING_HOOKS, "PreCompact"),
        shapes,
        (True, False),
        (True, False),
        (True, False),
        (None, {"command": "x"}, [{"type": "text", "text": "x"}]),
        ("bash", "mcp", "unknown"),
        range(4),
    ):
        rules_ = Rules(fail_closed=closed, sync_mode=sync, approval_ask=ask, max_regenerations=2)
        case = Case(hook, verdict, rules_, masked=masked, shape=shape, regenerations=count)  # type: ignore[arg-type]
        outcome = decide(case)
        st_ = stance(hook, verdict, rules_)
        for node in _walk(outcome.output):
            if isinstance(node, dict):
                assert node.get("permissionDecision") in (None, "deny", "ask")
        if hook not in JUDGING_HOOKS:
            assert outcome.output == {}
        elif st_ == "deny" or (st_ == "ask" and hook != "PreToolUse"):
            assert _blocks(hook, outcome.output), case
        elif st_ == "allow":
            assert outcome.output == {}
        if verdict is None and closed and sync and hook in JUDGING_HOOKS:
            assert _blocks(hook, outcome.output), case
        checked += 1
    assert checked == 6 * 15 * 2 * 2 * 2 * 3 * 3 * 4


BLOCKED = "Blocked by Akto Guardrails: "
RESPONSE = "Response blocked by Akto Guardrails: "
INTERNAL = "Akto guardrails could not check this (internal error)"
UNUSABLE = "Akto masking verdict could not be applied"
MASKED = "Akto Guardrails masked sensitive content"


def _v(decision: str, allowed: bool, **fields: Any) -> Verdict:
    return Verdict(decision=decision, allowed=allowed, **fields)  # type: ignore[arg-type]


def _stop(message: str) -> dict[str, Any]:
    return {"continue_": False, "stopReason": message, "systemMessage": message}


def _pre(decision: str, reason: str) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    }


def _post(key: str, output: Any, note: str) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PostToolUse",
            key: output,
            "additionalContext": f"{note}. The original tool output was replaced.",
        }
    }


# ------------------------------------------------------------------------- the stance


@pytest.mark.parametrize(
    ("hook", "verdict", "rules_", "expected"),
    [
        ("Stop", None, Rules(fail_closed=True, sync_mode=True), "deny"),
        ("Stop", None, Rules(fail_closed=True, sync_mode=False), "allow"),
        ("Stop", None, Rules(fail_closed=False, sync_mode=True), "allow"),
        ("Stop", _v("warn", False), R, "allow"),
        ("Stop", _v("alert", False), R, "allow"),
        ("Stop", _v("allow", True), R, "allow"),
        ("Stop", _v("allow", False), R, "deny"),
        ("Stop", _v("modify", True), R, "mask"),
        ("Stop", _v("modify", False), R, "deny"),
        ("PreToolUse", _v("ask", True), Rules(approval_ask=True), "ask"),
        ("PreToolUse", _v("ask", True), R, "deny"),
        ("PostToolUse", _v("ask", True), Rules(approval_ask=True), "deny"),
        ("Stop", _v("error", True), R, "allow"),
        ("Stop", _v("error", False), R, "deny"),
        ("Stop", _v("deny", True), R, "deny"),
        ("Stop", _v("unheard-of", True), R, "deny"),
    ],
)
def test_stance_row_by_row(
    hook: str, verdict: Verdict | None, rules_: Rules, expected: str
) -> None:
    assert stance(hook, verdict, rules_) == expected


# -------------------------------------------------------------------- exact outcomes


def test_allow_and_non_judging_hooks_answer_exactly_nothing() -> None:
    for hook in (*JUDGING_HOOKS, "PreCompact", "Notification"):
        assert decide(Case(hook, _v("allow", True), R)) == Outcome("allow", {}, "")
    assert decide(Case("PreCompact", _v("deny", False), R)) == Outcome("allow", {}, "")
    assert not Outcome("allow", {}).blocked
    assert Outcome("mask", {}).blocked


def test_prompt_deny_and_mask() -> None:
    deny = decide(Case("UserPromptSubmit", _v("deny", False, reason="no"), R))
    assert deny == Outcome("deny", _stop(BLOCKED + "no"), "no")
    default = decide(Case("UserPromptSubmit", _v("deny", False), R))
    assert default == Outcome("deny", _stop(BLOCKED + "Policy violation"), "Policy violation")
    mask = decide(Case("UserPromptSubmit", _v("modify", True, rule_violated="pii"), R))
    reason = f"{MASKED} (pii); the prompt was not sent"
    assert mask == Outcome("deny", _stop(BLOCKED + reason), reason)


def test_prompt_internal_error_fail_closed() -> None:
    outcome = decide(Case("UserPromptSubmit", None, Rules(fail_closed=True)))
    assert outcome == Outcome("deny", _stop(BLOCKED + INTERNAL), INTERNAL)


def test_tool_call_mask_ask_and_deny() -> None:
    mask = decide(Case("PreToolUse", _v("modify", True, policy_name="P"), R, masked={"c": "x"}))
    expected = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "updatedInput": {"c": "x"}}}
    assert mask == Outcome("mask", expected, f"{MASKED} (P)")

    ask = decide(Case("PreToolUse", _v("ask", False, reason="sure?"), Rules(approval_ask=True)))
    assert ask == Outcome("ask", _pre("ask", BLOCKED + "sure?"), "sure?")

    unusable = decide(Case("PreToolUse", _v("modify", True), R, masked=["not", "a", "mapping"]))
    assert unusable == Outcome("deny", _pre("deny", BLOCKED + UNUSABLE), UNUSABLE)

    deny = decide(Case("PreToolUse", _v("deny", False, reason="rm"), R))
    assert deny == Outcome("deny", _pre("deny", BLOCKED + "rm"), "rm")


def test_tool_output_mask_replace_and_stop() -> None:
    masked = {"stdout": "[M]", "stderr": "", "interrupted": False}
    verdict = _v("modify", True, reason="why")
    mask = decide(Case("PostToolUse", verdict, R, masked=masked, shape="bash"))
    assert mask == Outcome(
        "mask", _post("updatedToolOutput", masked, f"{MASKED} (why)"), f"{MASKED} (why)"
    )
    mcp = decide(Case("PostToolUse", verdict, R, masked=[{"type": "text"}], shape="mcp"))
    assert mcp.output == _post("updatedMCPToolOutput", [{"type": "text"}], f"{MASKED} (why)")

    message = BLOCKED + "leak"
    withheld = f"[tool output withheld: {message}]"
    bash = decide(Case("PostToolUse", _v("deny", False, reason="leak"), R, shape="bash"))
    assert bash == Outcome(
        "replace_output",
        _post(
            "updatedToolOutput", {"stdout": withheld, "stderr": "", "interrupted": False}, message
        ),
        "leak",
    )
    unusable = decide(Case("PostToolUse", verdict, R, masked=None, shape="mcp"))
    assert unusable == Outcome(
        "replace_output",
        _post(
            "updatedMCPToolOutput",
            [{"type": "text", "text": f"[tool output withheld: {BLOCKED + UNUSABLE}]"}],
            BLOCKED + UNUSABLE,
        ),
        UNUSABLE,
    )
    # A mask the CLI could not apply (unknown shape) ends the turn.
    unknown = decide(Case("PostToolUse", verdict, R, masked={"a": 1}, shape="unknown"))
    assert unknown == Outcome("stop_turn", _stop(BLOCKED + UNUSABLE), UNUSABLE)


def test_replacement_output_per_shape() -> None:
    assert replacement_output("bash", "t") == {"stdout": "t", "stderr": "", "interrupted": False}
    assert replacement_output("mcp", "t") == [{"type": "text", "text": "t"}]
    assert replacement_output("unknown", "t") is None


@pytest.mark.parametrize("hook", ["Stop", "SubagentStop"])
def test_answer_regenerates_below_the_bound_and_gives_up_at_it(hook: str) -> None:
    rules_ = Rules(max_regenerations=3)
    verdict = _v("deny", False, reason="bad")
    message = RESPONSE + "bad"
    below = decide(Case(hook, verdict, rules_, regenerations=2))
    assert below == Outcome("regenerate", {"decision": "block", "reason": message}, "bad")
    at = decide(Case(hook, verdict, rules_, regenerations=3))
    gave_up = f"{message} (gave up after 3 regeneration(s))"
    assert at == Outcome("give_up", {**_stop(message), "systemMessage": gave_up}, "bad")

    masked = decide(Case(hook, _v("modify", True, rule_violated="r"), rules_))
    reason = f"{MASKED} (r); write the answer without it"
    assert masked == Outcome(
        "regenerate", {"decision": "block", "reason": RESPONSE + reason}, reason
    )

    internal = decide(Case(hook, None, Rules(fail_closed=True), regenerations=0))
    assert internal == Outcome("give_up", _stop(RESPONSE + INTERNAL), "")


# ----------------------------------------------------------------------- the reasons


def test_reasons_are_cut_at_1024_characters() -> None:
    long = "x" * 2000
    deny = decide(Case("PreToolUse", _v("deny", False, reason=long), R))
    assert deny.reason == "x" * 1024
    exact = decide(Case("PreToolUse", _v("deny", False, reason="y" * 1024), R))
    assert exact.reason == "y" * 1024
    mask = decide(Case("PreToolUse", _v("modify", True, rule_violated=long), R, masked={"a": 1}))
    assert mask.reason == f"{MASKED} ({'x' * 1024})"


def test_masked_reason_prefers_rule_then_policy_then_reason() -> None:
    def reason(**fields: Any) -> str:
        return decide(Case("PreToolUse", _v("modify", True, **fields), R, masked={})).reason

    assert reason(rule_violated="a", policy_name="b", reason="c") == f"{MASKED} (a)"
    assert reason(policy_name="b", reason="c") == f"{MASKED} (b)"
    assert reason(reason="c") == f"{MASKED} (c)"
    assert reason() == MASKED


# --------------------------------------------------------------------- the fallback


class _Broken(Verdict):
    @property  # type: ignore[misc]
    def decision(self) -> str:  # type: ignore[override]
        raise RuntimeError("bug")


def test_a_bug_in_the_core_gets_the_exact_fallback() -> None:
    broken = _Broken.__new__(_Broken)
    pre = decide(Case("PreToolUse", broken, R))
    assert pre == Outcome("deny", _pre("deny", BLOCKED + INTERNAL), INTERNAL)
    for hook in ("UserPromptSubmit", "PostToolUse", "Stop", "SubagentStop"):
        assert decide(Case(hook, broken, R)) == Outcome(
            "stop_turn", _stop(BLOCKED + INTERNAL), INTERNAL
        )
    assert decide(Case("PreCompact", broken, R)) == Outcome("allow", {}, "")


def test_rules_take_every_setting() -> None:
    assert Rules.from_settings(
        Settings(
            fail_mode="closed", sync_mode=False, approval_decision="ask", max_stop_regenerations=5
        )
    ) == Rules(fail_closed=True, sync_mode=False, approval_ask=True, max_regenerations=5)
    assert Rules.from_settings(Settings(fail_mode="open", approval_decision="deny")) == Rules(
        fail_closed=False, sync_mode=True, approval_ask=False, max_regenerations=2
    )


def test_a_verdict_without_reason_gets_the_default_reason_on_every_path() -> None:
    default = "Policy violation"
    ask = decide(Case("PreToolUse", _v("ask", False), Rules(approval_ask=True)))
    assert ask == Outcome("ask", _pre("ask", BLOCKED + default), default)
    message = BLOCKED + default
    deny = decide(Case("PreToolUse", _v("deny", False), R))
    assert deny == Outcome("deny", _pre("deny", message), default)
    output = decide(Case("PostToolUse", _v("deny", False), R, shape="unknown"))
    assert output == Outcome("stop_turn", _stop(message), default)
    answer = decide(Case("Stop", _v("deny", False), R))
    assert answer == Outcome(
        "regenerate", {"decision": "block", "reason": RESPONSE + default}, default
    )
