"""Span names, attributes and per-session span state for the hook callbacks.

Parents are explicit: every span is started with the context of the span it
belongs under (session, subagent or tool), looked up by ``session_id``,
``agent_id`` and ``tool_use_id``; nothing relies on contextvars, because hook
callbacks run in tasks the SDK created when it connected.

Usage::

    tracing = SessionTracing(tracer, settings)
    state = tracing.session("session-1")          # opens ``invoke_agent claude-agent``
    span = tracing.start_child(state, semconv.SPAN_USER_PROMPT, hook="UserPromptSubmit")
    record_verdict(span, "UserPromptSubmit", verdict, settings)
    span.end()
    tracing.end_session("session-1")
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

# The logs signal's API lives under this underscore path in every released
# opentelemetry-api (it is "development" upstream); it is the documented one.
from opentelemetry._logs import LogRecord, SeverityNumber, get_logger_provider
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode

from akto_otel import semconv
from akto_otel.config import Settings
from akto_otel.contract import Verdict, dumps
from akto_otel.redaction import Redactor
from akto_otel.version import __version__

__all__ = [
    "ATTR_DECISION",
    "EVENT_CONTENT",
    "EVENT_VERDICT",
    "DeniedAnswers",
    "GuardrailSpanStart",
    "SessionState",
    "SessionTracing",
    "SilentSpan",
    "capture_content",
    "emit_content_event",
    "end_span",
    "guardrail_findings",
    "guardrail_result_attributes",
    "guardrail_source",
    "guardrail_span_start",
    "mark_error",
    "record_guardrail_result",
    "record_verdict",
    "shown_parent",
    "silent_span",
    "start_agent_span",
    "start_span",
]

EVENT_VERDICT = semconv.EVENT_VERDICT
ATTR_HOOK = semconv.AKTO_HOOK
ATTR_DECISION = semconv.AKTO_GUARDRAIL_DECISION
ATTR_BEHAVIOUR = semconv.AKTO_GUARDRAIL_BEHAVIOUR
ATTR_REASON = semconv.AKTO_GUARDRAIL_REASON
ATTR_FAIL_OPEN = semconv.AKTO_GUARDRAIL_FAIL_OPEN
ATTR_POLICY = semconv.AKTO_GUARDRAIL_POLICY_NAME
ATTR_SEVERITY = semconv.AKTO_GUARDRAIL_SEVERITY
_REASON_MAX = 1024
_log = logging.getLogger("akto_otel.spans")


class DeniedAnswers:
    """Subagent answers denied past the regeneration bound, newest last; bounded.

    Holds at most :attr:`MAX_ANSWERS` answers and :attr:`MAX_CHARS` characters (the
    newest answer is always held, whatever its size). What it holds is matched by
    containment, so a hash cannot stand in for an answer; instead, once an answer has
    been evicted the set is *saturated*: iterating it also yields ``""``, which every
    output contains, so from then on every tool output of the session counts as
    carrying a denied answer (fail-closed: an evicted answer can never reach the
    parent). Only a session flooded with denials gets there. ``add``, iteration and
    truthiness are those of the ``set`` it replaces.
    """

    #: The newest answers held by count, and by total characters.
    MAX_ANSWERS = 256
    MAX_CHARS = 4_000_000

    def __init__(self) -> None:
        self._answers: OrderedDict[str, None] = OrderedDict()
        self._chars = 0
        self.saturated = False

    def add(self, answer: str) -> None:
        if answer in self._answers:
            self._answers.move_to_end(answer)
            return
        self._answers[answer] = None
        self._chars += len(answer)
        while len(self._answers) > 1 and (
            len(self._answers) > self.MAX_ANSWERS or self._chars > self.MAX_CHARS
        ):
            evicted, _ = self._answers.popitem(last=False)
            self._chars -= len(evicted)
            if not self.saturated:
                self.saturated = True
                _log.warning(
                    "akto_otel: more than %d denied subagent answers in one session; "
                    "every further tool output of the session is withheld from the parent",
                    self.MAX_ANSWERS,
                )

    def __iter__(self) -> Iterator[str]:
        if self.saturated:
            yield ""
        yield from reversed(self._answers)

    def __len__(self) -> int:
        return len(self._answers)

    def __bool__(self) -> bool:
        return bool(self._answers) or self.saturated

    def __contains__(self, answer: object) -> bool:
        return answer in self._answers


@dataclass
class SessionState:
    """What the hooks remember about one CLI session."""

    session_id: str
    span: Span
    owns_span: bool
    last_prompt: str = ""
    prompt_id: str = ""
    regenerations: int = 0
    subagent_regenerations: dict[str, int] = field(default_factory=dict)
    #: Subagent answers denied past the regeneration bound: they must not reach the parent.
    denied_answers: DeniedAnswers = field(default_factory=DeniedAnswers)
    tools: dict[str, Span] = field(default_factory=dict)
    agents: dict[str, Span] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)


class SessionTracing:
    """Keeps the open spans of every live session and ends them reliably.

    ``root`` (optional) is the span of a bound :meth:`AktoGuardrails.session`
    scope: sessions then live under it and never end it. Without a root, each
    turn gets its own ``invoke_agent`` span, ended when the turn's Stop lets the
    answer through. At most ``settings.max_sessions`` sessions are kept; the
    least recently seen one (and any idle past ``session_idle_timeout``) is
    evicted with its spans closed as errors.

    With ``AKTO_SPANS=guard`` every hook span is a :class:`SilentSpan`: the same
    state, ids and lifetimes (so decisions and records cannot differ), nothing
    exported; the guardrail calls' spans nest under the span that was current
    (``root``, else the one current when the hook runs).
    """

    def __init__(self, tracer: trace.Tracer, settings: Settings, root: Span | None = None) -> None:
        self._tracer = tracer
        self._settings = settings
        self._root = root
        self._silent = settings.spans == "guard"
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[SessionState]:
        return iter(list(self._sessions.values()))

    @property
    def tracer(self) -> trace.Tracer:
        return self._tracer

    def get(self, session_id: str) -> SessionState | None:
        return self._sessions.get(session_id)

    def session(self, session_id: str) -> SessionState:
        """The state of ``session_id``, opening its agent span when new."""
        state = self._sessions.get(session_id)
        now = time.monotonic()
        if state is not None:
            state.last_seen = now
            self._sessions.move_to_end(session_id)
            return state
        self._evict(now)
        span: Span
        if self._silent:
            # The session state lives exactly as long as in full mode: only spans differ.
            anchor = self._root if self._root is not None else trace.get_current_span()
            span, owns = silent_span(anchor), self._root is None
        elif self._root is not None:
            span, owns = self._root, False
            if session_id and span.is_recording():
                span.set_attribute(semconv.GEN_AI_CONVERSATION_ID, session_id)
        else:
            span, owns = self._start_agent_span(session_id), True
        state = SessionState(session_id=session_id, span=span, owns_span=owns, last_seen=now)
        self._sessions[session_id] = state
        return state

    def _start_agent_span(self, session_id: str) -> Span:
        return start_agent_span(
            self._tracer,
            self._settings.agent_name,
            session_id=session_id,
            agent_id=self._settings.agent_id,
        )

    def _evict(self, now: float) -> None:
        idle = self._settings.session_idle_timeout
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            full = len(self._sessions) >= self._settings.max_sessions
            if not full and now - oldest.last_seen < idle:
                break
            self.end_session(oldest.session_id, error="session_evicted")

    def parent_for(self, state: SessionState, agent_id: str = "") -> Span:
        """The span a tool or hook span of this session (or subagent) nests under."""
        if agent_id:
            agent = state.agents.get(agent_id)
            if agent is not None:
                return agent
        return state.span

    def start_child(
        self,
        parent: Span,
        name: str,
        *,
        hook: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> Span:
        if self._silent:
            return silent_span(shown_parent(parent))
        attrs: dict[str, Any] = {ATTR_HOOK: hook}
        if attributes:
            attrs.update(attributes)
        return start_span(
            self._tracer,
            name,
            context=trace.set_span_in_context(parent),
            kind=kind,
            attributes=attrs,
        )

    def start_subagent(self, state: SessionState, agent_id: str, agent_type: str) -> Span:
        existing = state.agents.get(agent_id)
        if existing is not None:
            return existing
        if self._silent:
            state.agents[agent_id] = silent_span(shown_parent(state.span))
            return state.agents[agent_id]
        span = start_agent_span(
            self._tracer,
            agent_type or "subagent",
            session_id=state.session_id,
            agent_id=agent_id,
            parent=state.span,
            hook="SubagentStart",
        )
        state.agents[agent_id] = span
        return span

    def end_turn(self, session_id: str) -> None:
        """End an unbound session's turn span (and anything it left open)."""
        state = self._sessions.get(session_id)
        if state is None or not state.owns_span:
            return
        self.end_session(session_id)

    def end_session(self, session_id: str, *, error: str | None = None) -> None:
        """Close every span the session left open and forget it.

        Open tool and subagent spans are ended with an error status (the session
        ended before they did); the agent span too when ``error`` is given.
        """
        state = self._sessions.pop(session_id, None)
        if state is None:
            return
        for tool_span in state.tools.values():
            mark_error(tool_span, error or "session_ended")
            end_span(tool_span)
        for agent_span in state.agents.values():
            mark_error(agent_span, error or "session_ended")
            end_span(agent_span)
        state.tools.clear()
        state.agents.clear()
        if state.owns_span:
            if error:
                mark_error(state.span, error)
            end_span(state.span)

    def end_all(self, *, error: str | None = None) -> None:
        for session_id in list(self._sessions):
            self.end_session(session_id, error=error)


