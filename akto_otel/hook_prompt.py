"""UserPromptSubmit: the user's prompt judged before the model sees it.

A ``akto.user_prompt`` span under the session's; in sync mode the prompt is judged
(in windows when it is larger than one record holds) and a blocked prompt's record
goes to Akto with the span. Observe mode (``AKTO_SYNC_MODE=false``) only records.

Usage::

    output = await hook_prompt.user_prompt_submit(scope, {"session_id": "s",
                                                         "prompt": "hello"}, Call())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from akto_otel import contract, semconv, windows
from akto_otel.decision import Case, decide
from akto_otel.hook_scope import Call, HookOutput, HookScope, conversation, text
from akto_otel.spans import end_span

__all__ = ["user_prompt_submit"]


async def user_prompt_submit(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    session_id = text(data, "session_id")
    prompt = text(data, "prompt")
    state = scope.tracing.session(session_id)
    state.prompt_id = text(data, "prompt_id")
    state.regenerations = 0
    if prompt.strip():
        state.last_prompt = prompt.strip()
    span = scope.tracing.start_child(
        state.span,
        semconv.SPAN_USER_PROMPT,
        hook="UserPromptSubmit",
        attributes=conversation(session_id, state.prompt_id),
    )
    try:
        if prompt:
            scope.verdicts.capture(
                span,
                semconv.GEN_AI_INPUT_MESSAGES,
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}],
            )
        if not prompt.strip() or not scope.settings.sync_mode:
            return {}
        wire = scope.wire_for(data)
        plan = windows.plan_prompt(wire, prompt, scope.limits)
        verdict = await scope.verdicts.judge(span, "UserPromptSubmit", plan, session_id=session_id)
        outcome = decide(Case("UserPromptSubmit", verdict, scope.rules))
        call.settle(outcome)
        if outcome.blocked:
            scope.verdicts.attach(
                span,
                contract.prompt_record(wire, prompt, blocked_reason=outcome.reason),
                "prompt.blocked",
                truncated=plan.windowed,
            )
        return outcome.output
    finally:
        end_span(span)
