"""The guardrail call every hook handler shares: a verdict, and what is recorded of it.

:class:`Verdicts` asks Akto (whole, or window by window) under a ``run_guardrail
akto`` span, puts the verdict event on the hook's span, counts the decision, tells
an unjudged call, and queues the hook's Akto records with its span. No recording
step can change a verdict once it is known.

Usage::

    verdicts = Verdicts(settings, client, tracer, metrics, processor, redactor, unjudged)
    plan = windows.plan_prompt(wire, prompt, limits)
    verdict = await verdicts.judge(span, "UserPromptSubmit", plan)
    verdicts.attach(span, contract.prompt_record(wire, prompt), "prompt")
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span

from akto_otel import semconv, windows
from akto_otel.config import Settings
from akto_otel.contract import Verdict
from akto_otel.guardrails import GuardrailClient
from akto_otel.metrics import GuardrailMetrics
from akto_otel.processor import AktoSpanProcessor
from akto_otel.redaction import Redactor
from akto_otel.spans import (
    SilentSpan,
    capture_content,
    end_span,
    guardrail_span_start,
    record_guardrail_result,
    record_verdict,
    shown_parent,
    start_span,
)
from akto_otel.unjudged import UnjudgedRecorder, unjudged_fault

__all__ = ["Verdicts", "quietly"]

#: One log for the whole hook path (facade and handlers), as before they were split.
_log = logging.getLogger("akto_otel.hooks")

_R = TypeVar("_R")


def quietly(fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R | None:
    """Run a recording step; its failure is logged and never changes a decision."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        _log.warning(
            "akto_otel could not record (%s): %s", getattr(fn, "__name__", fn), type(exc).__name__
        )
        return None


