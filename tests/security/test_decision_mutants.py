"""The decision core's exact answers, pinned so that no mutant of it passes.

test_decision_core.py checks the security properties (a deny never comes out
allow-shaped); this module pins every output, reason and boundary, which is what
mutation testing (``nox -s mutation -- decision``, docs/reliability.md) showed the
property tests leave loose: a changed reason text, a dropped key, an off-by-one.
"""

from __future__ import annotations

from typing import Any

import pytest

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

R = Rules()
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