def start_agent_span(
    tracer: trace.Tracer,
    name: str,
    *,
    session_id: str = "",
    agent_id: str = "",
    parent: Span | None = None,
    hook: str = "",
) -> Span:
    """An ``invoke_agent <name>`` INTERNAL span with the GenAI agent attributes.

    The agent (the CLI the SDK runs) is local, not a remote agent service: the GenAI
    conventions make that span INTERNAL, without ``gen_ai.provider.name``.
    """
    attributes: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_AGENT,
        semconv.GEN_AI_AGENT_NAME: name,
    }
    if agent_id:
        attributes[semconv.GEN_AI_AGENT_ID] = agent_id
    if session_id:
        attributes[semconv.GEN_AI_CONVERSATION_ID] = session_id
    if hook:
        attributes[ATTR_HOOK] = hook
    context = trace.set_span_in_context(parent) if parent is not None else None
    return start_span(
        tracer,
        semconv.invoke_agent_span_name(name),
        context=context,
        kind=SpanKind.INTERNAL,
        attributes=attributes,
    )


class SilentSpan(NonRecordingSpan):
    """A hook's span in ``AKTO_SPANS=guard``: never recorded nor exported.

    It has ids of its own (in ``anchor``'s trace) so the Akto records attached to it
    keep their distinct idempotency keys; spans that are shown (the guardrail calls)
    nest under ``anchor``, the span that was current: the app's, another
    instrumentation's, or none (then they start their own traces).
    """

    def __init__(self, context: SpanContext, anchor: Span) -> None:
        super().__init__(context)
        self.anchor = anchor