class Verdicts:
    """Akto's verdicts for one guard: the call, its span, its records and its metrics."""

    def __init__(
        self,
        settings: Settings,
        client: GuardrailClient,
        tracer: trace.Tracer,
        metrics: GuardrailMetrics,
        processor: AktoSpanProcessor,
        redactor: Redactor,
        unjudged: UnjudgedRecorder,
    ) -> None:
        self.settings = settings
        self.client = client
        self.limits = windows.Limits.from_settings(settings)
        self.metrics = metrics
        self.processor = processor
        self._tracer = tracer
        self.redactor = redactor
        self._unjudged = unjudged
        self._server_attributes = _server_attributes(settings.ingestion_url)

    async def judge(
        self,
        span: Span,
        hook: str,
        plan: windows.Plan,
        *,
        request: bool = True,
        response: bool = False,
        ingest: bool = False,
        target_id: str = "",
        tool: str = "",
        session_id: str = "",
    ) -> Verdict:
        """Judge ``plan`` (whole, or window by window) under the guardrail call's span
        (``run_guardrail akto``, or ``apply_guardrail Akto`` with the semconv opt-in).

        The verdict is recorded after it is known; no recording step can change it.
        A verdict that lets the call through unjudged (fail-open) is told and counted.
        """
        silent = isinstance(span, SilentSpan)
        child = None
        if self.settings.guardrail_spans or silent:
            # Guard mode's only spans: they carry what joins them to the agent's.
            joins = _join_attributes(session_id, target_id, tool) if silent else {}
            child = quietly(self._start_guardrail_span, span, hook, plan, request, response, joins)
        ingest = ingest and not plan.windowed

        async def check(record: dict[str, Any]) -> Verdict:
            return await self.client.check(
                record, request=request, response=response, ingest=ingest
            )

        try:
            verdict = await windows.judge(check, plan, self.limits)
            sides = {"request": request, "response": response}
            if child is not None:
                quietly(record_guardrail_result, child, verdict, self.settings, **sides)
            else:
                quietly(self._record_guardrail_call, span, plan, verdict, sides)
            # With AKTO_SPANS=guard the hook's span is not shown: the call's span is.
            shown = child if silent and child is not None else span
            quietly(record_verdict, shown, hook, verdict, self.settings)
            quietly(self.metrics.record_decision, hook, verdict)
            fault = unjudged_fault(verdict)
            if fault is not None:
                self.unjudged(hook, tool, fault, shown, session_id=session_id)
            return verdict
        finally:
            if child is not None:
                end_span(child)

    def unjudged(
        self, hook: str, tool: str, fault: str, span: Span | None, *, session_id: str = ""
    ) -> None:
        """Tell, count and mark one call of ``hook`` allowed without a verdict."""
        self._unjudged.record(hook, tool, fault, span, session_id=session_id)

    def attach(
        self,
        span: Span,
        record: dict[str, Any],
        kind: str,
        *,
        guardrails: bool = False,
        response_guardrails: bool = False,
        truncated: bool = False,
    ) -> None:
        """Queue ``record`` for delivery with ``span``; never raises."""
        if truncated:
            # Delivery may cut what judging never does: say so where it shows.
            quietly(span.set_attribute, semconv.AKTO_RECORD_TRUNCATED, True)
            quietly(self.metrics.record_truncated, kind)
        quietly(
            self.processor.attach,
            span,
            record,
            kind=kind,
            guardrails=guardrails,
            response_guardrails=response_guardrails,
        )

    def capture(self, span: Span, key: str, value: Any) -> None:
        """Content on ``span`` when capture is on, redacted; never raises."""
        quietly(capture_content, span, key, value, self.settings, self.redactor)

    def _start_guardrail_span(
        self,
        span: Span,
        hook: str,
        plan: windows.Plan,
        request: bool,
        response: bool,
        joins: dict[str, Any],
    ) -> Span:
        start = guardrail_span_start(
            self.settings,
            hook,
            request=request,
            response=response,
            server=self._server_attributes,
            extra={**joins, **_plan_attributes(plan)},
        )
        return start_span(
            self._tracer,
            start.name,
            context=trace.set_span_in_context(shown_parent(span)),
            kind=start.kind,
            attributes=start.attributes,
        )

    def _record_guardrail_call(
        self, span: Span, plan: windows.Plan, verdict: Verdict, sides: dict[str, bool]
    ) -> None:
        """With ``guardrail_spans`` off: the call's timing (and findings) on the hook span."""
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            semconv.AKTO_GUARDRAIL_DURATION_MS: round(verdict.latency_s * 1000, 3),
            **_plan_attributes(plan),
        }
        span.set_attributes(attributes)
        record_guardrail_result(span, verdict, self.settings, own_span=False, **sides)


def _join_attributes(session_id: str, tool_call_id: str, tool: str) -> dict[str, Any]:
    """What joins a guardrail call to the agent and tool spans of another process or
    instrumentation (the CLI's ``claude_code.tool`` carries the same two ids)."""
    attributes: dict[str, Any] = {}
    if session_id:
        attributes[semconv.GEN_AI_CONVERSATION_ID] = session_id
    if tool_call_id:
        attributes[semconv.GEN_AI_TOOL_CALL_ID] = tool_call_id
    if tool:
        attributes[semconv.GEN_AI_TOOL_NAME] = tool
    return attributes


def _plan_attributes(plan: windows.Plan) -> dict[str, Any]:
    """How a judgement was cut: window count and size, for content judged in windows."""
    if not (plan.windowed or plan.too_large):
        return {}
    return {
        semconv.AKTO_GUARDRAIL_WINDOWS: len(plan.records),
        semconv.AKTO_GUARDRAIL_CONTENT_CHARS: plan.size,
    }


def _server_attributes(url: str) -> dict[str, Any]:
    if not url:
        return {}
    parts = urlsplit(url)
    attributes: dict[str, Any] = {semconv.SERVER_ADDRESS: parts.hostname or ""}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    attributes[semconv.SERVER_PORT] = port
    return attributes
