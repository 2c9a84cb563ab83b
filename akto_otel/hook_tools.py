"""PreToolUse, PostToolUse and PostToolUseFailure: a tool call and its output judged.

PreToolUse opens the ``execute_tool`` span and judges the call (a masked input
replaces the original when Akto's mask is usable); PostToolUse judges the output
(a masked output replaces it in the schemas the CLI accepts) and closes the span;
PostToolUseFailure judges a failing tool's error text. A call we denied that shows
up as run is a breach. Each handler takes the hook's input dict and answers with
the output :func:`akto_otel.decision.decide` made.

Usage::

    output = await hook_tools.pre_tool_use(scope, {"session_id": "s", "tool_name": "Bash",
                                                   "tool_input": {"command": "ls"}}, Call())
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

from akto_otel import armed, contract, semconv, windows
from akto_otel.answers import withheld_agent_output
from akto_otel.contract import Verdict
from akto_otel.decision import Case, Outcome, OutputShape, decide
from akto_otel.hook_scope import Call, HookOutput, HookScope, text
from akto_otel.spans import SessionState, end_span, mark_error, record_verdict
from akto_otel.verdict import quietly

__all__ = [
    "denies_call",
    "masked_tool_input",
    "masked_tool_output",
    "output_shape",
    "post_tool_use",
    "post_tool_use_failure",
    "pre_tool_use",
]

_log = logging.getLogger("akto_otel.hooks")

#: How long the first tool call waits, at most, for the session-start probe of Akto.
_PROBE_WAIT_S = 0.5


async def pre_tool_use(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    session_id = text(data, "session_id")
    tool_name = text(data, "tool_name")
    tool_use_id = text(data, "tool_use_id")
    raw_input = data.get("tool_input")
    tool_input: Any = {} if raw_input is None else raw_input
    state = scope.tracing.session(session_id)
    key, span = _tool_span(scope, state, data, tool_name, tool_use_id)
    scope.verdicts.capture(span, semconv.GEN_AI_TOOL_CALL_ARGUMENTS, tool_input)
    if not scope.settings.sync_mode:
        return {}
    wire = scope.wire_for(data)
    plan = windows.plan_tool_call(wire, tool_name, tool_input, scope.limits)
    # The session-start probe warns before the first tool call runs: waited for
    # alongside the verdict, so the hook takes at most max(verdict, bound).
    probe = scope.probe.pending()
    deadline = asyncio.get_running_loop().time() + _PROBE_WAIT_S if probe else 0.0
    verdict = await scope.verdicts.judge(
        span,
        "PreToolUse",
        plan,
        target_id=tool_use_id,
        tool=tool_name,
        session_id=session_id,
    )
    await scope.probe.wait(probe, deadline)
    masked = None
    if verdict.decision == "modify" and not plan.windowed:
        masked = masked_tool_input(tool_name, tool_input, verdict.modified_payload)
    outcome = decide(Case("PreToolUse", verdict, scope.rules, masked=masked))
    call.settle(outcome)
    if outcome.action == "deny":
        if verdict.decision == "modify":
            quietly(span.set_attribute, semconv.AKTO_GUARDRAIL_MASK_APPLIED, False)
        scope.verdicts.attach(
            span,
            contract.tool_request_record(
                wire, tool_name, tool_input, blocked_reason=outcome.reason
            ),
            "tool.blocked",
            truncated=plan.windowed,
        )
        quietly(_end_tool, state, key, error="blocked")
        quietly(scope.denied.add, session_id, tool_use_id)
    return outcome.output


def _tool_span(
    scope: HookScope,
    state: SessionState,
    data: Mapping[str, Any],
    tool_name: str,
    tool_use_id: str,
) -> tuple[str, Span]:
    """The open ``execute_tool`` span of this call (opened if new), with its key."""
    key = tool_use_id or f"unkeyed-{len(state.tools)}-{time.monotonic_ns()}"
    existing = state.tools.get(key)
    if existing is not None:
        return key, existing
    is_mcp = contract.parse_claude_tool(tool_name)[0]
    attributes: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_EXECUTE_TOOL,
        semconv.GEN_AI_TOOL_NAME: tool_name,
        semconv.GEN_AI_TOOL_TYPE: "extension" if is_mcp else "function",
        semconv.GEN_AI_CONVERSATION_ID: state.session_id,
    }
    if tool_use_id:
        attributes[semconv.GEN_AI_TOOL_CALL_ID] = tool_use_id
    if is_mcp:
        attributes[semconv.MCP_METHOD_NAME] = semconv.MCP_METHOD_TOOLS_CALL
    agent_id = text(data, "agent_id")
    if agent_id:
        attributes[semconv.GEN_AI_AGENT_ID] = agent_id
    span = scope.tracing.start_child(
        scope.tracing.parent_for(state, agent_id),
        semconv.execute_tool_span_name(tool_name or "unknown"),
        hook="PreToolUse",
        attributes=attributes,
    )
    state.tools[key] = span
    return key, span


def _end_tool(state: SessionState, key: str, *, error: str | None) -> None:
    span = state.tools.pop(key, None)
    if span is None:
        return
    if error:
        mark_error(span, error)
    end_span(span)


async def post_tool_use(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    session_id = text(data, "session_id")
    tool_name = text(data, "tool_name")
    tool_use_id = text(data, "tool_use_id")
    raw_input = data.get("tool_input")
    tool_input: Any = {} if raw_input is None else raw_input
    tool_response: Any = data.get("tool_response")
    state = scope.tracing.session(session_id)
    key, span = _tool_span(scope, state, data, tool_name, tool_use_id)
    try:
        breach = _breach(scope, state, span, "PostToolUse", tool_name, tool_use_id)
        if breach is not None:
            return call.settle(breach)
        duration = data.get("duration_ms")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            quietly(span.set_attribute, semconv.AKTO_TOOL_DURATION_MS, duration)
        scope.verdicts.capture(span, semconv.GEN_AI_TOOL_CALL_RESULT, tool_response)
        if tool_response is None:
            return {}
        shape = output_shape(tool_name, tool_response)
        if scope.settings.sync_mode and _carries_denied_answer(state, tool_response):
            # A subagent answer denied at the regeneration bound: not for the parent.
            denied = Verdict(
                decision="deny", allowed=False, reason="Denied subagent answer withheld"
            )
            quietly(record_verdict, span, "PostToolUse", denied, scope.settings)
            # The Agent tool's own output shape takes the block reason, so the parent
            # goes on without the answer; any other shape ends the turn.
            replaced = withheld_agent_output(scope.answers, tool_name, tool_response)
            if replaced is not None:
                return call.settle(Outcome("replace_output", replaced, denied.reason))
            return call.settle(decide(Case("PostToolUse", denied, scope.rules, shape=shape)))
        wire = scope.wire_for(data)
        if scope.settings.sync_mode and scope.settings.tool_response_guardrails:
            plan, verdict = await _judge_output(
                scope, span, wire, tool_name, tool_input, tool_response, tool_use_id, session_id
            )
            joined = _joined_blocks(tool_response) if verdict.allowed else None
            if joined is not None and not verdict.fail_open:
                # The model reads an MCP output's text blocks back to back: a pattern
                # split across them is judged whole too (once the blocks passed; an
                # output already unjudged is not counted twice).
                _, whole = await _judge_output(
                    scope,
                    span,
                    wire,
                    tool_name,
                    tool_input,
                    joined,
                    tool_use_id,
                    session_id,
                    ingest=False,
                )
                if whole.decision != "allow":
                    verdict = windows.strictest([verdict, whole])
            masked = None
            if verdict.decision == "modify" and not plan.windowed:
                masked = masked_tool_output(
                    tool_name, tool_response, shape, verdict.modified_payload
                )
            outcome = decide(Case("PostToolUse", verdict, scope.rules, masked=masked, shape=shape))
            call.settle(outcome)
            if plan.windowed:
                record = contract.tool_result_record(wire, tool_name, tool_input, tool_response)
                scope.verdicts.attach(span, record, "tool.result", truncated=True)
            return outcome.output
        record = contract.tool_result_record(wire, tool_name, tool_input, tool_response)
        scope.verdicts.attach(
            span,
            record,
            "tool.result",
            guardrails=not scope.settings.sync_mode,
            truncated=not contract.fits_payload(tool_response),
        )
        return {}
    finally:
        quietly(_end_tool, state, key, error=None)


async def post_tool_use_failure(
    scope: HookScope, data: Mapping[str, Any], call: Call
) -> HookOutput:
    state = scope.tracing.session(text(data, "session_id"))
    tool_use_id = text(data, "tool_use_id")
    tool_name = text(data, "tool_name")
    key, span = _tool_span(scope, state, data, tool_name, tool_use_id)
    breach = _breach(scope, state, span, "PostToolUseFailure", tool_name, tool_use_id)
    if breach is not None:
        quietly(_end_tool, state, key, error="breach")
        return call.settle(breach)
    interrupted = data.get("is_interrupt") is True
    if span.is_recording():
        span.add_event(
            semconv.EVENT_TOOL_FAILURE,
            {
                semconv.AKTO_TOOL_INTERRUPTED: interrupted,
                semconv.AKTO_HOOK: "PostToolUseFailure",
            },
        )
        scope.verdicts.capture(span, semconv.GEN_AI_TOOL_CALL_RESULT, text(data, "error"))
    try:
        return await _judge_failure_output(scope, state, span, data, call)
    finally:
        quietly(
            _end_tool,
            state,
            key,
            error="tool_interrupted" if interrupted else "tool_error",
        )


async def _judge_failure_output(
    scope: HookScope,
    state: SessionState,
    span: Span,
    data: Mapping[str, Any],
    call: Call,
) -> HookOutput:
    """A failing tool's output (Bash exiting non-zero, for one)
    reaches the model as its error text: judged as the tool's output, like
    PostToolUse. The CLI cannot replace it, so a denial ends the turn."""
    error = data.get("error")
    if not scope.settings.sync_mode or not scope.settings.tool_response_guardrails:
        return {}
    if error is None or (isinstance(error, str) and not error.strip()):
        return {}
    tool_name = text(data, "tool_name")
    raw_input = data.get("tool_input")
    tool_input: Any = {} if raw_input is None else raw_input
    _, verdict = await _judge_output(
        scope,
        span,
        scope.wire_for(data),
        tool_name,
        tool_input,
        error,
        text(data, "tool_use_id"),
        state.session_id,
    )
    # The error text cannot be replaced: a mask is a deny too (shape "unknown").
    return call.settle(decide(Case("PostToolUse", verdict, scope.rules, shape="unknown")))


async def _judge_output(
    scope: HookScope,
    span: Span,
    wire: contract.WireContext,
    tool_name: str,
    tool_input: Any,
    output: Any,
    tool_use_id: str,
    session_id: str,
    *,
    ingest: bool = True,
) -> tuple[windows.Plan, Verdict]:
    """What the model reads of a tool's output, judged as a response (PostToolUse's
    guardrail call, for a success, a failure's error text or an MCP output's joined
    blocks), with the plan it was judged in."""
    plan = windows.plan_tool_result(wire, tool_name, tool_input, output, scope.limits)
    verdict = await scope.verdicts.judge(
        span,
        "PostToolUse",
        plan,
        request=False,
        response=True,
        ingest=ingest,
        target_id=tool_use_id,
        tool=tool_name,
        session_id=session_id,
    )
    return plan, verdict


def _breach(
    scope: HookScope,
    state: SessionState,
    span: Span,
    hook: str,
    tool_name: str,
    tool_use_id: str,
) -> Outcome | None:
    """A tool call we denied shows up as run: the deny did not hold. Recorded
    (ERROR log, span event on the tool and session spans, counter); the outcome
    ends the session in fail-closed mode, else None and the hook goes on."""
    if not scope.denied.take(state.session_id, tool_use_id):
        return None
    _log.error(
        "akto_otel: guardrail breach: %s reports tool call %s (%s) that Akto "
        "guardrails denied; it ran anyway (fail mode %s)",
        hook,
        tool_use_id,
        tool_name or "unknown tool",
        scope.settings.fail_mode,
    )
    attributes = {
        semconv.AKTO_HOOK: hook,
        semconv.GEN_AI_TOOL_NAME: tool_name,
        semconv.GEN_AI_TOOL_CALL_ID: tool_use_id,
    }
    for target in (span, state.span):
        if target.is_recording():
            quietly(target.add_event, semconv.EVENT_GUARDRAIL_BREACH, attributes)
    quietly(mark_error, span, "guardrail_breach")
    quietly(scope.verdicts.metrics.record_breach, hook)
    return armed.breach_outcome(scope.rules, tool_name, tool_use_id)


def denies_call(output: Any) -> bool:
    """Whether a PreToolUse output denies the call."""
    specific = output.get("hookSpecificOutput") if isinstance(output, Mapping) else None
    return isinstance(specific, Mapping) and specific.get("permissionDecision") == "deny"


def _carries_denied_answer(state: SessionState, tool_response: Any) -> bool:
    if not state.denied_answers:
        return False
    haystack = tool_response if isinstance(tool_response, str) else contract.dumps(tool_response)
    escaped = contract.dumps(tool_response) if isinstance(tool_response, str) else haystack
    for answer in state.denied_answers:
        if answer in haystack or json.dumps(answer)[1:-1] in escaped:
            return True
    return False


def _joined_blocks(tool_response: Any) -> str | None:
    """The text blocks of a content-block output joined as the model reads them, when
    there are several (else None: the output's own judgement covers it)."""
    blocks = tool_response.get("content") if isinstance(tool_response, Mapping) else tool_response
    if not isinstance(blocks, list):
        return None
    texts = [
        b["text"]
        for b in blocks
        if isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str)
    ]
    return "".join(texts) if len(texts) > 1 else None