def silent_span(anchor: Span) -> SilentSpan:
    """A :class:`SilentSpan` under ``anchor`` (a span of its trace, or a new trace)."""
    anchor = shown_parent(anchor)
    parent = anchor.get_span_context()
    trace_id = parent.trace_id if parent.is_valid else random.getrandbits(128) or 1
    context = SpanContext(
        trace_id,
        random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=parent.trace_flags,
    )
    return SilentSpan(context, anchor)


def shown_parent(span: Span) -> Span:
    """The span a shown child of ``span`` nests under: its anchor when ``span`` is silent."""
    return span.anchor if isinstance(span, SilentSpan) else span


def start_span(tracer: trace.Tracer, name: str, **kwargs: Any) -> Span:
    """``tracer.start_span``; a span processor that raises (the app's) gives a no-op span."""
    try:
        return tracer.start_span(name, **kwargs)
    except Exception:
        _log.warning("a span processor raised while starting %s", name)
        return trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)


def end_span(span: Span) -> None:
    """End ``span``; a span processor that raises (the app's) never reaches the caller."""
    try:
        span.end()
    except Exception:
        _log.warning("a span processor raised while ending %s", type(span).__name__)


def mark_error(span: Span, error_type: str, description: str = "") -> None:
    """Status ERROR plus a low-cardinality ``error.type`` (never status OK)."""
    if not span.is_recording():
        return
    span.set_attribute(semconv.ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, description or error_type))


def record_verdict(span: Span, hook: str, verdict: Verdict, settings: Settings) -> None:
    """Put the verdict on the guarded span: attributes plus the verdict event."""
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {
        ATTR_HOOK: hook,
        ATTR_DECISION: verdict.decision,
        ATTR_BEHAVIOUR: verdict.behaviour,
        ATTR_REASON: verdict.reason[:_REASON_MAX],
        ATTR_FAIL_OPEN: verdict.fail_open,
    }
    if verdict.policy_name:
        attributes[ATTR_POLICY] = verdict.policy_name
    if verdict.severity:
        attributes[ATTR_SEVERITY] = verdict.severity
    if verdict.error:
        attributes[semconv.ERROR_TYPE] = verdict.error
    span.add_event(EVENT_VERDICT, attributes)
    span.set_attribute(ATTR_DECISION, verdict.decision)
    if verdict.error:
        span.set_attribute(semconv.ERROR_TYPE, verdict.error)


