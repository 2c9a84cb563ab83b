"""The decision core: (hook, verdict, rules, what could be applied) -> the SDK hook output.

Pure and total: no I/O, no spans, never raises. Every judging hook's answer to
the Claude Agent SDK comes from :func:`decide`; the hook handlers only gather
its inputs and record what it chose. docs/security.md ("Decision core") is this module
as a table.

Usage::

    from akto_otel.decision import Case, Rules, decide

    rules = Rules.from_settings(settings)
    outcome = decide(Case("PreToolUse", verdict, rules, masked={"command": "ls"}))
    return outcome.output           # e.g. {"hookSpecificOutput": {..., "updatedInput": ...}}

    decide(Case("Stop", None, rules)).output   # None: an internal error, no verdict
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from akto_otel.contract import DEFAULT_BLOCK_REASON, Verdict

if TYPE_CHECKING:
    from akto_otel.config import Settings

__all__ = [
    "BLOCK_PREFIX",
    "JUDGING_HOOKS",
    "RESPONSE_BLOCK_PREFIX",
    "Action",
    "Case",
    "Outcome",
    "OutputShape",
    "Rules",
    "Stance",
    "decide",
    "replacement_output",
    "stance",
]

JudgingHook = Literal["UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SubagentStop"]
JUDGING_HOOKS: tuple[JudgingHook, ...] = (
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "Stop",
    "SubagentStop",
)
#: What a verdict means once the settings are applied.
Stance = Literal["allow", "deny", "ask", "mask"]
#: What the hook does with the content.
Action = Literal[
    "allow", "deny", "ask", "mask", "replace_output", "stop_turn", "regenerate", "give_up"
]
#: Tool output shapes whose replacement the CLI accepts (verified on the real CLI).
OutputShape = Literal["bash", "mcp", "unknown"]

BLOCK_PREFIX = "Blocked by Akto Guardrails: "
RESPONSE_BLOCK_PREFIX = "Response blocked by Akto Guardrails: "
_REASON_MAX = 1024
_INTERNAL_ERROR = "Akto guardrails could not check this (internal error)"
_MASK_UNUSABLE = "Akto masking verdict could not be applied"


@dataclass(frozen=True)
class Rules:
    """The settings a decision depends on."""

    fail_closed: bool = False
    sync_mode: bool = True
    approval_ask: bool = False
    max_regenerations: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            fail_closed=settings.fail_mode == "closed",
            sync_mode=settings.sync_mode,
            approval_ask=settings.approval_decision == "ask",
            max_regenerations=settings.max_stop_regenerations,
        )


@dataclass(frozen=True)
class Case:
    """One decision's inputs.

    ``verdict`` is None when the hook failed before it had one (internal error).
    ``masked`` is the masked content in the form the hook can hand to the SDK
    (tool input; tool output already in its schema), or None when the verdict's
    payload is unusable. ``shape`` says whether a tool output can be replaced.
    ``regenerations`` counts the answers already sent back for this turn.
    """

    hook: str
    verdict: Verdict | None
    rules: Rules
    masked: Any = None
    shape: OutputShape = "unknown"
    regenerations: int = 0


@dataclass(frozen=True)
class Outcome:
    """What the hook answers, and why."""

    action: Action
    output: dict[str, Any]
    reason: str = ""

    @property
    def blocked(self) -> bool:
        """True when the original content does not pass unchanged."""
        return self.action != "allow"


def stance(hook: str, verdict: Verdict | None, rules: Rules) -> Stance:
    """What a verdict means for ``hook`` under ``rules`` (the verdict rows of the table)."""
    if verdict is None:
        return "deny" if rules.fail_closed and rules.sync_mode else "allow"
    decision = verdict.decision
    if decision in ("warn", "alert"):
        return "allow"
    if decision == "allow":
        return "allow" if verdict.allowed else "deny"
    if decision == "modify":
        return "mask" if verdict.allowed else "deny"
    if decision == "ask":
        return "ask" if hook == "PreToolUse" and rules.approval_ask else "deny"
    if decision == "error":
        return "allow" if verdict.allowed else "deny"
    return "deny"


def _reason(verdict: Verdict | None, default: str) -> str:
    if verdict is None:
        return _INTERNAL_ERROR
    text = verdict.reason or default
    return text[:_REASON_MAX]


def _masked_reason(verdict: Verdict | None) -> str:
    what = ""
    if verdict is not None:
        what = verdict.rule_violated or verdict.policy_name or verdict.reason
    detail = f" ({what[:_REASON_MAX]})" if what else ""
    return f"Akto Guardrails masked sensitive content{detail}"


def replacement_output(shape: OutputShape, text: str) -> Any:
    """A tool output in ``shape``'s schema whose only content is ``text``; None if unknown."""
    if shape == "bash":
        return {"stdout": text, "stderr": "", "interrupted": False}
    if shape == "mcp":
        return [{"type": "text", "text": text}]
    return None