def output_shape(tool_name: str, tool_response: Any) -> OutputShape:
    """Which replaceable schema a tool output has (each verified on the real CLI)."""
    if contract.parse_claude_tool(tool_name)[0]:
        if isinstance(tool_response, list) and all(isinstance(b, Mapping) for b in tool_response):
            return "mcp"
        return "unknown"
    if tool_name == "Bash" and isinstance(tool_response, Mapping) and "stdout" in tool_response:
        return "bash"
    return "unknown"


def _loads_object(payload: str | None) -> dict[str, Any] | None:
    if not payload:
        return None
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _no_new_keys(masked: Mapping[str, Any], original: Mapping[str, Any]) -> bool:
    return all(key in original for key in masked)


def masked_tool_input(
    tool_name: str, tool_input: Any, modified_payload: str | None
) -> dict[str, Any] | None:
    """The masked tool input inside a masked requestPayload, or None if unusable.

    Usable means: for the same tool, an object, and no key the original lacked
    (a mask that adds ``dangerouslyDisableSandbox`` is not a mask).
    """
    payload = _loads_object(modified_payload)
    if payload is None or not isinstance(tool_input, Mapping):
        return None
    is_mcp, _, tool = contract.parse_claude_tool(tool_name)
    if is_mcp:
        params = payload.get("params")
        if not isinstance(params, dict) or params.get("name") != tool:
            return None
        updated = params.get("arguments")
    else:
        if payload.get("toolName", tool_name) != tool_name:
            return None
        updated = payload.get("body")
    if not isinstance(updated, dict) or not _no_new_keys(updated, tool_input):
        return None
    return updated


def masked_tool_output(
    tool_name: str, tool_response: Any, shape: OutputShape, modified_payload: str | None
) -> Any:
    """The masked tool output in its schema (``shape``), or None if unusable."""
    payload = _loads_object(modified_payload)
    if payload is None:
        return None
    if shape == "bash" and isinstance(tool_response, Mapping):
        body = payload.get("body")
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict) or not _no_new_keys(result, tool_response):
            return None
        stdout, stderr = result.get("stdout", ""), result.get("stderr", "")
        if not isinstance(stdout, str) or not isinstance(stderr, str):
            return None
        return {"stdout": stdout, "stderr": stderr, "interrupted": False}
    if shape == "mcp" and isinstance(tool_response, list):
        result = payload.get("result")
        output = result.get("output") if isinstance(result, dict) else None
        if not isinstance(output, list) or len(output) != len(tool_response):
            return None
        for new, old in zip(output, tool_response, strict=True):
            if not isinstance(new, dict) or not _no_new_keys(new, old):
                return None
        return output
    return None
