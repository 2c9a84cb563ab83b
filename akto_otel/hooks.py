"""Claude Agent SDK hook callbacks: Akto guardrails plus an OpenTelemetry span tree.

Usage::

    from claude_agent_sdk import ClaudeAgentOptions, query
    import akto_otel

    guard = akto_otel.AktoGuardrails()                  # AKTO_* / OTEL_* from the env
    options = guard.instrument(ClaudeAgentOptions(allowed_tools=["Bash"]))
    async for message in query(prompt="...", options=options):
        ...

    # or, so the CLI's own spans join the trace through TRACEPARENT:
    async with guard.session(ClaudeAgentOptions(allowed_tools=["Bash"])) as options:
        async for message in query(prompt="...", options=options):
            ...

    # answers held until Stop has judged them; a denied one never reaches the app:
    async for message in guard.query("...", ClaudeAgentOptions(allowed_tools=["Bash"])):
        ...

    # drop-in for Akto's reference connector:
    from akto_otel import create_hooks
    user_prompt_submit, stop, pre_tool_use, post_tool_use = create_hooks(client_ip)

No callback ever raises into the SDK: an internal error is recorded on the span
and answered with the configured fail decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind

from akto_otel import armed, contract, semconv, windows
from akto_otel.answers import (
    AnswerLedger,
    Judge,
    hold_answers,
    hook_answer,
    note_hook_output,
    whole_answer,
    withheld_agent_output,
)
from akto_otel.config import (
    Settings,
    connector_overrides,
    unknown_name_errors,
    unknown_name_message,
    unknown_names,
)
from akto_otel.configure import spans_not_exported
from akto_otel.contract import Verdict, WireContext
from akto_otel.decision import JUDGING_HOOKS, Case, Outcome, OutputShape, Rules, decide, stance
from akto_otel.errors import AktoConfigError, check_keywords
from akto_otel.guardrails import GuardrailClient
from akto_otel.logs import setup_logging
from akto_otel.metrics import metrics_for
from akto_otel.processor import AktoSpanProcessor, processor_for
from akto_otel.redaction import Redactor, agent_env_overrides
from akto_otel.spans import (
    SessionState,
    SessionTracing,
    capture_content,
    end_span,
    mark_error,
    record_verdict,
    security_attributes,
    start_agent_span,
    start_span,
)
from akto_otel.unjudged import StartupProbe, UnjudgedRecorder, unjudged_fault
from akto_otel.version import __version__

if TYPE_CHECKING:
    from claude_agent_sdk import ClaudeAgentOptions, HookMatcher, Transport

__all__ = [
    "HOOK_EVENTS",
    "AktoGuardrails",
    "GuardedSession",
    "create_hooks",
    "instrumented_by",
    "live_session_of",
    "setting_warnings",
]

_log = logging.getLogger("akto_otel.hooks")

HookOutput = dict[str, Any]
HookCallback = Callable[[Any, "str | None", Any], Awaitable[HookOutput]]

HOOK_EVENTS = (
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "Stop",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "Notification",
    "PermissionRequest",
)
_MARK = "_akto_otel_hook"
#: How long the first tool call waits, at most, for the session-start probe of Akto.
_PROBE_WAIT_S = 0.5
_SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings) if f.init)
_GUARD_KEYWORDS = ("settings", "tracer_provider", "meter_provider", "client", "processor")
#: Set on the options copies we hand out: the guard that instrumented them, and the
#: session they belong to, so the zero-code wrappers keep the app's guard and scope.
_OPTIONS_GUARD = "_akto_otel_guard"
_OPTIONS_SESSION = "_akto_otel_guarded_session"
#: Set by the instrumentor on its wrapped ``query``: the SDK's original.
ORIGINAL_ATTR = "_akto_otel_original"


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return contract.dumps(value)


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class _Scope:
    """Hook state shared by one set of callbacks: sessions, their spans, the IP."""

    def __init__(self, guard: AktoGuardrails, client_ip: str, root: Span | None) -> None:
        self.guard = guard
        self.client_ip = client_ip
        self.tracing = SessionTracing(guard.tracer, guard.settings, root=root)
        self.wire = WireContext.from_settings(guard.settings, client_ip)
        self.answers = AnswerLedger()
        self.denied = armed.DeniedCalls()


class GuardedSession:
    """One guarded agent session: its span, its instrumented options, its state."""

    def __init__(self, span: Span, scope: _Scope, options: ClaudeAgentOptions) -> None:
        self.span = span
        self.options = options
        self.guard = scope.guard
        self._scope = scope
        self._closed = False
        _tag(options, _OPTIONS_SESSION, self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def answers(self) -> AnswerLedger:
        """What this session's hooks denied; :func:`akto_otel.answers.hold_answers` reads it."""
        return self._scope.answers

    def close(self, *, error: str | None = None) -> None:
        """End every span the session left open, then the session span. Idempotent.

        Never raises: an app's span processor that fails on ``end`` is logged.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._scope.tracing.end_all(error=error)
        except Exception as exc:
            _log.error("akto_otel could not end a session's spans: %s", type(exc).__name__)
        try:
            if error:
                mark_error(self.span, error)
            end_span(self.span)
        except Exception as exc:
            _log.error("akto_otel could not end the session span: %s", type(exc).__name__)


class AktoGuardrails:
    """Akto guardrails and tracing for Claude Agent SDK sessions.

    Settings come from ``settings`` or the environment (see :class:`Settings`),
    with keyword arguments overriding either. Spans go to ``tracer_provider``, else
    the global provider when the app set an SDK one, else a private provider. An
    :class:`AktoSpanProcessor` the app put on that provider ships the records; else
    one built from the settings is added to it, once.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: Any = None,
        client: GuardrailClient | None = None,
        processor: AktoSpanProcessor | None = None,
        **overrides: Any,
    ) -> None:
        check_keywords("AktoGuardrails()", overrides, _SETTING_NAMES + _GUARD_KEYWORDS)
        if settings is None:
            self.settings = Settings.from_env(**overrides)  # env and arguments checked together
        else:
            self.settings = settings.replace(**overrides) if overrides else settings
        setup_logging(self.settings)
        for warning in setting_warnings(self.settings):
            _warn_once(warning)
        unknown = unknown_names()
        if unknown and self.settings.strict_settings:
            # Settings built by the app (not from_env) are held to the same rule.
            raise AktoConfigError.combine(unknown_name_errors(os.environ))
        for name, suggestion in unknown:
            _warn_once(unknown_name_message(name, suggestion))
        self.redactor = Redactor(self.settings.redact_patterns)
        self.rules = Rules.from_settings(self.settings)
        self.limits = windows.Limits.from_settings(self.settings)
        self.client = client or GuardrailClient(self.settings, redactor=self.redactor)
        if tracer_provider is None and not isinstance(trace.get_tracer_provider(), TracerProvider):
            unexported = spans_not_exported(os.environ)
            if unexported:
                _warn_once(unexported)
        self.tracer_provider, self.processor = _attach(tracer_provider, processor, self.settings)
        self.tracer = self.tracer_provider.get_tracer(
            "akto_otel", __version__, schema_url=semconv.SCHEMA_URL
        )
        self.metrics = metrics_for(meter_provider)
        self._unjudged = UnjudgedRecorder(self.metrics)
        self._probe = StartupProbe(self.client, self.settings)
        self._server_attributes = _server_attributes(self.settings.ingestion_url)
        if self.metrics.record_export not in self.processor.stats.listeners:
            # A processor shared by several guards reports to each metrics set once.
            self.processor.stats.listeners.append(self.metrics.record_export)
            self.processor.stats.duration_listeners.append(self.metrics.record_export_duration)
            self.metrics.watch_queue(lambda: self.processor.queue_size)
        self._default_scope = _Scope(self, "", None)

    # ------------------------------------------------------------------ public API

    def record_unjudged(
        self,
        hook: str,
        tool: str,
        fault: str,
        span: Span | None = None,
        *,
        session_id: str = "",
    ) -> None:
        """Tell, count and mark one call of ``hook`` allowed without a verdict.

        ``tool`` names the tool (empty for prompts and answers), ``fault`` why no
        verdict came (an error kind, ``akto_fail_open``, ``internal_error``). A
        WARNING (the first per session and fault at once, then rate-limited), one on
        ``akto.guardrail.unjudged`` and ``akto.guardrail.unjudged_call=true`` on ``span``.
        Never raises.
        """
        self._unjudged.record(hook, tool, fault, span, session_id=session_id)

    def hooks(self, client_ip: str = "") -> dict[str, list[HookMatcher]]:
        """A ``hooks`` dict for ``ClaudeAgentOptions``: all ten events.

        Only hooks: the CLI's environment is the caller's to clean (see
        :func:`akto_otel.redaction.agent_env_overrides`); :meth:`instrument` does it.
        """
        scope = self._default_scope if not client_ip else _Scope(self, client_ip, None)
        return self._matchers(scope)

    def instrument(self, options: ClaudeAgentOptions) -> ClaudeAgentOptions:
        """A copy of ``options`` with our matchers first and the user's kept.

        The copy's ``env`` blanks ``AKTO_API_TOKEN`` / ``AKTO_TOKEN`` and strips
        credentials from ``AKTO_DATA_INGESTION_URL`` for the CLI (unless ``options.env``
        sets them). Applying it to its own result adds nothing. A plain ``query()``
        loop over these options receives each answer before Stop judges it: use
        :meth:`query` to have answers held.
        """
        return self._instrument(options, self._default_scope)

    @asynccontextmanager
    async def session(
        self, options: ClaudeAgentOptions, *, client_ip: str = ""
    ) -> AsyncIterator[ClaudeAgentOptions]:
        """Yield instrumented options whose hooks nest under one ``invoke_agent`` span.

        The span is current inside the block, so the SDK passes it to the CLI as
        TRACEPARENT and the CLI's own spans (when its telemetry is on) join the
        trace. On exit every span the session left open is closed. The options'
        ``env`` hides Akto's secrets from the CLI as :meth:`instrument` does.
        """
        async with self._guarded_session(options, client_ip=client_ip) as session:
            yield session.options

    async def query(
        self,
        prompt: Any,
        options: ClaudeAgentOptions | None = None,
        *,
        client_ip: str = "",
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """``claude_agent_sdk.query`` in a guarded session, its answers held until judged.

        Each assistant text reaches the caller only after Stop allowed it; a denied
        one is dropped; when the regeneration bound is reached the final
        ``ResultMessage`` has ``is_error=True``, ``subtype="error_guardrail"`` and the
        block reason as ``result`` (never the denied text), as after a blocked
        prompt. ``AKTO_HOLD_ANSWERS=false`` passes texts through unheld.
        ``kwargs`` go to the SDK's ``query`` (e.g. ``transport``).
        """
        from claude_agent_sdk import ClaudeAgentOptions

        sdk_query = _sdk_query()
        async with self._guarded_session(
            options or ClaudeAgentOptions(), client_ip=client_ip
        ) as session:
            given = kwargs.pop("transport", None)
            watch = self.armed_transport(given) if given is not None else None
            stream = sdk_query(prompt=prompt, options=session.options, transport=watch, **kwargs)
            try:
                async for message in self.held_answers(stream, session):
                    yield message
            except Exception as exc:
                not_armed = armed.not_armed_error(watch)
                if not_armed is not None:
                    raise not_armed from exc
                raise

    def armed_transport(self, transport: Transport) -> armed.ArmingWatch:
        """``transport`` behind an :class:`akto_otel.armed.ArmingWatch` that reads the
        CLI's initialize reply: a CLI that cannot arm the guard fails a fail-closed
        session's connect (:func:`akto_otel.armed.not_armed_error` turns that into
        :class:`AktoNotArmedError`) and is a WARNING plus ``akto.guardrail.unarmed`` in
        fail-open. :meth:`query` and the zero-code ``query`` wrap a ``transport=`` they
        are given; with the SDK's own transport, its connect check refuses a CLI that
        cannot honour the fail-closed "block" matchers (``CLIConnectionError``).
        """
        inner = transport
        fail_closed = self.rules.fail_closed

        def refuse(fault: str) -> str | None:
            message = armed.arming_message(fault, fail_closed=fail_closed)
            _quietly(self.metrics.record_unarmed, fault)
            if fail_closed:
                _log.error("%s", message)
                return message
            _log.warning("%s", message)
            return None

        return armed.ArmingWatch(inner, refuse)

    def held_answers(
        self, stream: AsyncIterator[Any], session: GuardedSession
    ) -> AsyncIterator[Any]:
        """``stream`` (the SDK's messages) through this guard's held-answer path for
        ``session``: its hold setting, judge and fail mode."""
        return hold_answers(
            stream,
            session.answers,
            hold=self.settings.hold_answers,
            judge=self.answer_judge(session),
            fail_open=self.settings.fail_mode == "open",
            on_unjudged=self.unjudged_reporter(session),
        )

    def unjudged_reporter(self, session: GuardedSession) -> Callable[[str, str], None]:
        """Records content the held-answer path delivered without a verdict (fail-open)."""

        def report(where: str, error: str) -> None:
            # An answer (Stop's content) the app received without a verdict.
            self.record_unjudged("Stop", "", error, session.span)

        return report

    def answer_judge(self, session: GuardedSession) -> Judge | None:
        """Judges a held text no Stop hook saw (one the model wrote before a tool call;
        Stop receives only the turn's last text) with the response guardrail, under an
        ``akto.held_answer`` span. None in observe mode (``AKTO_SYNC_MODE=false``).
        """
        if not self.settings.sync_mode:
            return None
        scope = session._scope

        async def judge(text: str) -> str | None:
            span = scope.tracing.start_child(
                session.span, semconv.SPAN_HELD_ANSWER, hook="Stop", attributes={}
            )
            try:
                states = list(scope.tracing)
                prompt = states[-1].last_prompt if states else ""
                plan = windows.plan_turn(scope.wire, prompt, text, "Stop", self.limits)
                verdict = await self._judge(span, "Stop", plan, request=False, response=True)
                # A masked answer is not delivered either: Stop would regenerate it.
                if stance("Stop", verdict, self.rules) == "allow":
                    return None
                return verdict.reason or contract.DEFAULT_BLOCK_REASON
            except Exception as exc:
                _log.error("akto_otel could not judge a held answer: %s", type(exc).__name__)
                if self.settings.fail_mode == "open":
                    self.record_unjudged("Stop", "", "internal_error", span)
                    return None
                return "Akto guardrails could not check this (internal error)"
            finally:
                try:
                    span.end()
                except Exception:
                    _log.debug("could not end a held-answer span", exc_info=True)

        return judge

    @asynccontextmanager
    async def _guarded_session(
        self, options: ClaudeAgentOptions, *, client_ip: str = ""
    ) -> AsyncIterator[GuardedSession]:
        session = self.open_session(options, client_ip=client_ip)
        failed = True
        try:
            with trace.use_span(session.span, end_on_exit=False, record_exception=True):
                yield session
            failed = False
        finally:
            session.close(error="session_aborted" if failed else None)

    def open_session(self, options: ClaudeAgentOptions, *, client_ip: str = "") -> GuardedSession:
        """The scope of :meth:`session` as a handle, for lifetimes that are not a block.

        The caller makes ``handle.span`` current while the CLI starts and calls
        ``handle.close()`` when the session ends. To hold answers on a stream of
        its own, the caller wraps it: ``akto_otel.answers.hold_answers(stream,
        handle.answers, judge=guard.answer_judge(handle))``.
        """
        span = start_agent_span(
            self.tracer, self.settings.agent_name, agent_id=self.settings.agent_id
        )
        _quietly(self._probe.start)  # a session start: ask Akto now, off the hook path
        scope = _Scope(self, client_ip, span)
        return GuardedSession(span, scope, self._instrument(options, scope))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver every record whose span has ended."""
        return self.processor.force_flush(timeout_millis)

    async def aclose(self) -> None:
        """End open spans, flush records and close connections."""
        self._default_scope.tracing.end_all(error="shutdown")
        _quietly(self._unjudged.flush)
        await self.client.aclose()
        self.processor.force_flush()

    def shutdown(self) -> None:
        self._default_scope.tracing.end_all(error="shutdown")
        _quietly(self._unjudged.flush)
        self.processor.shutdown()

    # ------------------------------------------------------------------ wiring

    def _instrument(self, options: ClaudeAgentOptions, scope: _Scope) -> ClaudeAgentOptions:
        from claude_agent_sdk import ClaudeAgentOptions

        if not isinstance(options, ClaudeAgentOptions):
            hint = " (ClaudeAgentOptions(**d) builds one)" if isinstance(options, dict) else ""
            raise TypeError(
                "expected claude_agent_sdk.ClaudeAgentOptions, got "
                f"{type(options).__name__}: pass ClaudeAgentOptions(...){hint}"
            )
        existing: dict[str, list[Any]] = {str(k): list(v) for k, v in (options.hooks or {}).items()}
        merged: dict[str, list[Any]] = {}
        ours = self._matchers(scope)
        for event in dict.fromkeys([*ours, *existing]):
            theirs = [m for m in existing.get(event, []) if not _is_ours(m)]
            merged[event] = [*ours.get(event, []), *theirs]
        # The CLI inherits os.environ: its tools (Bash `env`) must not see Akto's secrets.
        env = dict(options.env or {})
        env.update(agent_env_overrides(os.environ, env))
        instrumented = dataclasses.replace(options, hooks=merged, env=env)  # type: ignore[arg-type]
        _tag(instrumented, _OPTIONS_GUARD, self)
        return instrumented

    def _matchers(self, scope: _Scope) -> dict[str, list[HookMatcher]]:
        from claude_agent_sdk import HookMatcher

        callbacks = self._callbacks(scope)
        # Our callbacks take any input (they validate it themselves), wider than the
        # SDK's per-event TypedDicts.
        return {
            event: [
                HookMatcher(
                    hooks=[callbacks[event]],  # type: ignore[list-item]
                    on_failure=armed.on_failure_for(event, self.rules),
                )
            ]
            for event in HOOK_EVENTS
        }

    def _callbacks(self, scope: _Scope) -> dict[str, HookCallback]:
        handlers: dict[str, _Handler] = {
            "UserPromptSubmit": self._user_prompt_submit,
            "PreToolUse": self._pre_tool_use,
            "PostToolUse": self._post_tool_use,
            "PostToolUseFailure": self._post_tool_use_failure,
            "Stop": self._stop,
            "SubagentStart": self._subagent_start,
            "SubagentStop": self._subagent_stop,
            "PreCompact": self._observer("PreCompact"),
            "Notification": self._observer("Notification"),
            "PermissionRequest": self._observer("PermissionRequest"),
        }
        return {
            event: _noting(event, scope, self._safe(event, scope, handler))
            for event, handler in handlers.items()
        }

    def _safe(self, event: str, scope: _Scope, handler: _Handler) -> HookCallback:
        async def callback(input_data: Any, tool_use_id: str | None, context: Any) -> HookOutput:
            start = time.perf_counter()
            call = _Call()
            _quietly(self._probe.start)
            try:
                data = dict(input_data) if isinstance(input_data, Mapping) else {}
                if tool_use_id and not data.get("tool_use_id"):
                    data["tool_use_id"] = tool_use_id
                return await handler(scope, data, call)
            except Exception as exc:  # never raise into the SDK
                _log.error("akto_otel %s hook failed: %s", event, type(exc).__name__)
                _quietly(self.metrics.record_hook_error, event)
                _quietly(self._record_internal_error, scope, event, input_data, exc)
                if call.output is not None:
                    # Decided before the failure (in recording): the decision stands.
                    return call.output
                output = self._fail_output(event, scope, input_data, call)
                if _judges(event, self.settings) and not self.rules.fail_closed:
                    _quietly(self._record_failed_hook, scope, event, input_data)
                if event == "PreToolUse" and _denies_call(output):
                    # A deny is a deny whichever path made it: watched for a breach too.
                    _quietly(
                        scope.denied.add,
                        _text(_as_mapping(input_data), "session_id"),
                        tool_use_id or _text(_as_mapping(input_data), "tool_use_id"),
                    )
                return output
            finally:
                _quietly(self.metrics.record_hook_duration, event, time.perf_counter() - start)

        setattr(callback, _MARK, True)
        callback.__name__ = f"akto_{event}"
        return callback

    def _record_internal_error(
        self, scope: _Scope, event: str, input_data: Any, exc: Exception
    ) -> None:
        data = _as_mapping(input_data)
        state = scope.tracing.get(_text(data, "session_id"))
        if state is not None and state.span.is_recording():
            state.span.add_event(
                semconv.EVENT_HOOK_ERROR,
                {semconv.AKTO_HOOK: event, semconv.ERROR_TYPE: type(exc).__name__},
            )

    def _record_failed_hook(self, scope: _Scope, event: str, input_data: Any) -> None:
        """A judging hook that failed before its verdict and failed open: unjudged."""
        data = _as_mapping(input_data)
        session_id = _text(data, "session_id")
        state = scope.tracing.get(session_id)
        span = state.span if state is not None else None
        tool = _text(data, "tool_name") if event in ("PreToolUse", "PostToolUse") else ""
        self.record_unjudged(event, tool, "internal_error", span, session_id=session_id)

    def _fail_output(self, event: str, scope: _Scope, input_data: Any, call: _Call) -> HookOutput:
        """The answer of a hook that failed before it had a decision."""
        if event == "PostToolUseFailure" and _judges("PostToolUse", self.settings):
            # A failing tool's output is judged as PostToolUse judges an output.
            return decide(Case("PostToolUse", None, self.rules, shape="unknown")).output
        outcome = decide(Case(event, None, self.rules))
        if event in ("Stop", "SubagentStop"):
            data = _as_mapping(input_data)
            _quietly(
                self._settle_answer,
                call,
                scope.tracing.get(_text(data, "session_id")),
                event,
                _text(data, "agent_id"),
                _answer_of(data),
                outcome,
            )
        return outcome.output

    def _capture(self, span: Span, key: str, value: Any) -> None:
        _quietly(capture_content, span, key, value, self.settings, self.redactor)

    # ------------------------------------------------------------------ guard calls

    async def _judge(
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
        """Judge ``plan`` (whole, or window by window) under a ``run_guardrail akto`` span.

        The verdict is recorded after it is known; no recording step can change it.
        A verdict that lets the call through unjudged (fail-open) is told and counted.
        """
        child = None
        if self.settings.guardrail_spans:
            child = _quietly(self._start_guardrail_span, span, hook, plan)
        ingest = ingest and not plan.windowed

        async def check(record: dict[str, Any]) -> Verdict:
            return await self.client.check(
                record, request=request, response=response, ingest=ingest
            )

        verdict = await windows.judge(check, plan, self.limits)
        if child is not None:
            _quietly(self._record_guardrail_span, child, hook, verdict, target_id)
        else:
            _quietly(self._record_guardrail_call, span, hook, plan, verdict, target_id)
        _quietly(record_verdict, span, hook, verdict, self.settings)
        _quietly(self.metrics.record_decision, hook, verdict)
        fault = unjudged_fault(verdict)
        if fault is not None:
            self.record_unjudged(hook, tool, fault, span, session_id=session_id)
        return verdict

    def _start_guardrail_span(self, span: Span, hook: str, plan: windows.Plan) -> Span:
        attributes: dict[str, Any] = {
            semconv.AKTO_HOOK: hook,
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_RUN_GUARDRAIL,
            semconv.HTTP_REQUEST_METHOD: "POST",
            **self._server_attributes,
        }
        attributes.update(_plan_attributes(plan))
        return start_span(
            self.tracer,
            semconv.SPAN_RUN_GUARDRAIL,
            context=trace.set_span_in_context(span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    def _record_guardrail_call(
        self, span: Span, hook: str, plan: windows.Plan, verdict: Verdict, target_id: str
    ) -> None:
        """With ``guardrail_spans`` off: what the ``run_guardrail`` span would carry."""
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            semconv.AKTO_GUARDRAIL_DURATION_MS: round(verdict.latency_s * 1000, 3),
            **_plan_attributes(plan),
        }
        if self.settings.semconv_security:
            # gen_ai.provider.name names Akto only on Akto's own span, not the hook's.
            drafted = security_attributes(hook, verdict, target_id)
            drafted.pop(semconv.GEN_AI_PROVIDER_NAME, None)
            attributes.update(drafted)
        span.set_attributes(attributes)

    def _record_guardrail_span(
        self, child: Span, hook: str, verdict: Verdict, target_id: str
    ) -> None:
        try:
            if verdict.error:
                mark_error(child, verdict.error)
            child.set_attribute(semconv.AKTO_GUARDRAIL_DECISION, verdict.decision)
            if self.settings.semconv_security:
                child.set_attributes(security_attributes(hook, verdict, target_id))
        finally:
            end_span(child)

    def _wire(self, scope: _Scope, data: Mapping[str, Any]) -> WireContext:
        if not self.settings.session_headers:
            return scope.wire
        return scope.wire.with_session(_text(data, "session_id"), _text(data, "prompt_id"))

    def _attach(
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
            _quietly(span.set_attribute, semconv.AKTO_RECORD_TRUNCATED, True)
            _quietly(self.metrics.record_truncated, kind)
        _quietly(
            self.processor.attach,
            span,
            record,
            kind=kind,
            guardrails=guardrails,
            response_guardrails=response_guardrails,
        )

    # ------------------------------------------------------------------ handlers

    async def _user_prompt_submit(
        self, scope: _Scope, data: Mapping[str, Any], call: _Call
    ) -> HookOutput:
        session_id = _text(data, "session_id")
        prompt = _text(data, "prompt")
        state = scope.tracing.session(session_id)
        state.prompt_id = _text(data, "prompt_id")
        state.regenerations = 0
        if prompt.strip():
            state.last_prompt = prompt.strip()
        span = scope.tracing.start_child(
            state.span,
            semconv.SPAN_USER_PROMPT,
            hook="UserPromptSubmit",
            attributes=_conversation(session_id, state.prompt_id),
        )
        try:
            if prompt:
                self._capture(
                    span,
                    semconv.GEN_AI_INPUT_MESSAGES,
                    [{"role": "user", "parts": [{"type": "text", "content": prompt}]}],
                )
            if not prompt.strip() or not self.settings.sync_mode:
                return {}
            wire = self._wire(scope, data)
            plan = windows.plan_prompt(wire, prompt, self.limits)
            verdict = await self._judge(span, "UserPromptSubmit", plan, session_id=session_id)
            outcome = decide(Case("UserPromptSubmit", verdict, self.rules))
            call.settle(outcome)
            if outcome.blocked:
                self._attach(
                    span,
                    contract.prompt_record(wire, prompt, blocked_reason=outcome.reason),
                    "prompt.blocked",
                    truncated=plan.windowed,
                )
            return outcome.output
        finally:
            end_span(span)

    async def _pre_tool_use(
        self, scope: _Scope, data: Mapping[str, Any], call: _Call
    ) -> HookOutput:
        session_id = _text(data, "session_id")
        tool_name = _text(data, "tool_name")
        tool_use_id = _text(data, "tool_use_id")
        raw_input = data.get("tool_input")
        tool_input: Any = {} if raw_input is None else raw_input
        state = scope.tracing.session(session_id)
        key, span = self._tool_span(scope, state, data, tool_name, tool_use_id)
        self._capture(span, semconv.GEN_AI_TOOL_CALL_ARGUMENTS, tool_input)
        if not self.settings.sync_mode:
            return {}
        wire = self._wire(scope, data)
        plan = windows.plan_tool_call(wire, tool_name, tool_input, self.limits)
        # The session-start probe warns before the first tool call runs: waited for
        # alongside the verdict, so the hook takes at most max(verdict, bound).
        probe = self._probe.pending()
        deadline = asyncio.get_running_loop().time() + _PROBE_WAIT_S if probe else 0.0
        verdict = await self._judge(
            span,
            "PreToolUse",
            plan,
            target_id=tool_use_id,
            tool=tool_name,
            session_id=session_id,
        )
        await self._probe.wait(probe, deadline)
        masked = None
        if verdict.decision == "modify" and not plan.windowed:
            masked = masked_tool_input(tool_name, tool_input, verdict.modified_payload)
        outcome = decide(Case("PreToolUse", verdict, self.rules, masked=masked))
        call.settle(outcome)
        if outcome.action == "deny":
            if verdict.decision == "modify":
                _quietly(span.set_attribute, semconv.AKTO_GUARDRAIL_MASK_APPLIED, False)
            self._attach(
                span,
                contract.tool_request_record(
                    wire, tool_name, tool_input, blocked_reason=outcome.reason
                ),
                "tool.blocked",
                truncated=plan.windowed,
            )
            _quietly(self._end_tool, state, key, error="blocked")
            _quietly(scope.denied.add, session_id, tool_use_id)
        return outcome.output

    def _tool_span(
        self,
        scope: _Scope,
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
        agent_id = _text(data, "agent_id")
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

    @staticmethod
    def _end_tool(state: SessionState, key: str, *, error: str | None) -> None:
        span = state.tools.pop(key, None)
        if span is None:
            return
        if error:
            mark_error(span, error)
        end_span(span)

    async def _post_tool_use(
        self, scope: _Scope, data: Mapping[str, Any], call: _Call
    ) -> HookOutput:
        session_id = _text(data, "session_id")
        tool_name = _text(data, "tool_name")
        tool_use_id = _text(data, "tool_use_id")
        raw_input = data.get("tool_input")
        tool_input: Any = {} if raw_input is None else raw_input
        tool_response: Any = data.get("tool_response")
        state = scope.tracing.session(session_id)
        key, span = self._tool_span(scope, state, data, tool_name, tool_use_id)
        try:
            breach = self._breach(scope, state, span, "PostToolUse", tool_name, tool_use_id)
            if breach is not None:
                return call.settle(breach)
            duration = data.get("duration_ms")
            if isinstance(duration, (int, float)) and not isinstance(duration, bool):
                _quietly(span.set_attribute, semconv.AKTO_TOOL_DURATION_MS, duration)
            self._capture(span, semconv.GEN_AI_TOOL_CALL_RESULT, tool_response)
            if tool_response is None:
                return {}
            shape = output_shape(tool_name, tool_response)
            if self.settings.sync_mode and _carries_denied_answer(state, tool_response):
                # A subagent answer denied at the regeneration bound: not for the parent.
                denied = Verdict(
                    decision="deny", allowed=False, reason="Denied subagent answer withheld"
                )
                _quietly(record_verdict, span, "PostToolUse", denied, self.settings)
                # The Agent tool's own output shape takes the block reason, so the parent
                # goes on without the answer; any other shape ends the turn.
                replaced = withheld_agent_output(scope.answers, tool_name, tool_response)
                if replaced is not None:
                    return call.settle(Outcome("replace_output", replaced, denied.reason))
                return call.settle(decide(Case("PostToolUse", denied, self.rules, shape=shape)))
            wire = self._wire(scope, data)
            if self.settings.sync_mode and self.settings.tool_response_guardrails:
                plan = windows.plan_tool_result(
                    wire, tool_name, tool_input, tool_response, self.limits
                )
                verdict = await self._judge(
                    span,
                    "PostToolUse",
                    plan,
                    request=False,
                    response=True,
                    ingest=True,
                    target_id=tool_use_id,
                    tool=tool_name,
                    session_id=session_id,
                )
                joined = _joined_blocks(tool_response) if verdict.allowed else None
                if joined is not None and not verdict.fail_open:
                    # The model reads an MCP output's text blocks back to back: a pattern
                    # split across them is judged whole too (once the blocks passed; an
                    # output already unjudged is not counted twice).
                    whole = await self._judge(
                        span,
                        "PostToolUse",
                        windows.plan_tool_result(wire, tool_name, tool_input, joined, self.limits),
                        request=False,
                        response=True,
                        target_id=tool_use_id,
                        tool=tool_name,
                        session_id=session_id,
                    )
                    if whole.decision != "allow":
                        verdict = windows.strictest([verdict, whole])
                masked = None
                if verdict.decision == "modify" and not plan.windowed:
                    masked = masked_tool_output(
                        tool_name, tool_response, shape, verdict.modified_payload
                    )
                outcome = decide(
                    Case("PostToolUse", verdict, self.rules, masked=masked, shape=shape)
                )
                call.settle(outcome)
                if plan.windowed:
                    record = contract.tool_result_record(wire, tool_name, tool_input, tool_response)
                    self._attach(span, record, "tool.result", truncated=True)
                return outcome.output
            record = contract.tool_result_record(wire, tool_name, tool_input, tool_response)
            self._attach(
                span,
                record,
                "tool.result",
                guardrails=not self.settings.sync_mode,
                truncated=not contract.fits_payload(tool_response),
            )
            return {}
        finally:
            _quietly(self._end_tool, state, key, error=None)

    async def _post_tool_use_failure(
        self, scope: _Scope, data: Mapping[str, Any], call: _Call
    ) -> HookOutput:
        state = scope.tracing.session(_text(data, "session_id"))
        tool_use_id = _text(data, "tool_use_id")
        tool_name = _text(data, "tool_name")
        key, span = self._tool_span(scope, state, data, tool_name, tool_use_id)
        breach = self._breach(scope, state, span, "PostToolUseFailure", tool_name, tool_use_id)
        if breach is not None:
            _quietly(self._end_tool, state, key, error="breach")
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
            self._capture(span, semconv.GEN_AI_TOOL_CALL_RESULT, _text(data, "error"))
        try:
            return await self._judge_failure_output(scope, state, span, data, call)
        finally:
            _quietly(
                self._end_tool,
                state,
                key,
                error="tool_interrupted" if interrupted else "tool_error",
            )

    async def _judge_failure_output(
        self,
        scope: _Scope,
        state: SessionState,
        span: Span,
        data: Mapping[str, Any],
        call: _Call,
    ) -> HookOutput:
        """A failing tool's output (Bash exiting non-zero, for one)
        reaches the model as its error text: judged as the tool's output, like
        PostToolUse. The CLI cannot replace it, so a denial ends the turn."""
        error = data.get("error")
        if not self.settings.sync_mode or not self.settings.tool_response_guardrails:
            return {}
        if error is None or (isinstance(error, str) and not error.strip()):
            return {}
        tool_name = _text(data, "tool_name")
        raw_input = data.get("tool_input")
        tool_input: Any = {} if raw_input is None else raw_input
        plan = windows.plan_tool_result(
            self._wire(scope, data), tool_name, tool_input, error, self.limits
        )
        verdict = await self._judge(
            span,
            "PostToolUse",
            plan,
            request=False,
            response=True,
            ingest=True,
            target_id=_text(data, "tool_use_id"),
            tool=tool_name,
            session_id=state.session_id,
        )
        # The error text cannot be replaced: a mask is a deny too (shape "unknown").
        return call.settle(decide(Case("PostToolUse", verdict, self.rules, shape="unknown")))

    def _breach(
        self,
        scope: _Scope,
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
            self.settings.fail_mode,
        )
        attributes = {
            semconv.AKTO_HOOK: hook,
            semconv.GEN_AI_TOOL_NAME: tool_name,
            semconv.GEN_AI_TOOL_CALL_ID: tool_use_id,
        }
        for target in (span, state.span):
            if target.is_recording():
                _quietly(target.add_event, semconv.EVENT_GUARDRAIL_BREACH, attributes)
        _quietly(mark_error, span, "guardrail_breach")
        _quietly(self.metrics.record_breach, hook)
        return armed.breach_outcome(self.rules, tool_name, tool_use_id)

    async def _stop(self, scope: _Scope, data: Mapping[str, Any], call: _Call) -> HookOutput:
        session_id = _text(data, "session_id")
        state = scope.tracing.session(session_id)
        # The whole turn the app assembles, not only its last text block.
        response_text = _answer_of(data)
        span = scope.tracing.start_child(
            state.span, semconv.SPAN_STOP, hook="Stop", attributes=_conversation(session_id, "")
        )
        final = True
        try:
            _quietly(
                span.set_attribute,
                semconv.AKTO_STOP_HOOK_ACTIVE,
                data.get("stop_hook_active") is True,
            )
            if response_text:
                self._capture(
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
            outcome = await self._judge_answer(
                call,
                span,
                state,
                "Stop",
                "",
                self._wire(scope, data),
                response_text,
                state.regenerations,
            )
            final = outcome.action != "regenerate"
            return outcome.output
        finally:
            end_span(span)
            if final:
                _quietly(scope.tracing.end_turn, session_id)

    async def _judge_answer(
        self,
        call: _Call,
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
        if not self.settings.sync_mode:
            record = contract.turn_record(wire, prompt, answer, hook=hook)
            self._attach(span, record, kind, response_guardrails=True)
            return Outcome("allow", {})
        plan = windows.plan_turn(wire, prompt, answer, hook, self.limits)
        verdict = await self._judge(
            span, hook, plan, request=False, response=True, session_id=state.session_id
        )
        outcome = decide(Case(hook, verdict, self.rules, regenerations=regenerations))
        self._settle_answer(call, state, hook, agent_id, answer, outcome)
        if outcome.blocked:
            _quietly(span.set_attribute, semconv.AKTO_STOP_REGENERATIONS, regenerations)
            if outcome.action == "give_up":
                _quietly(span.set_attribute, semconv.AKTO_STOP_GAVE_UP, True)
                _quietly(mark_error, span, "regeneration_limit")
            blocked = contract.turn_record(
                wire, prompt, answer, hook=hook, blocked_reason=outcome.reason
            )
            self._attach(span, blocked, f"{kind}.blocked", truncated=plan.windowed)
        else:
            record = contract.turn_record(wire, prompt, answer, hook=hook)
            self._attach(span, record, kind, truncated=plan.windowed)
        return outcome

    def _settle_answer(
        self,
        call: _Call,
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

    async def _subagent_start(
        self, scope: _Scope, data: Mapping[str, Any], call: _Call
    ) -> HookOutput:
        state = scope.tracing.session(_text(data, "session_id"))
        scope.tracing.start_subagent(state, _text(data, "agent_id"), _text(data, "agent_type"))
        return {}

    async def _subagent_stop(
        self, scope: _Scope, data: Mapping[str, Any], call: _Call
    ) -> HookOutput:
        session_id = _text(data, "session_id")
        agent_id = _text(data, "agent_id")
        state = scope.tracing.session(session_id)
        agent_span = scope.tracing.start_subagent(state, agent_id, _text(data, "agent_type"))
        response_text = _answer_of(data)
        span = scope.tracing.start_child(
            agent_span,
            semconv.SPAN_SUBAGENT_STOP,
            hook="SubagentStop",
            attributes=_conversation(session_id, ""),
        )
        finished = True
        try:
            if not response_text:
                return {}
            outcome = await self._judge_answer(
                call,
                span,
                state,
                "SubagentStop",
                agent_id,
                self._wire(scope, data),
                response_text,
                state.subagent_regenerations.get(agent_id, 0),
            )
            finished = outcome.action != "regenerate"
            if outcome.action == "give_up":
                _quietly(_deny_last_block, state, data, response_text)
            return outcome.output
        finally:
            end_span(span)
            if finished:
                state.subagent_regenerations.pop(agent_id, None)
                ended = state.agents.pop(agent_id, None)
                if ended is not None:
                    end_span(ended)

    def _observer(self, event: str) -> _Handler:
        async def observe(scope: _Scope, data: Mapping[str, Any], call: _Call) -> HookOutput:
            return await self._observe_event(event, scope, data)

        return observe

    async def _observe_event(
        self, event: str, scope: _Scope, data: Mapping[str, Any]
    ) -> HookOutput:
        state = scope.tracing.session(_text(data, "session_id"))
        tool_use_id = _text(data, "tool_use_id")
        parent = state.tools.get(tool_use_id) if tool_use_id else None
        if parent is None:
            parent = scope.tracing.parent_for(state, _text(data, "agent_id"))
        attributes: dict[str, Any] = {}
        if event == "PermissionRequest":
            attributes[semconv.GEN_AI_TOOL_NAME] = _text(data, "tool_name")
        elif event == "Notification":
            attributes[semconv.AKTO_NOTIFICATION_TYPE] = _text(data, "notification_type")
        elif event == "PreCompact":
            attributes[semconv.AKTO_COMPACT_TRIGGER] = _text(data, "trigger")
        name = {
            "PermissionRequest": semconv.SPAN_PERMISSION_REQUEST,
            "Notification": semconv.SPAN_NOTIFICATION,
            "PreCompact": semconv.SPAN_PRE_COMPACT,
        }.get(event, semconv.SPAN_HOOK_EVENT)
        end_span(scope.tracing.start_child(parent, name, hook=event, attributes=attributes))
        return {}


class _Call:
    """One hook call: the decision, once made, is what the hook answers."""

    __slots__ = ("output",)

    def __init__(self) -> None:
        self.output: HookOutput | None = None

    def settle(self, outcome: Outcome) -> HookOutput:
        self.output = outcome.output
        return outcome.output


_Handler = Callable[[_Scope, Mapping[str, Any], _Call], Awaitable[HookOutput]]
_R = TypeVar("_R")


def _denies_call(output: Any) -> bool:
    """Whether a PreToolUse output denies the call."""
    specific = output.get("hookSpecificOutput") if isinstance(output, Mapping) else None
    return isinstance(specific, Mapping) and specific.get("permissionDecision") == "deny"


def _quietly(fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R | None:
    """Run a recording step; its failure is logged and never changes a decision."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        _log.warning(
            "akto_otel could not record (%s): %s", getattr(fn, "__name__", fn), type(exc).__name__
        )
        return None


