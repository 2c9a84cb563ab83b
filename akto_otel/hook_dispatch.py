"""From a hook event to its handler: the one table, and the call that never raises.

:data:`HANDLERS` names the handler of each of the ten hook events;
:func:`dispatch` runs one on the hook's JSON input and answers its output dict.
A handler's error is logged, counted and marked on the session span, and answered
with the decision made before it, else the configured fail decision, so nothing a
handler does can raise into the caller or let a judging hook through unguarded.

Usage::

    scope = HookScope(verdicts, rules, probe, tracer)
    output = await dispatch(scope, "PreToolUse", {"session_id": "s", "tool_name": "Bash",
                                                  "tool_input": {"command": "ls"}})
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from akto_otel import hook_answers, hook_observe, hook_prompt, hook_tools, semconv
from akto_otel.config import Settings
from akto_otel.decision import JUDGING_HOOKS, Case, decide
from akto_otel.hook_scope import Call, Handler, HookOutput, HookScope, as_mapping, text
from akto_otel.verdict import quietly

__all__ = ["HANDLERS", "HOOK_EVENTS", "dispatch"]

_log = logging.getLogger("akto_otel.hooks")

#: The handler of each hook event, in the order the events are documented.
HANDLERS: dict[str, Handler] = {
    "UserPromptSubmit": hook_prompt.user_prompt_submit,
    "PreToolUse": hook_tools.pre_tool_use,
    "PostToolUse": hook_tools.post_tool_use,
    "PostToolUseFailure": hook_tools.post_tool_use_failure,
    "Stop": hook_answers.stop,
    "SubagentStart": hook_answers.subagent_start,
    "SubagentStop": hook_answers.subagent_stop,
    "PreCompact": hook_observe.pre_compact,
    "Notification": hook_observe.notification,
    "PermissionRequest": hook_observe.permission_request,
}
HOOK_EVENTS = tuple(HANDLERS)


async def dispatch(
    scope: HookScope, event: str, input_data: Any, tool_use_id: str | None = None
) -> HookOutput:
    """Run ``event``'s handler on ``input_data`` (the hook's JSON input) and answer.

    Never raises: a handler's error is logged, counted and marked on the session
    span; a decision made before it stands, else the configured fail decision.
    ``event`` is one of :data:`HOOK_EVENTS`; ``tool_use_id`` is the SDK's separate
    argument, when it gives one.
    """
    handler = HANDLERS[event]
    start = time.perf_counter()
    call = Call()
    quietly(scope.probe.start)
    try:
        data = dict(input_data) if isinstance(input_data, Mapping) else {}
        if tool_use_id and not data.get("tool_use_id"):
            data["tool_use_id"] = tool_use_id
        return await handler(scope, data, call)
    except Exception as exc:  # never raise into the SDK
        _log.error("akto_otel %s hook failed: %s", event, type(exc).__name__)
        quietly(scope.verdicts.metrics.record_hook_error, event)
        quietly(_record_internal_error, scope, event, input_data, exc)
        if call.output is not None:
            # Decided before the failure (in recording): the decision stands.
            return call.output
        output = _fail_output(scope, event, input_data, call)
        if _judges(event, scope.settings) and not scope.rules.fail_closed:
            quietly(_record_failed_hook, scope, event, input_data)
        if event == "PreToolUse" and hook_tools.denies_call(output):
            # A deny is a deny whichever path made it: watched for a breach too.
            quietly(
                scope.denied.add,
                text(as_mapping(input_data), "session_id"),
                tool_use_id or text(as_mapping(input_data), "tool_use_id"),
            )
        return output
    finally:
        quietly(scope.verdicts.metrics.record_hook_duration, event, time.perf_counter() - start)


def _fail_output(scope: HookScope, event: str, input_data: Any, call: Call) -> HookOutput:
    """The answer of a hook that failed before it had a decision."""
    if event == "PostToolUseFailure" and _judges("PostToolUse", scope.settings):
        # A failing tool's output is judged as PostToolUse judges an output.
        return decide(Case("PostToolUse", None, scope.rules, shape="unknown")).output
    outcome = decide(Case(event, None, scope.rules))
    if event in ("Stop", "SubagentStop"):
        data = as_mapping(input_data)
        quietly(
            hook_answers.settle_answer,
            call,
            scope.tracing.get(text(data, "session_id")),
            event,
            text(data, "agent_id"),
            hook_answers.answer_of(data),
            outcome,
        )
    return outcome.output


def _record_internal_error(scope: HookScope, event: str, input_data: Any, exc: Exception) -> None:
    data = as_mapping(input_data)
    state = scope.tracing.get(text(data, "session_id"))
    if state is not None and state.span.is_recording():
        state.span.add_event(
            semconv.EVENT_HOOK_ERROR,
            {semconv.AKTO_HOOK: event, semconv.ERROR_TYPE: type(exc).__name__},
        )


def _record_failed_hook(scope: HookScope, event: str, input_data: Any) -> None:
    """A judging hook that failed before its verdict and failed open: unjudged."""
    data = as_mapping(input_data)
    session_id = text(data, "session_id")
    state = scope.tracing.get(session_id)
    span = state.span if state is not None else None
    tool = text(data, "tool_name") if event in ("PreToolUse", "PostToolUse") else ""
    scope.verdicts.unjudged(event, tool, "internal_error", span, session_id=session_id)


def _judges(event: str, settings: Settings) -> bool:
    """Whether ``event`` asks Akto for a verdict before the call proceeds (pure)."""
    if not settings.sync_mode or event not in JUDGING_HOOKS:
        return False
    return event != "PostToolUse" or settings.tool_response_guardrails
