"""The decision core, row by row and as properties over every combination."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from akto_otel.config import Settings
from akto_otel.contract import Verdict
from akto_otel.decision import JUDGING_HOOKS, Case, Rules, decide, stance

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
