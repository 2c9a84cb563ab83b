"""The facade: Akto guardrails plus an OpenTelemetry span tree for Claude Agent SDK hooks.

:class:`AktoGuardrails` holds the public API and wires the SDK to the handlers:
:mod:`~akto_otel.hook_dispatch` runs the handler of each event, one module per hook
family (:mod:`~akto_otel.hook_prompt`, :mod:`~akto_otel.hook_tools`,
:mod:`~akto_otel.hook_answers`, :mod:`~akto_otel.hook_observe`), which share the
guardrail call of :mod:`~akto_otel.verdict`.

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

import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from akto_otel import armed, hook_answers, hook_dispatch, semconv, windows
from akto_otel.answers import AnswerLedger, Judge, hold_answers
from akto_otel.config import (
    Settings,
    connector_overrides,
    unknown_name_errors,
    unknown_name_message,
    unknown_names,
)
from akto_otel.decision import Rules
from akto_otel.errors import AktoConfigError, check_keywords
from akto_otel.guardrails import GuardrailClient
from akto_otel.hook_dispatch import HOOK_EVENTS
from akto_otel.hook_scope import (
    HookCallback,
    HookOutput,
    HookScope,
)
from akto_otel.logs import setup_logging
from akto_otel.metrics import metrics_for
from akto_otel.processor import AktoSpanProcessor, processor_for
from akto_otel.redaction import Redactor, agent_env_overrides
from akto_otel.spans import end_span, mark_error, start_agent_span
from akto_otel.unjudged import StartupProbe, UnjudgedRecorder
from akto_otel.verdict import Verdicts, quietly
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
    "session_current",
    "setting_warnings",
    "spans_not_exported",
]

_log = logging.getLogger("akto_otel.hooks")

_MARK = "_akto_otel_hook"
_SETTING_NAMES = tuple(f.name for f in dataclasses.fields(Settings) if f.init)
_GUARD_KEYWORDS = ("settings", "tracer_provider", "meter_provider", "client", "processor")
#: Set on the options copies we hand out: the guard that instrumented them, and the
#: session they belong to, so the zero-code wrappers keep the app's guard and scope.
_OPTIONS_GUARD = "_akto_otel_guard"
_OPTIONS_SESSION = "_akto_otel_guarded_session"
#: Set by the instrumentor on its wrapped ``query``: the SDK's original.
ORIGINAL_ATTR = "_akto_otel_original"


class GuardedSession:
    """One guarded agent session: its span, its instrumented options, its state."""

    def __init__(
        self,
        span: Span,
        guard: AktoGuardrails,
        scope: HookScope,
        options: ClaudeAgentOptions,
        *,
        owns_span: bool = True,
    ) -> None:
        self.span = span
        #: False with ``AKTO_SPANS=guard``: ``span`` is the app's (or another
        #: instrumentation's), made current by its owner, never ended or marked here.
        self.owns_span = owns_span
        self.options = options
        self.guard = guard
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
        if not self.owns_span:
            return
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
        redactor = Redactor(self.settings.redact_patterns)
        self.rules = Rules.from_settings(self.settings)
        self.limits = windows.Limits.from_settings(self.settings)
        self.client = client or GuardrailClient(self.settings, redactor=redactor)
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
        self.verdicts = Verdicts(
            self.settings,
            self.client,
            self.tracer,
            self.metrics,
            self.processor,
            redactor,
            self._unjudged,
        )
        self._probe = StartupProbe(self.client, self.settings)
        if self.metrics.record_export not in self.processor.stats.listeners:
            # A processor shared by several guards reports to each metrics set once.
            self.processor.stats.listeners.append(self.metrics.record_export)
            self.processor.stats.duration_listeners.append(self.metrics.record_export_duration)
            self.metrics.watch_queue(lambda: self.processor.queue_size)
        self._default_scope = self._scope()

    # ------------------------------------------------------------------ public API

    @property
    def redactor(self) -> Redactor:
        """What content captured on spans is redacted with; replacing it reaches every handler."""
        return self.verdicts.redactor

    @redactor.setter
    def redactor(self, redactor: Redactor) -> None:
        self.verdicts.redactor = redactor

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
        scope = self._default_scope if not client_ip else self._scope(client_ip)
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
            quietly(self.metrics.record_unarmed, fault)
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
        return hook_answers.held_answer_judge(session._scope, session.span)

    @asynccontextmanager
    async def _guarded_session(
        self, options: ClaudeAgentOptions, *, client_ip: str = ""
    ) -> AsyncIterator[GuardedSession]:
        session = self.open_session(options, client_ip=client_ip)
        failed = True
        try:
            with session_current(session):
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
        owns = self.settings.spans == "full"
        if owns:
            span = start_agent_span(
                self.tracer, self.settings.agent_name, agent_id=self.settings.agent_id
            )
        else:
            # AKTO_SPANS=guard: the agent's span is whoever's is current (the app's,
            # another instrumentation's); the guardrail calls nest under it.
            span = trace.get_current_span()
        quietly(self._probe.start)  # a session start: ask Akto now, off the hook path
        scope = self._scope(client_ip, span)
        return GuardedSession(span, self, scope, self._instrument(options, scope), owns_span=owns)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver every record whose span has ended."""
        return self.processor.force_flush(timeout_millis)

    async def aclose(self) -> None:
        """End open spans, flush records and close connections."""
        self._default_scope.tracing.end_all(error="shutdown")
        quietly(self._unjudged.flush)
        await self.client.aclose()
        self.processor.force_flush()

    def shutdown(self) -> None:
        self._default_scope.tracing.end_all(error="shutdown")
        quietly(self._unjudged.flush)
        self.processor.shutdown()

    # ------------------------------------------------------------------ wiring

    def _scope(self, client_ip: str = "", root: Span | None = None) -> HookScope:
        return HookScope(self.verdicts, self.rules, self._probe, self.tracer, client_ip, root)

    def _instrument(self, options: ClaudeAgentOptions, scope: HookScope) -> ClaudeAgentOptions:
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
        if self.settings.spans == "full" and _cli_telemetry_on({**os.environ, **env}):
            _warn_once(_COUNTED_TWICE)
        env.update(agent_env_overrides(os.environ, env))
        instrumented = dataclasses.replace(options, hooks=merged, env=env)  # type: ignore[arg-type]
        _tag(instrumented, _OPTIONS_GUARD, self)
        return instrumented

    def _matchers(self, scope: HookScope) -> dict[str, list[HookMatcher]]:
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

    def _callbacks(self, scope: HookScope) -> dict[str, HookCallback]:
        callbacks = {
            event: _marked(hook_answers.noting(event, scope, _callback(event, scope)))
            for event in HOOK_EVENTS
        }
        for callback in callbacks.values():
            # Options built from hooks() or create_hooks() keep this guard under zero-code.
            setattr(callback, _OPTIONS_GUARD, self)
        return callbacks