#: Log event that carries content when capture is EVENT_ONLY or SPAN_AND_EVENT.
EVENT_CONTENT = semconv.EVENT_CONTENT
#: Room kept past the length limit before redacting, so a secret cut by the limit
#: is still whole (and matched) when redaction runs.
_REDACTION_MARGIN = 4096


def guardrail_source(*, request: bool, response: bool) -> str | None:
    """``gen_ai.guardrail.source``: the side Akto judged, in Akto's own terms.

    Akto's API expresses the source through the flag the call sets (``guardrails``
    for the request side, ``response_guardrails`` for the response side) and answers
    under ``requestResult`` / ``responseResult``; the draft says to use that term.
    Both sides at once have no single term: None (the attribute is left out).
    """
    if request == response:
        return None
    return semconv.AKTO_SOURCE_REQUEST if request else semconv.AKTO_SOURCE_RESPONSE


@dataclass(frozen=True)
class GuardrailSpanStart:
    """How the guardrail call's span starts: its name, kind and creation-time attributes."""

    name: str
    kind: SpanKind
    attributes: dict[str, Any]


def guardrail_span_start(
    settings: Settings,
    hook: str,
    *,
    request: bool = True,
    response: bool = False,
    server: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> GuardrailSpanStart:
    """The guardrail call's span as the settings ask for it.

    With ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``
    (``settings.semconv_security``): the draft's ``apply_guardrail Akto`` CLIENT
    span, with the attributes the draft wants at creation (operation, provider,
    ``server.*``) and the component and source. Without it: today's
    ``run_guardrail akto``. Either way ``akto.hook`` (and ``extra``, the package's
    ``akto.*`` window attributes) say what the hook judged.
    """
    attributes: dict[str, Any] = {ATTR_HOOK: hook}
    if settings.semconv_security:
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OPERATION_APPLY_GUARDRAIL
        attributes[semconv.GEN_AI_PROVIDER_NAME] = semconv.GUARDRAIL_PROVIDER_NAME
        attributes[semconv.GEN_AI_GUARDRAIL_COMPONENT_NAME] = semconv.GUARDRAIL_COMPONENT_NAME
        source = guardrail_source(request=request, response=response)
        if source is not None:
            attributes[semconv.GEN_AI_GUARDRAIL_SOURCE] = source
        name = semconv.SPAN_APPLY_GUARDRAIL
    else:
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OPERATION_RUN_GUARDRAIL
        attributes[semconv.HTTP_REQUEST_METHOD] = "POST"
        name = semconv.SPAN_RUN_GUARDRAIL
    attributes.update(server or {})
    attributes.update(extra or {})
    return GuardrailSpanStart(name, SpanKind.CLIENT, attributes)


def guardrail_result_attributes(verdict: Verdict) -> dict[str, Any]:
    """The draft's overall result of one call: Akto's ``Allowed``, as Akto gave it.

    ``gen_ai.guardrail.result.type`` is Akto's field name and ``result.value`` its
    value in canonical text (``true``/``false``), never the hook's decision: a
    ``warn`` verdict is ``Allowed: false`` here though the hook let it pass (that is
    ``akto.guardrail.decision``). Nothing when Akto reported no result (nothing
    ran, or it could not answer: then ``error.type`` says why).
    """
    if verdict.akto_allowed is None:
        return {}
    return {
        semconv.GEN_AI_GUARDRAIL_RESULT_TYPE: semconv.AKTO_RESULT_ALLOWED,
        semconv.GEN_AI_GUARDRAIL_RESULT_VALUE: "true" if verdict.akto_allowed else "false",
    }


def guardrail_findings(
    verdict: Verdict, *, request: bool = True, response: bool = False
) -> list[dict[str, Any]]:
    """The ``gen_ai.guardrail.result`` events of a verdict: one per finding Akto reported.

    Akto reports at most one finding per verdict (the strictest side and window win):
    its ``behaviour`` as the result, the policy and the rule. Left out on purpose:
    ``result.reason`` (Akto's ``Reason`` is free text that may quote the content
    judged, which the draft forbids there), ``risk.category`` and ``risk.score``
    (Akto reports no category, and its severity is a label, not a score: it stays in
    ``akto.guardrail.severity``).
    """
    if not verdict.ran or verdict.error:
        return []
    if not (verdict.behaviour or verdict.policy_name or verdict.rule_violated):
        return []
    event: dict[str, Any] = {
        semconv.GEN_AI_GUARDRAIL_COMPONENT_NAME: semconv.GUARDRAIL_COMPONENT_NAME,
        semconv.GEN_AI_PROVIDER_NAME: semconv.GUARDRAIL_PROVIDER_NAME,
    }
    source = guardrail_source(request=request, response=response)
    if source is not None:
        event[semconv.GEN_AI_GUARDRAIL_SOURCE] = source
    if verdict.behaviour:
        event[semconv.GEN_AI_GUARDRAIL_RESULT_TYPE] = semconv.AKTO_RESULT_BEHAVIOUR
        event[semconv.GEN_AI_GUARDRAIL_RESULT_VALUE] = verdict.behaviour
    if verdict.policy_name:
        event[semconv.GEN_AI_GUARDRAIL_POLICY_ID] = verdict.policy_name
    if verdict.rule_violated:
        event[semconv.GEN_AI_GUARDRAIL_POLICY_RULE_ID] = verdict.rule_violated
    if verdict.severity:
        event[ATTR_SEVERITY] = verdict.severity
    return [event]


def record_guardrail_result(
    span: Span,
    verdict: Verdict,
    settings: Settings,
    *,
    request: bool = True,
    response: bool = False,
    own_span: bool = True,
) -> None:
    """Put a verdict on the guardrail call's span (``own_span``) or, with
    ``AKTO_GUARDRAIL_SPANS=false``, on the hook's span; does not end it.

    ``own_span``: ``error.type`` and status when Akto could not answer, and
    ``akto.guardrail.decision`` (what the hook enforces). With the opt-in, the
    draft's overall result on the call's span and one ``gen_ai.guardrail.result``
    event per finding on whichever span is given.
    """
    if not span.is_recording():
        return
    if own_span:
        if verdict.error:
            mark_error(span, verdict.error)
        span.set_attribute(ATTR_DECISION, verdict.decision)
    if not settings.semconv_security:
        return
    if own_span:
        span.set_attributes(guardrail_result_attributes(verdict))
    for event in guardrail_findings(verdict, request=request, response=response):
        span.add_event(semconv.EVENT_GUARDRAIL_RESULT, event)


def content_text(value: Any, settings: Settings, redactor: Redactor) -> str | None:
    """Content for an opt-in attribute: JSON when not text, redacted, then truncated.

    None when redaction failed: the content is dropped, never sent raw.
    """
    try:
        text = value if isinstance(value, str) else dumps(value)
    except Exception:
        return None
    limit = settings.capture_max_length
    redacted = redactor.redact_or_none(text[: limit + _REDACTION_MARGIN])
    if redacted is None:
        return None
    if len(text) > limit:
        return redacted[:limit] + f"...[truncated {len(text) - limit} chars]"
    return redacted


def capture_content(
    span: Span, key: str, value: Any, settings: Settings, redactor: Redactor
) -> None:
    """Record ``value`` under ``key`` as the capture mode says (nothing by default).

    SPAN_ONLY and SPAN_AND_EVENT put it on ``span``; EVENT_ONLY and SPAN_AND_EVENT
    emit a ``gen_ai.client.inference.operation.details`` log event in ``span``'s
    context through the global ``LoggerProvider`` (no provider: no event). Both
    carry the same redacted, truncated text.
    """
    if settings.capture_content == "NO_CONTENT" or not span.is_recording():
        return
    text = content_text(value, settings, redactor)
    if text is None:
        span.set_attribute(semconv.AKTO_CONTENT_DROPPED, True)
        return
    if settings.capture_on_spans:
        span.set_attribute(key, text)
    if settings.capture_in_events:
        emit_content_event(span, {key: text})


def emit_content_event(span: Span, attributes: Mapping[str, Any]) -> None:
    """One content log event under ``span``, on the global ``LoggerProvider``."""
    logger = get_logger_provider().get_logger(
        semconv.SCOPE_CONTENT, __version__, schema_url=semconv.SCHEMA_URL
    )
    logger.emit(
        LogRecord(
            timestamp=time.time_ns(),
            context=trace.set_span_in_context(span),
            severity_number=SeverityNumber.INFO,
            severity_text=SeverityNumber.INFO.name,
            attributes=dict(attributes),
            event_name=EVENT_CONTENT,
        )
    )