def _pre_tool(decision: str, reason: str, updated: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"hookEventName": "PreToolUse"}
    if decision:
        out["permissionDecision"] = decision
        out["permissionDecisionReason"] = reason
    if updated is not None:
        out["updatedInput"] = updated
    return {"hookSpecificOutput": out}


def _stop_turn(message: str) -> dict[str, Any]:
    return {"continue_": False, "stopReason": message, "systemMessage": message}


def _prompt(case: Case, st: Stance) -> Outcome:
    if st == "allow":
        return Outcome("allow", {})
    if st == "mask":
        reason = f"{_masked_reason(case.verdict)}; the prompt was not sent"
        return Outcome("deny", _stop_turn(BLOCK_PREFIX + reason), reason)
    reason = _reason(case.verdict, DEFAULT_BLOCK_REASON)
    return Outcome("deny", _stop_turn(BLOCK_PREFIX + reason), reason)


def _tool_call(case: Case, st: Stance) -> Outcome:
    if st == "allow":
        return Outcome("allow", {})
    if st == "mask" and isinstance(case.masked, Mapping):
        # No permissionDecision: the masked input still goes through the app's own
        # permission flow (allowed_tools, permission_mode, can_use_tool).
        return Outcome("mask", _pre_tool("", "", dict(case.masked)), _masked_reason(case.verdict))
    if st == "ask":
        reason = _reason(case.verdict, DEFAULT_BLOCK_REASON)
        return Outcome("ask", _pre_tool("ask", BLOCK_PREFIX + reason), reason)
    reason = _MASK_UNUSABLE if st == "mask" else _reason(case.verdict, DEFAULT_BLOCK_REASON)
    return Outcome("deny", _pre_tool("deny", BLOCK_PREFIX + reason), reason)


def _tool_output(case: Case, st: Stance) -> Outcome:
    if st == "allow":
        return Outcome("allow", {})
    if st == "mask" and case.masked is not None and case.shape != "unknown":
        reason = _masked_reason(case.verdict)
        return Outcome("mask", _post_tool(case.shape, case.masked, reason), reason)
    reason = _MASK_UNUSABLE if st == "mask" else _reason(case.verdict, DEFAULT_BLOCK_REASON)
    message = BLOCK_PREFIX + reason
    replacement = replacement_output(case.shape, f"[tool output withheld: {message}]")
    if replacement is None:
        # The CLI keeps an output it cannot replace: end the turn before the model sees it.
        return Outcome("stop_turn", _stop_turn(message), reason)
    return Outcome("replace_output", _post_tool(case.shape, replacement, message), reason)


def _post_tool(shape: OutputShape, output: Any, note: str) -> dict[str, Any]:
    key = "updatedMCPToolOutput" if shape == "mcp" else "updatedToolOutput"
    return {
        "hookSpecificOutput": {
            "hookEventName": "PostToolUse",
            key: output,
            "additionalContext": f"{note}. The original tool output was replaced.",
        }
    }


def _answer(case: Case, st: Stance) -> Outcome:
    if st == "allow":
        return Outcome("allow", {})
    if case.verdict is None:
        # An internal error is not the model's fault: asking again would not help.
        return Outcome("give_up", _stop_turn(RESPONSE_BLOCK_PREFIX + _INTERNAL_ERROR), "")
    if st == "mask":
        reason = f"{_masked_reason(case.verdict)}; write the answer without it"
    else:
        reason = _reason(case.verdict, DEFAULT_BLOCK_REASON)
    message = RESPONSE_BLOCK_PREFIX + reason
    if case.regenerations < case.rules.max_regenerations:
        return Outcome("regenerate", {"decision": "block", "reason": message}, reason)
    gave_up = f"{message} (gave up after {case.regenerations} regeneration(s))"
    return Outcome("give_up", {**_stop_turn(message), "systemMessage": gave_up}, reason)


def decide(case: Case) -> Outcome:
    """The SDK hook output for ``case``. A hook that does not judge gets ``{}``."""
    try:
        st = stance(case.hook, case.verdict, case.rules)
        if case.hook == "UserPromptSubmit":
            return _prompt(case, st)
        if case.hook == "PreToolUse":
            return _tool_call(case, st)
        if case.hook == "PostToolUse":
            return _tool_output(case, st)
        if case.hook in ("Stop", "SubagentStop"):
            return _answer(case, st)
        return Outcome("allow", {})
    except Exception:  # total: a bug here must still block
        return _fallback(case.hook)


def _fallback(hook: str) -> Outcome:
    message = BLOCK_PREFIX + _INTERNAL_ERROR
    if hook == "PreToolUse":
        return Outcome("deny", _pre_tool("deny", message), _INTERNAL_ERROR)
    if hook in JUDGING_HOOKS:
        return Outcome("stop_turn", _stop_turn(message), _INTERNAL_ERROR)
    return Outcome("allow", {})