def session_current(session: Any) -> AbstractContextManager[Any]:
    """``session.span`` made current while the SDK starts the CLI (so it becomes the
    CLI's TRACEPARENT); a span the session does not own is current already and is
    never touched (no exception recorded on the app's span)."""
    if not getattr(session, "owns_span", True):
        return contextlib.nullcontext()
    return trace.use_span(session.span, end_on_exit=False, record_exception=True)


def setting_warnings(settings: Settings) -> list[str]:
    """What is risky in ``settings``: each entry is logged once per process."""
    warnings: list[str] = []
    if not settings.ingestion_url:
        warnings.append(
            "AKTO_DATA_INGESTION_URL is not set: no guardrail call is made; every judging "
            f"hook applies AKTO_FAIL_MODE={settings.fail_mode}"
            + (" (everything passes unjudged)" if settings.fail_mode == "open" else "")
        )
    if settings.spans == "guard" and not settings.guardrail_spans:
        warnings.append(
            "AKTO_GUARDRAIL_SPANS=false with AKTO_SPANS=guard: the guardrail spans are the "
            "only ones guard mode emits, so they are kept (AKTO_GUARDRAIL_SPANS has no effect)"
        )
    if not settings.sync_mode and settings.fail_mode == "closed":
        warnings.append(
            "AKTO_SYNC_MODE=false with AKTO_FAIL_MODE=closed: observe mode never blocks, "
            "so the closed fail mode has no effect"
        )
    return warnings


def spans_not_exported(env: Mapping[str, str]) -> str:
    """The warning for a guard built with no SDK TracerProvider while ``env`` asks for
    span export (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``), else "".

    ``AktoGuardrails()`` alone installs no exporter: without :func:`akto_otel.configure` (or the
    app's own provider, or ``opentelemetry-instrument``) those variables do nothing.
    """
    asked = [
        name
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_TRACES_EXPORTER",
        )
        if env.get(name, "").strip()
    ]
    if not asked or env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return ""
    return (
        f"{' and '.join(asked)} set, but no OpenTelemetry SDK TracerProvider is: spans "
        "go nowhere (Akto still receives its records). Call akto_otel.configure() "
        "instead of AktoGuardrails() to export them, set your own provider first, or run "
        "under opentelemetry-instrument"
    )


_WARNED: set[str] = set()
_COUNTED_TWICE = (
    "the Claude Code CLI's own telemetry is on (CLAUDE_CODE_ENABLE_TELEMETRY): its "
    "claude_code.interaction and claude_code.tool spans are invoke_agent and execute_tool "
    "spans too, so with AKTO_SPANS=full each agent turn and tool call is traced twice; "
    "AKTO_SPANS=guard leaves them to the CLI and adds only the guardrail spans"
)


def _cli_telemetry_on(env: Mapping[str, str]) -> bool:
    """Whether ``env`` turns on the CLI's own spans: its telemetry, the enhanced
    (tracing) beta and a traces exporter, as docs/architecture.md lists them."""

    def on(name: str) -> bool:
        return env.get(name, "").strip().lower() in ("1", "true")

    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return (
        on("CLAUDE_CODE_ENABLE_TELEMETRY")
        and on("CLAUDE_CODE_ENHANCED_TELEMETRY_BETA")
        and exporter not in ("", "none")
    )


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        _log.warning("akto_otel: %s", message)


def _callback(event: str, scope: HookScope) -> HookCallback:
    """The SDK's callback for ``event``: its handler run by :func:`hook_dispatch.dispatch`."""

    async def callback(input_data: Any, tool_use_id: str | None, context: Any) -> HookOutput:
        return await hook_dispatch.dispatch(scope, event, input_data, tool_use_id)

    callback.__name__ = f"akto_{event}"
    return callback


def _marked(callback: HookCallback) -> HookCallback:
    """``callback`` marked as ours, so a second ``instrument`` replaces it, never doubles it."""
    setattr(callback, _MARK, True)
    return callback


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
            for holder in (matcher, *(getattr(matcher, "hooks", None) or [])):
                found = getattr(holder, name, None)
                if found is not None:
                    return found
    return None


def instrumented_by(options: Any) -> AktoGuardrails | None:
    """The guard whose :meth:`~AktoGuardrails.instrument` or session made ``options``
    (or the options they were copied from), or whose :meth:`~AktoGuardrails.hooks`
    (or :func:`create_hooks`) callbacks they hold."""
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
    scope = guard._scope(client_ip)
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
