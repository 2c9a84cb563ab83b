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

import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind

from akto_otel import contract
from akto_otel.answers import (
    AnswerLedger,
    Judge,
    hold_answers,
    note_hook_output,
    withheld_agent_output,
)
from akto_otel.config import Settings
from akto_otel.contract import Verdict, WireContext
from akto_otel.exporter import AktoSpanProcessor
from akto_otel.guardrails import GuardrailClient
from akto_otel.logs import setup_logging
from akto_otel.metrics import metrics_for
from akto_otel.redaction import Redactor, agent_env_overrides
from akto_otel.spans import (
    SessionState,
    SessionTracing,
    capture_content,
    mark_error,
    record_verdict,
    security_attributes,
    start_agent_span,
)
from akto_otel.version import __version__

if TYPE_CHECKING:
    from claude_agent_sdk import ClaudeAgentOptions, HookMatcher

__all__ = [
    "HOOK_EVENTS",
    "AktoGuardrails",
    "GuardedSession",
    "create_hooks",
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
#: Set by the instrumentor on its wrapped ``query``: the SDK's original.
ORIGINAL_ATTR = "_akto_otel_original"
_BLOCK_PREFIX = "Blocked by Akto Guardrails: "
_RESPONSE_BLOCK_PREFIX = "Response blocked by Akto Guardrails: "


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


class GuardedSession:
    """One guarded agent session: its span, its instrumented options, its state."""

    def __init__(self, span: Span, scope: _Scope, options: ClaudeAgentOptions) -> None:
        self.span = span
        self.options = options
        self._scope = scope
        self._closed = False

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
            self.span.end()
        except Exception as exc:
            _log.error("akto_otel could not end the session span: %s", type(exc).__name__)


class AktoGuardrails:
    """Akto guardrails and tracing for Claude Agent SDK sessions.

    Settings come from ``settings`` or the environment (see :class:`Settings`),
    with keyword arguments overriding either. Spans go to ``tracer_provider``, else
    the global provider when the app set an SDK one, else a private provider; the
    :class:`AktoSpanProcessor` that ships records to Akto is added to it once.
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
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(**overrides) if overrides else base
        setup_logging(self.settings)
        for warning in setting_warnings(self.settings):
            _warn_once(warning)
        self.redactor = Redactor(self.settings.redact_patterns)
        self.client = client or GuardrailClient(self.settings, redactor=self.redactor)
        self.processor = processor or AktoSpanProcessor(self.settings)
        self.tracer_provider = _attach(tracer_provider, self.processor, self.settings)
        self.tracer = self.tracer_provider.get_tracer("akto_otel", __version__)
        self.metrics = metrics_for(meter_provider)
        self._server_attributes = _server_attributes(self.settings.ingestion_url)
        self.processor.stats.listeners.append(self.metrics.record_export)
        self.processor.stats.duration_listeners.append(self.metrics.record_export_duration)
        self.metrics.watch_queue(lambda: self.processor.queue_size)
        self._default_scope = _Scope(self, "", None)

    # ------------------------------------------------------------------ public API

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
            stream = sdk_query(prompt=prompt, options=session.options, **kwargs)
            async for message in hold_answers(
                stream,
                session.answers,
                hold=self.settings.hold_answers,
                judge=self.answer_judge(session),
            ):
                yield message

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
                session.span, "akto.held_answer", hook="Stop", attributes={}
            )
            try:
                states = list(scope.tracing)
                prompt = states[-1].last_prompt if states else ""
                record = contract.turn_record(scope.wire, prompt, text, hook="Stop")
                verdict = await self._guard(span, "Stop", record, request=False, response=True)
                if verdict.allowed and verdict.decision != "modify":
                    return None
                return verdict.reason or contract.DEFAULT_BLOCK_REASON
            except Exception as exc:
                _log.error("akto_otel could not judge a held answer: %s", type(exc).__name__)
                if self.settings.fail_mode == "open":
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
        scope = _Scope(self, client_ip, span)
        return GuardedSession(span, scope, self._instrument(options, scope))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver every record whose span has ended."""
        return self.processor.force_flush(timeout_millis)

    async def aclose(self) -> None:
        """End open spans, flush records and close connections."""
        self._default_scope.tracing.end_all(error="shutdown")
        await self.client.aclose()
        self.processor.force_flush()

    def shutdown(self) -> None:
        self._default_scope.tracing.end_all(error="shutdown")
        self.processor.shutdown()

    # ------------------------------------------------------------------ wiring

    def _instrument(self, options: ClaudeAgentOptions, scope: _Scope) -> ClaudeAgentOptions:
        existing: dict[str, list[Any]] = {str(k): list(v) for k, v in (options.hooks or {}).items()}
        merged: dict[str, list[Any]] = {}
        ours = self._matchers(scope)
        for event in dict.fromkeys([*ours, *existing]):
            theirs = [m for m in existing.get(event, []) if not _is_ours(m)]
            merged[event] = [*ours.get(event, []), *theirs]
        # The CLI inherits os.environ: its tools (Bash `env`) must not see Akto's secrets.
        env = dict(options.env or {})
        env.update(agent_env_overrides(os.environ, env))
        return dataclasses.replace(options, hooks=merged, env=env)  # type: ignore[arg-type]

    def _matchers(self, scope: _Scope) -> dict[str, list[HookMatcher]]:
        from claude_agent_sdk import HookMatcher

        callbacks = self._callbacks(scope)
        # Our callbacks take any input (they validate it themselves), wider than the
        # SDK's per-event TypedDicts.
        matchers = {
            event: [HookMatcher(hooks=[callbacks[event]])]  # type: ignore[list-item]
            for event in HOOK_EVENTS
        }
        matchers["PostToolUse"].append(
            HookMatcher(matcher="Agent|Task", hooks=[self._withhold_agent(scope)])  # type: ignore[list-item]
        )
        return matchers

    def _withhold_agent(self, scope: _Scope) -> HookCallback:
        """PostToolUse on the Agent tool: a subagent answer denied at the bound never
        reaches the parent model (SubagentStop cannot stop it; the CLI hands it over)."""

        async def withhold(input_data: Any, tool_use_id: str | None, context: Any) -> HookOutput:
            try:
                data = _as_mapping(input_data)
                output = withheld_agent_output(
                    scope.answers, _text(data, "tool_name"), data.get("tool_response")
                )
                return output or {}
            except Exception as exc:  # never raise into the SDK
                _log.error("akto_otel withholding a subagent answer failed: %s", type(exc).__name__)
                return {}

        setattr(withhold, _MARK, True)
        withhold.__name__ = "akto_PostToolUse_withhold_agent"
        return withhold

    def _callbacks(self, scope: _Scope) -> dict[str, HookCallback]:
        handlers: dict[str, Callable[[_Scope, Mapping[str, Any]], Awaitable[HookOutput]]] = {
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

    def _safe(
        self,
        event: str,
        scope: _Scope,
        handler: Callable[[_Scope, Mapping[str, Any]], Awaitable[HookOutput]],
    ) -> HookCallback:
        async def callback(input_data: Any, tool_use_id: str | None, context: Any) -> HookOutput:
            start = time.perf_counter()
            try:
                data = dict(input_data) if isinstance(input_data, Mapping) else {}
                if tool_use_id and not data.get("tool_use_id"):
                    data["tool_use_id"] = tool_use_id
                return await handler(scope, data)
            except Exception as exc:  # never raise into the SDK
                _log.error("akto_otel %s hook failed: %s", event, type(exc).__name__)
                self.metrics.record_hook_error(event)
                self._record_internal_error(scope, event, input_data, exc)
                return self._fail_output(event)
            finally:
                self.metrics.record_hook_duration(event, time.perf_counter() - start)

        setattr(callback, _MARK, True)
        callback.__name__ = f"akto_{event}"
        return callback

    def _record_internal_error(
        self, scope: _Scope, event: str, input_data: Any, exc: Exception
    ) -> None:
        try:
            data = _as_mapping(input_data)
            state = scope.tracing.get(_text(data, "session_id"))
            if state is not None and state.span.is_recording():
                state.span.add_event(
                    "akto.hook.error", {"akto.hook": event, "error.type": type(exc).__name__}
                )
        except Exception:
            _log.debug("could not record a hook error", exc_info=True)

    def _fail_output(self, event: str) -> HookOutput:
        if self.settings.fail_mode == "open" or not self.settings.sync_mode:
            return {}
        reason = "Akto guardrails could not check this (internal error)"
        return self._deny_output(event, reason)

    def _deny_output(self, event: str, reason: str) -> HookOutput:
        if event == "UserPromptSubmit":
            return {"continue_": False, "systemMessage": _BLOCK_PREFIX + reason}
        if event == "PreToolUse":
            return {
                "hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": "deny",
                    "permissionDecisionReason": _BLOCK_PREFIX + reason,
                }
            }
        return {}

    def _capture(self, span: Span, key: str, value: Any) -> None:
        capture_content(span, key, value, self.settings, self.redactor)

    # ------------------------------------------------------------------ guard calls

    async def _guard(
        self,
        span: Span,
        hook: str,
        record: dict[str, Any],
        *,
        request: bool = True,
        response: bool = False,
        ingest: bool = False,
        target_id: str = "",
    ) -> Verdict:
        """One guardrail call under a ``run_guardrail akto`` span; verdict recorded."""
        child = self.tracer.start_span(
            "run_guardrail akto",
            context=trace.set_span_in_context(span),
            kind=SpanKind.CLIENT,
            attributes={
                "akto.hook": hook,
                "gen_ai.operation.name": "run_guardrail",
                "http.request.method": "POST",
                **self._server_attributes,
            },
        )
        try:
            verdict = await self.client.check(
                record, request=request, response=response, ingest=ingest
            )
            if verdict.error and verdict.error != "server_fail_open":
                mark_error(child, verdict.error)
            child.set_attribute("akto.guardrail.decision", verdict.decision)
            if self.settings.semconv_security:
                child.set_attributes(security_attributes(hook, verdict, target_id))
        finally:
            child.end()
        record_verdict(span, hook, verdict, self.settings)
        self.metrics.record_decision(hook, verdict)
        return verdict

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
    ) -> None:
        self.processor.attach(
            span,
            record,
            kind=kind,
            guardrails=guardrails,
            response_guardrails=response_guardrails,
        )

    # ------------------------------------------------------------------ handlers

    async def _user_prompt_submit(self, scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
        session_id = _text(data, "session_id")
        prompt = _text(data, "prompt")
        state = scope.tracing.session(session_id)
        state.prompt_id = _text(data, "prompt_id")
        state.regenerations = 0
        if prompt.strip():
            state.last_prompt = prompt.strip()
        span = scope.tracing.start_child(
            state.span,
            "akto.user_prompt",
            hook="UserPromptSubmit",
            attributes=_conversation(session_id, state.prompt_id),
        )
        try:
            if prompt:
                self._capture(
                    span,
                    "gen_ai.input.messages",
                    [{"role": "user", "parts": [{"type": "text", "content": prompt}]}],
                )
            if not prompt.strip() or not self.settings.sync_mode:
                return {}
            wire = self._wire(scope, data)
            record = contract.prompt_record(wire, prompt)
            verdict = await self._guard(span, "UserPromptSubmit", record)
            if not verdict.allowed:
                reason = verdict.reason or contract.DEFAULT_BLOCK_REASON
                self._attach(
                    span,
                    contract.prompt_record(wire, prompt, blocked_reason=verdict.reason),
                    "prompt.blocked",
                )
                return {"continue_": False, "systemMessage": _BLOCK_PREFIX + reason}
            return {}
        finally:
            span.end()

    async def _pre_tool_use(self, scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
        session_id = _text(data, "session_id")
        tool_name = _text(data, "tool_name")
        tool_use_id = _text(data, "tool_use_id")
        raw_input = data.get("tool_input")
        tool_input: Any = raw_input or {}
        state = scope.tracing.session(session_id)
        key, span = self._tool_span(scope, state, data, tool_name, tool_use_id)
        self._capture(span, "gen_ai.tool.call.arguments", tool_input)
        if not self.settings.sync_mode or not tool_input:
            return {}
        wire = self._wire(scope, data)
        record = contract.tool_request_record(wire, tool_name, tool_input)
        verdict = await self._guard(span, "PreToolUse", record, target_id=tool_use_id)
        if verdict.decision == "modify":
            updated = _updated_tool_input(tool_name, verdict.modified_payload)
            if updated is not None:
                return _permission("allow", "Input masked by Akto Guardrails", updated)
            verdict = dataclasses.replace(
                verdict,
                decision="deny",
                allowed=False,
                reason="Akto masking verdict could not be applied",
            )
            record_verdict(span, "PreToolUse", verdict, self.settings)
        if verdict.decision == "ask" and self.settings.approval_decision == "ask":
            return _permission(
                "ask", _BLOCK_PREFIX + (verdict.reason or contract.DEFAULT_BLOCK_REASON)
            )
        if not verdict.allowed:
            self._attach(
                span,
                contract.tool_request_record(
                    wire, tool_name, tool_input, blocked_reason=verdict.reason
                ),
                "tool.blocked",
            )
            self._end_tool(state, key, error="blocked")
            return _permission(
                "deny", _BLOCK_PREFIX + (verdict.reason or contract.DEFAULT_BLOCK_REASON)
            )
        return {}

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
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool_name,
            "gen_ai.tool.type": "extension" if is_mcp else "function",
            "gen_ai.conversation.id": state.session_id,
        }
        if tool_use_id:
            attributes["gen_ai.tool.call.id"] = tool_use_id
        agent_id = _text(data, "agent_id")
        if agent_id:
            attributes["gen_ai.agent.id"] = agent_id
        span = scope.tracing.start_child(
            scope.tracing.parent_for(state, agent_id),
            f"execute_tool {tool_name or 'unknown'}",
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
        span.end()

    async def _post_tool_use(self, scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
        session_id = _text(data, "session_id")
        tool_name = _text(data, "tool_name")
        tool_use_id = _text(data, "tool_use_id")
        tool_input: Any = data.get("tool_input") or {}
        tool_response: Any = data.get("tool_response") or {}
        state = scope.tracing.session(session_id)
        key, span = self._tool_span(scope, state, data, tool_name, tool_use_id)
        output: HookOutput = {}
        try:
            duration = data.get("duration_ms")
            if isinstance(duration, (int, float)) and not isinstance(duration, bool):
                span.set_attribute("akto.tool.duration_ms", duration)
            self._capture(span, "gen_ai.tool.call.result", tool_response)
            if not tool_input or not tool_response:
                return output
            record = contract.tool_result_record(
                self._wire(scope, data), tool_name, tool_input, tool_response
            )
            if self.settings.sync_mode and self.settings.tool_response_guardrails:
                verdict = await self._guard(
                    span,
                    "PostToolUse",
                    record,
                    request=False,
                    response=True,
                    ingest=True,
                    target_id=tool_use_id,
                )
                if not verdict.allowed:
                    reason = verdict.reason or contract.DEFAULT_BLOCK_REASON
                    output = {
                        "hookSpecificOutput": {
                            "hookEventName": "PostToolUse",
                            "additionalContext": (
                                "Akto Guardrails flagged this tool output; do not rely on it "
                                f"or repeat it. Reason: {reason}"
                            ),
                        }
                    }
                return output
            self._attach(span, record, "tool.result", guardrails=not self.settings.sync_mode)
            return output
        finally:
            self._end_tool(state, key, error=None)

    async def _post_tool_use_failure(self, scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
        state = scope.tracing.session(_text(data, "session_id"))
        tool_use_id = _text(data, "tool_use_id")
        key, span = self._tool_span(scope, state, data, _text(data, "tool_name"), tool_use_id)
        interrupted = data.get("is_interrupt") is True
        if span.is_recording():
            span.add_event(
                "akto.tool.failure",
                {"akto.tool.interrupted": interrupted, "akto.hook": "PostToolUseFailure"},
            )
            self._capture(span, "gen_ai.tool.call.result", _text(data, "error"))
        self._end_tool(state, key, error="tool_interrupted" if interrupted else "tool_error")
        return {}

    async def _stop(self, scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
        session_id = _text(data, "session_id")
        state = scope.tracing.session(session_id)
        response_text = _text(data, "last_assistant_message").strip()
        span = scope.tracing.start_child(
            state.span, "akto.stop", hook="Stop", attributes=_conversation(session_id, "")
        )
        final = True
        try:
            span.set_attribute("akto.stop.hook_active", data.get("stop_hook_active") is True)
            if response_text:
                self._capture(
                    span,
                    "gen_ai.output.messages",
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": response_text}],
                        }
                    ],
                )
            if not response_text:
                return {}
            reason = await self._judge_answer(
                span, "Stop", self._wire(scope, data), state.last_prompt, response_text, "turn"
            )
            if reason is None:
                return {}
            span.set_attribute("akto.stop.regenerations", state.regenerations)
            if state.regenerations >= self.settings.max_stop_regenerations:
                span.set_attribute("akto.stop.gave_up", True)
                mark_error(span, "regeneration_limit")
                return {
                    "continue_": False,
                    "stopReason": f"{_RESPONSE_BLOCK_PREFIX}{reason}",
                    "systemMessage": (
                        f"{_RESPONSE_BLOCK_PREFIX}{reason} "
                        f"(gave up after {state.regenerations} regeneration(s))"
                    ),
                }
            state.regenerations += 1
            final = False
            return {"decision": "block", "reason": f"{_RESPONSE_BLOCK_PREFIX}{reason}"}
        finally:
            span.end()
            if final:
                scope.tracing.end_turn(session_id)

    async def _judge_answer(
        self, span: Span, hook: str, wire: WireContext, prompt: str, answer: str, kind: str
    ) -> str | None:
        """Response guardrail on an answer, its record attached to ``span``.

        Returns the reason to block it, or None to let it through. In async mode
        the record goes to Akto with ``response_guardrails`` for server-side judging.
        """
        record = contract.turn_record(wire, prompt, answer, hook=hook)
        if not self.settings.sync_mode:
            self._attach(span, record, kind, response_guardrails=True)
            return None
        verdict = await self._guard(span, hook, record, request=False, response=True)
        if verdict.allowed:
            self._attach(span, record, kind)
            return None
        blocked = contract.turn_record(
            wire, prompt, answer, hook=hook, blocked_reason=verdict.reason
        )
        self._attach(span, blocked, f"{kind}.blocked")
        return verdict.reason or contract.DEFAULT_BLOCK_REASON

    async def _subagent_start(self, scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
        state = scope.tracing.session(_text(data, "session_id"))
        scope.tracing.start_subagent(state, _text(data, "agent_id"), _text(data, "agent_type"))
        return {}

    async def _subagent_stop(self, scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
        session_id = _text(data, "session_id")
        agent_id = _text(data, "agent_id")
        state = scope.tracing.session(session_id)
        agent_span = scope.tracing.start_subagent(state, agent_id, _text(data, "agent_type"))
        response_text = _text(data, "last_assistant_message").strip()
        span = scope.tracing.start_child(
            agent_span,
            "akto.subagent_stop",
            hook="SubagentStop",
            attributes=_conversation(session_id, ""),
        )
        finished = True
        try:
            if not response_text:
                return {}
            reason = await self._judge_answer(
                span,
                "SubagentStop",
                self._wire(scope, data),
                state.last_prompt,
                response_text,
                "subagent.turn",
            )
            if reason is None:
                return {}
            scope.answers.record_denial(response_text, reason)
            count = state.subagent_regenerations.get(agent_id, 0)
            if count >= self.settings.max_stop_regenerations:
                span.set_attribute("akto.stop.gave_up", True)
                mark_error(span, "regeneration_limit")
                return {}
            state.subagent_regenerations[agent_id] = count + 1
            finished = False
            return {"decision": "block", "reason": f"{_RESPONSE_BLOCK_PREFIX}{reason}"}
        finally:
            span.end()
            if finished:
                state.subagent_regenerations.pop(agent_id, None)
                ended = state.agents.pop(agent_id, None)
                if ended is not None:
                    ended.end()

    def _observer(self, event: str) -> Callable[[_Scope, Mapping[str, Any]], Awaitable[HookOutput]]:
        async def observe(scope: _Scope, data: Mapping[str, Any]) -> HookOutput:
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
            attributes["gen_ai.tool.name"] = _text(data, "tool_name")
        elif event == "Notification":
            attributes["akto.notification.type"] = _text(data, "notification_type")
        elif event == "PreCompact":
            attributes["akto.compact.trigger"] = _text(data, "trigger")
        name = {
            "PermissionRequest": "akto.permission_request",
            "Notification": "akto.notification",
            "PreCompact": "akto.pre_compact",
        }.get(event, "akto.hook_event")
        scope.tracing.start_child(parent, name, hook=event, attributes=attributes).end()
        return {}


def _permission(decision: str, reason: str, updated: Any = None) -> HookOutput:
    output: dict[str, Any] = {
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": reason,
    }
    if updated is not None:
        output["updatedInput"] = updated
    return {"hookSpecificOutput": output}


def _updated_tool_input(tool_name: str, modified_payload: str | None) -> dict[str, Any] | None:
    """The tool input inside a masked requestPayload, or None if it is not there."""
    if not modified_payload:
        return None
    try:
        payload = json.loads(modified_payload)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    if contract.parse_claude_tool(tool_name)[0]:
        params = payload.get("params")
        arguments = params.get("arguments") if isinstance(params, dict) else None
        return arguments if isinstance(arguments, dict) else None
    body = payload.get("body")
    return body if isinstance(body, dict) else None


def _conversation(session_id: str, prompt_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if session_id:
        attributes["gen_ai.conversation.id"] = session_id
    if prompt_id:
        attributes["akto.prompt.id"] = prompt_id
    return attributes


def _server_attributes(url: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    if not url:
        return {}
    parts = urlsplit(url)
    attributes: dict[str, Any] = {"server.address": parts.hostname or ""}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    attributes["server.port"] = port
    return attributes


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
    if event not in ("Stop", "SubagentStop", "UserPromptSubmit"):
        return callback

    async def noted(input_data: Any, tool_use_id: str | None, context: Any) -> HookOutput:
        output = await callback(input_data, tool_use_id, context)
        note_hook_output(scope.answers, event, input_data, output)
        return output

    setattr(noted, _MARK, True)
    noted.__name__ = callback.__name__
    return noted


def _sdk_query() -> Callable[..., AsyncIterator[Any]]:
    """The SDK's own ``query``, also when the zero-code instrumentor has wrapped it."""
    import claude_agent_sdk

    found: Callable[..., AsyncIterator[Any]] = claude_agent_sdk.query
    return getattr(found, ORIGINAL_ATTR, found)


def _is_ours(matcher: Any) -> bool:
    return any(getattr(cb, _MARK, False) for cb in getattr(matcher, "hooks", []) or [])


def _attach(
    provider: trace.TracerProvider | None, processor: AktoSpanProcessor, settings: Settings
) -> trace.TracerProvider:
    """Pick the provider our spans go to and add the Akto processor to it once."""
    chosen = provider if provider is not None else trace.get_tracer_provider()
    if not isinstance(chosen, TracerProvider):
        if provider is not None:
            _log.warning("tracer_provider is not an SDK TracerProvider; using a private one")
        from opentelemetry.sdk.resources import Resource

        chosen = TracerProvider(resource=Resource.create({"service.name": settings.agent_name}))
    attached: set[int] = chosen.__dict__.setdefault("_akto_otel_processors", set())
    if id(processor) not in attached:
        chosen.add_span_processor(processor)
        attached.add(id(processor))
    return chosen


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
    """One guard per process for create_hooks, built from the environment on first use."""
    global _SHARED
    if _SHARED is None:
        _SHARED = AktoGuardrails()
        import atexit

        atexit.register(_SHARED.shutdown)
    return _SHARED