def _plan_attributes(plan: windows.Plan) -> dict[str, Any]:
    """How a judgement was cut: window count and size, for content judged in windows."""
    if not (plan.windowed or plan.too_large):
        return {}
    return {
        semconv.AKTO_GUARDRAIL_WINDOWS: len(plan.records),
        semconv.AKTO_GUARDRAIL_CONTENT_CHARS: plan.size,
    }


def _deny_last_block(state: SessionState, data: Mapping[str, Any], answer: str) -> None:
    """The parent gets only a subagent's last text block: a denied answer's last block
    (long enough not to match by chance) is withheld from it as well."""
    last = _text(data, "last_assistant_message").strip()
    if last and last != answer and len(last) >= 8:
        state.denied_answers.add(last)


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


def _conversation(session_id: str, prompt_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if session_id:
        attributes[semconv.GEN_AI_CONVERSATION_ID] = session_id
    if prompt_id:
        attributes[semconv.AKTO_PROMPT_ID] = prompt_id
    return attributes


def _server_attributes(url: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    if not url:
        return {}
    parts = urlsplit(url)
    attributes: dict[str, Any] = {semconv.SERVER_ADDRESS: parts.hostname or ""}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    attributes[semconv.SERVER_PORT] = port
    return attributes


def _judges(event: str, settings: Settings) -> bool:
    """Whether ``event`` asks Akto for a verdict before the call proceeds (pure)."""
    if not settings.sync_mode or event not in JUDGING_HOOKS:
        return False
    return event != "PostToolUse" or settings.tool_response_guardrails


def setting_warnings(settings: Settings) -> list[str]:
    """What is risky in ``settings``: each entry is logged once per process."""
    warnings: list[str] = []
    if not settings.ingestion_url:
        warnings.append(
            "AKTO_DATA_INGESTION_URL is not set: no guardrail call is made; every judging "
            f"hook applies AKTO_FAIL_MODE={settings.fail_mode}"
            + (" (everything passes unjudged)" if settings.fail_mode == "open" else "")
        )
    if not settings.sync_mode and settings.fail_mode == "closed":
        warnings.append(
            "AKTO_SYNC_MODE=false with AKTO_FAIL_MODE=closed: observe mode never blocks, "
            "so the closed fail mode has no effect"
        )
    return warnings


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        _log.warning("akto_otel: %s", message)


def _noting(event: str, scope: _Scope, callback: HookCallback) -> HookCallback:
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

    setattr(noted, _MARK, True)
    noted.__name__ = callback.__name__
    return noted


#: Where :func:`_noting` hands a Stop handler the whole answer it assembled.
_WHOLE_ANSWER = "_akto_whole_answer"


def _answer_of(data: Mapping[str, Any]) -> str:
    """The answer a Stop or SubagentStop handler judges (see :func:`_noting`)."""
    whole = data.get(_WHOLE_ANSWER)
    return whole if isinstance(whole, str) else hook_answer(data)


def _tag(options: Any, name: str, value: Any) -> None:
    """Mark ``options`` and our matchers in it; a copy the app makes with
    ``dataclasses.replace`` keeps the matchers, and so the mark."""
    setattr(options, name, value)
    for matchers in (getattr(options, "hooks", None) or {}).values():
        for matcher in matchers:
            if _is_ours(matcher):
                setattr(matcher, name, value)


def _tagged(options: Any, name: str) -> Any:
    found = getattr(options, name, None)
    if found is not None:
        return found
    for matchers in (getattr(options, "hooks", None) or {}).values():
        for matcher in matchers:
            found = getattr(matcher, name, None)
            if found is not None:
                return found
    return None


def instrumented_by(options: Any) -> AktoGuardrails | None:
    """The guard whose :meth:`~AktoGuardrails.instrument` or session made ``options``
    (or the options they were copied from)."""
    guard = _tagged(options, _OPTIONS_GUARD)
    return guard if isinstance(guard, AktoGuardrails) else None


def live_session_of(options: Any) -> GuardedSession | None:
    """The open :class:`GuardedSession` whose options ``options`` are (or were copied
    from), else None."""
    session = _tagged(options, _OPTIONS_SESSION)
    if isinstance(session, GuardedSession) and not session.closed:
        return session
    return None


def _sdk_query() -> Callable[..., AsyncIterator[Any]]:
    """The SDK's own ``query``, also when the zero-code instrumentor has wrapped it."""
    import claude_agent_sdk

    found: Callable[..., AsyncIterator[Any]] = claude_agent_sdk.query
    return getattr(found, ORIGINAL_ATTR, found)


def _is_ours(matcher: Any) -> bool:
    return any(getattr(cb, _MARK, False) for cb in getattr(matcher, "hooks", []) or [])


def _attach(
    provider: trace.TracerProvider | None,
    processor: AktoSpanProcessor | None,
    settings: Settings,
) -> tuple[TracerProvider, AktoSpanProcessor]:
    """Pick the provider our spans go to and the Akto processor on it (see ``processor_for``)."""
    chosen = provider if provider is not None else trace.get_tracer_provider()
    if not isinstance(chosen, TracerProvider):
        if provider is not None:
            _log.warning("tracer_provider is not an SDK TracerProvider; using a private one")
        from opentelemetry.sdk.resources import Resource

        chosen = TracerProvider(resource=Resource.create({"service.name": settings.agent_name}))
    return chosen, processor_for(chosen, settings, processor)


def create_hooks(
    client_ip: str = "",
) -> tuple[HookCallback, HookCallback, HookCallback, HookCallback]:
    """Drop-in for Akto's reference connector: the same four callbacks, same env vars.

    Returns ``(akto_user_prompt_submit, akto_stop, akto_pre_tool_use, akto_post_tool_use)``
    bound to ``client_ip`` (``"0.0.0.0"`` when empty).
    """
    guard = _shared_guard()
    scope = _Scope(guard, client_ip, None)
    callbacks = guard._callbacks(scope)
    return (
        callbacks["UserPromptSubmit"],
        callbacks["Stop"],
        callbacks["PreToolUse"],
        callbacks["PostToolUse"],
    )


_SHARED: AktoGuardrails | None = None


def _shared_guard() -> AktoGuardrails:
    """One guard per process for create_hooks, built from the environment on first use.

    Only here are the reference connector's unprefixed names (``MODE``, ``LOG_LEVEL``,
    ...) read; a bad one is a warning and its default stands.
    """
    global _SHARED
    if _SHARED is None:
        overrides, warnings = connector_overrides()
        _SHARED = AktoGuardrails(**overrides)
        for warning in warnings:
            _warn_once(warning)
        import atexit

        atexit.register(_SHARED.shutdown)
    return _SHARED
