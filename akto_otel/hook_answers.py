"""Stop and SubagentStop: an answer judged before it counts; the held-answer glue.

Stop judges the whole turn the app assembles (not only its last text block) with the
response guardrail and asks the model to regenerate a denied answer, up to the
bound; SubagentStop does the same for a subagent's answer, and a subagent answer
denied at the bound is withheld from its parent. :func:`settle_answer` is the one
place every answer outcome is applied; :func:`noting` hands the outcomes to the
session's :class:`~akto_otel.answers.AnswerLedger`, which the held-answer stream
(:func:`akto_otel.answers.hold_answers`) reads; :func:`held_answer_judge` judges
the texts no Stop hook saw.

Usage::

    output = await hook_answers.stop(scope, {"session_id": "s",
                                             "last_assistant_message": "Done."}, Call())
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

from akto_otel import contract, semconv, windows
from akto_otel.answers import Judge, hook_answer, note_hook_output, whole_answer
from akto_otel.contract import WireContext
from akto_otel.decision import Case, Outcome, decide, stance
from akto_otel.hook_scope import Call, HookCallback, HookOutput, HookScope, conversation, text
from akto_otel.spans import SessionState, end_span, mark_error
from akto_otel.verdict import quietly

__all__ = [
    "answer_of",
    "held_answer_judge",
    "noting",
    "settle_answer",
    "stop",
    "subagent_start",
    "subagent_stop",
]

_log = logging.getLogger("akto_otel.hooks")


async def stop(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    session_id = text(data, "session_id")
    state = scope.tracing.session(session_id)
    # The whole turn the app assembles, not only its last text block.
    response_text = answer_of(data)
    span = scope.tracing.start_child(
        state.span, semconv.SPAN_STOP, hook="Stop", attributes=conversation(session_id, "")
    )
    final = True
    try:
        quietly(
            span.set_attribute,
            semconv.AKTO_STOP_HOOK_ACTIVE,
            data.get("stop_hook_active") is True,
        )
        if response_text:
            scope.verdicts.capture(
                span,
                semconv.GEN_AI_OUTPUT_MESSAGES,
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": response_text}],
                    }
                ],
            )
        if not response_text:
            return {}
        outcome = await _judge_answer(
            scope,
            call,
            span,
            state,
            "Stop",
            "",
            scope.wire_for(data),
            response_text,
            state.regenerations,
        )
        final = outcome.action != "regenerate"
        return outcome.output
    finally:
        end_span(span)
        if final:
            quietly(scope.tracing.end_turn, session_id)


async def subagent_start(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    state = scope.tracing.session(text(data, "session_id"))
    scope.tracing.start_subagent(state, text(data, "agent_id"), text(data, "agent_type"))
    return {}


async def subagent_stop(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    session_id = text(data, "session_id")
    agent_id = text(data, "agent_id")
    state = scope.tracing.session(session_id)
    agent_span = scope.tracing.start_subagent(state, agent_id, text(data, "agent_type"))
    response_text = answer_of(data)
    span = scope.tracing.start_child(
        agent_span,
        semconv.SPAN_SUBAGENT_STOP,
        hook="SubagentStop",
        attributes=conversation(session_id, ""),
    )
    finished = True
    try:
        if not response_text:
            return {}
        outcome = await _judge_answer(
            scope,
            call,
            span,
            state,
            "SubagentStop",
            agent_id,
            scope.wire_for(data),
            response_text,
            state.subagent_regenerations.get(agent_id, 0),
        )
        finished = outcome.action != "regenerate"
        if outcome.action == "give_up":
            quietly(_deny_last_block, state, data, response_text)
        return outcome.output
    finally:
        end_span(span)
        if finished:
            state.subagent_regenerations.pop(agent_id, None)
            ended = state.agents.pop(agent_id, None)
            if ended is not None:
                end_span(ended)


async def _judge_answer(
    scope: HookScope,
    call: Call,
    span: Span,
    state: SessionState,
    hook: str,
    agent_id: str,
    wire: WireContext,
    answer: str,
    regenerations: int,
) -> Outcome:
    """Response guardrail on an answer (Stop or SubagentStop) and its outcome.

    In async mode the record goes to Akto with ``response_guardrails`` for
    server-side judging and the answer passes.
    """
    kind = "turn" if hook == "Stop" else "subagent.turn"
    prompt = state.last_prompt
    if not scope.settings.sync_mode:
        record = contract.turn_record(wire, prompt, answer, hook=hook)
        scope.verdicts.attach(span, record, kind, response_guardrails=True)
        return Outcome("allow", {})
    plan = windows.plan_turn(wire, prompt, answer, hook, scope.limits)
    verdict = await scope.verdicts.judge(
        span, hook, plan, request=False, response=True, session_id=state.session_id
    )
    outcome = decide(Case(hook, verdict, scope.rules, regenerations=regenerations))
    settle_answer(call, state, hook, agent_id, answer, outcome)
    if outcome.blocked:
        quietly(span.set_attribute, semconv.AKTO_STOP_REGENERATIONS, regenerations)
        if outcome.action == "give_up":
            quietly(span.set_attribute, semconv.AKTO_STOP_GAVE_UP, True)
            quietly(mark_error, span, "regeneration_limit")
        blocked = contract.turn_record(
            wire, prompt, answer, hook=hook, blocked_reason=outcome.reason
        )
        scope.verdicts.attach(span, blocked, f"{kind}.blocked", truncated=plan.windowed)
    else:
        record = contract.turn_record(wire, prompt, answer, hook=hook)
        scope.verdicts.attach(span, record, kind, truncated=plan.windowed)
    return outcome


def settle_answer(
    call: Call,
    state: SessionState | None,
    hook: str,
    agent_id: str,
    answer: str,
    outcome: Outcome,
) -> None:
    """Where every Stop and SubagentStop outcome is applied: the one place to watch.

    Judged answers come here from :meth:`_judge_answer`, answers whose hook
    failed before a verdict from the callback's error path (``state`` may
    then be None).
    """
    call.settle(outcome)
    if state is None:
        return
    if outcome.action == "regenerate":
        if hook == "Stop":
            state.regenerations += 1
        else:
            state.subagent_regenerations[agent_id] = (
                state.subagent_regenerations.get(agent_id, 0) + 1
            )
    elif outcome.action == "give_up" and hook == "SubagentStop":
        state.denied_answers.add(answer)


def _deny_last_block(state: SessionState, data: Mapping[str, Any], answer: str) -> None:
    """The parent gets only a subagent's last text block: a denied answer's last block
    (long enough not to match by chance) is withheld from it as well."""
    last = text(data, "last_assistant_message").strip()
    if last and last != answer and len(last) >= 8:
        state.denied_answers.add(last)


def held_answer_judge(scope: HookScope, root: Span) -> Judge:
    """Judges a held text no Stop hook saw (one the model wrote before a tool call;
    Stop receives only the turn's last text) with the response guardrail, under an
    ``akto.held_answer`` span below ``root``: None lets it through, else the reason."""

    async def judge(answer: str) -> str | None:
        span = scope.tracing.start_child(root, semconv.SPAN_HELD_ANSWER, hook="Stop", attributes={})
        try:
            states = list(scope.tracing)
            prompt = states[-1].last_prompt if states else ""
            plan = windows.plan_turn(scope.wire, prompt, answer, "Stop", scope.limits)
            verdict = await scope.verdicts.judge(span, "Stop", plan, request=False, response=True)
            # A masked answer is not delivered either: Stop would regenerate it.
            if stance("Stop", verdict, scope.rules) == "allow":
                return None
            return verdict.reason or contract.DEFAULT_BLOCK_REASON
        except Exception as exc:
            _log.error("akto_otel could not judge a held answer: %s", type(exc).__name__)
            if scope.settings.fail_mode == "open":
                scope.verdicts.unjudged("Stop", "", "internal_error", span)
                return None
            return "Akto guardrails could not check this (internal error)"
        finally:
            try:
                span.end()
            except Exception:
                _log.debug("could not end a held-answer span", exc_info=True)

    return judge


def noting(event: str, scope: HookScope, callback: HookCallback) -> HookCallback:
    """``callback`` whose denials (from a verdict or the fail-closed error path) also
    reach the session's answer ledger, for the wrappers that hold answers."""
    if event not in (
        "Stop",
        "SubagentStop",
        "UserPromptSubmit",
        "PreToolUse",
        "PostToolUse",
        "PostToolUseFailure",
    ):
        return callback

    async def noted(input_data: Any, tool_use_id: str | None, context: Any) -> HookOutput:
        answer: str | None = None
        data = input_data
        if event in ("Stop", "SubagentStop") and isinstance(input_data, Mapping):
            # Stop names only the turn's last text block: judge what the app assembles.
            answer = await whole_answer(scope.answers, input_data)
            data = {**input_data, _WHOLE_ANSWER: answer}
        output = await callback(data, tool_use_id, context)
        if tool_use_id and isinstance(data, Mapping) and not data.get("tool_use_id"):
            data = {**data, "tool_use_id": tool_use_id}
        note_hook_output(scope.answers, event, data, output, answer=answer)
        return output

    noted.__name__ = callback.__name__
    return noted


#: Where :func:`noting` hands a Stop handler the whole answer it assembled.
_WHOLE_ANSWER = "_akto_whole_answer"


def answer_of(data: Mapping[str, Any]) -> str:
    """The answer a Stop or SubagentStop handler judges (see :func:`noting`)."""
    whole = data.get(_WHOLE_ANSWER)
    return whole if isinstance(whole, str) else hook_answer(data)
