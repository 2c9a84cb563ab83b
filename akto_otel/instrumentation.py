"""Zero-code instrumentation: ``opentelemetry-instrument python agent.py``.

``ClaudeAgentSDKInstrumentor`` wraps ``claude_agent_sdk.query`` and
``ClaudeSDKClient`` so every session an unmodified program starts gets the Akto
hooks (first, the program's own hooks kept, never twice) and an ``invoke_agent``
span that is current while the CLI starts (so the CLI's spans join the trace).
Their message streams hold each assistant text until Stop has judged it
(:mod:`akto_otel.answers`; ``AKTO_HOLD_ANSWERS=false`` turns that off).

A bad setting never leaves agents silently unguarded: the error is logged and,
with ``AKTO_FAIL_MODE=closed`` (or an unreadable ``AKTO_FAIL_MODE``), every
session gets hooks that block each prompt and tool call with a reason naming
the setting; with the fail mode open, one loud error says agents run unguarded.
The caller's options object is never modified: each call gets a copy.
``uninstrument()`` puts the originals back.

Usage::

    from akto_otel.instrumentation import ClaudeAgentSDKInstrumentor

    ClaudeAgentSDKInstrumentor().instrument()    # settings from AKTO_* / OTEL_* env
    # ... query(...) / ClaudeSDKClient(...) as usual ...
    ClaudeAgentSDKInstrumentor().uninstrument()
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from akto_otel.answers import (
    ANSWER_BLOCK_PREFIX,
    PROMPT_BLOCK_PREFIX,
    AnswerLedger,
    hold_answers,
)
from akto_otel.armed import not_armed_error
from akto_otel.config import Settings
from akto_otel.errors import AktoConfigError
from akto_otel.hooks import (
    HOOK_EVENTS,
    ORIGINAL_ATTR,
    AktoGuardrails,
    GuardedSession,
    instrumented_by,
    live_session_of,
    session_current,
)
from akto_otel.redaction import REDACTED, Redactor, agent_env_overrides, redact_url

__all__ = ["ClaudeAgentSDKInstrumentor"]

_log = logging.getLogger("akto_otel.instrumentation")
_INSTRUMENTS = ("claude-agent-sdk >= 0.1.40, < 0.3",)
_SESSION_ATTR = "_akto_otel_session"
_BORROWED_ATTR = "_akto_otel_borrowed_session"


class ClaudeAgentSDKInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds Akto guardrails and tracing to every Claude Agent SDK session."""

    _guard: AktoGuardrails | None = None
    _originals: dict[str, Any] = {}

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    @property
    def guard(self) -> AktoGuardrails | None:
        return type(self)._guard

    def _instrument(self, **kwargs: Any) -> None:
        settings = kwargs.get("settings")
        guard = kwargs.get("guard")
        if guard is None:
            try:
                guard = AktoGuardrails(
                    settings if isinstance(settings, Settings) else None,
                    tracer_provider=kwargs.get("tracer_provider") or _sdk_provider(),
                    meter_provider=kwargs.get("meter_provider"),
                )
            except Exception as exc:
                lockdown = _fallback(exc, os.environ)
                if lockdown is None:
                    return
                self._install(lockdown)
                return
        type(self)._guard = guard
        self._install(guard)
        from akto_otel.configure import tell_where_spans_go

        tell_where_spans_go()

    def _install(self, guard: _Guard) -> None:
        import claude_agent_sdk
        from claude_agent_sdk import ClaudeSDKClient

        cls = type(self)
        query_module = sys.modules["claude_agent_sdk.query"]
        cls._originals = {
            "query": claude_agent_sdk.query,
            "module_query": query_module.query,
            "connect": ClaudeSDKClient.connect,
            "disconnect": ClaudeSDKClient.disconnect,
            "receive_messages": ClaudeSDKClient.receive_messages,
        }
        wrapped_query = _wrap_query(cls._originals["query"], guard)
        claude_agent_sdk.query = wrapped_query
        query_module.query = wrapped_query  # type: ignore[attr-defined]
        ClaudeSDKClient.connect = _wrap_connect(cls._originals["connect"], guard)  # type: ignore[method-assign]
        ClaudeSDKClient.disconnect = _wrap_disconnect(cls._originals["disconnect"])  # type: ignore[method-assign]
        # receive_response() reads receive_messages(): one wrapper holds answers for both.
        ClaudeSDKClient.receive_messages = _wrap_receive(  # type: ignore[method-assign]
            cls._originals["receive_messages"], guard
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        import claude_agent_sdk
        from claude_agent_sdk import ClaudeSDKClient

        cls = type(self)
        originals = cls._originals
        if not originals:
            return
        claude_agent_sdk.query = originals["query"]
        sys.modules["claude_agent_sdk.query"].query = originals["module_query"]  # type: ignore[attr-defined]
        ClaudeSDKClient.connect = originals["connect"]  # type: ignore[method-assign]
        ClaudeSDKClient.disconnect = originals["disconnect"]  # type: ignore[method-assign]
        ClaudeSDKClient.receive_messages = originals["receive_messages"]  # type: ignore[method-assign]
        cls._originals = {}
        guard, cls._guard = cls._guard, None
        if guard is not None:
            guard.force_flush()


def _fallback(exc: Exception, environ: Any) -> Lockdown | None:
    """What zero-code does when the guard cannot be built: lock down, or say it loudly."""
    problem = (
        f"{exc.name}={_shown(exc.value)!r} is invalid (expected {exc.accepted})"
        if isinstance(exc, AktoConfigError)
        else f"the guard could not start ({type(exc).__name__})"
    )
    if _fail_mode(environ) == "open":
        _log.error(
            "akto_otel: %s; AKTO_FAIL_MODE=open, so Claude agents run WITHOUT Akto "
            "guardrails until this is fixed",
            problem,
        )
        return None
    _log.error(
        "akto_otel: %s; AKTO_FAIL_MODE=closed, so every prompt and tool call is blocked "
        "until this is fixed",
        problem,
    )
    return Lockdown(f"akto_otel is misconfigured: {problem}")


def _shown(value: str) -> str:
    """A bad value as the log, the app and the model may see it: no secrets, short."""
    cleaned = Redactor().redact_or_none(redact_url(value)) or REDACTED
    return cleaned if len(cleaned) <= 80 else cleaned[:77] + "..."


def _fail_mode(environ: Any) -> str:
    """The fail mode the user asked for; an unreadable one counts as closed."""
    raw = environ.get("AKTO_FAIL_MODE")
    if raw is None or not raw.strip():
        return "open"
    return "open" if raw.strip().lower() == "open" else "closed"


class _LockedSession:
    """A session whose hooks block everything; the same surface as GuardedSession."""

    def __init__(self, options: Any, reason: str) -> None:
        self.span = trace.INVALID_SPAN
        self.answers = AnswerLedger()
        hooks = lockdown_hooks(reason, self.answers)
        env = dict(options.env or {})
        env.update(agent_env_overrides(os.environ, env))
        self.options = dataclasses.replace(options, hooks=hooks, env=env)

    def close(self, *, error: str | None = None) -> None:
        return None


class Lockdown:
    """Stands in for the guard when it cannot be built and the fail mode is closed."""

    hold_answers = True

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def open_session(self, options: Any) -> _LockedSession:
        return _LockedSession(options, self.reason)

    def force_flush(self) -> bool:
        return True


def lockdown_hooks(reason: str, ledger: AnswerLedger) -> dict[str, list[Any]]:
    """Hooks that deny every judging hook with ``reason``; the app's own hooks are dropped
    (they cannot be trusted to run under a guard that is not there)."""
    from claude_agent_sdk import HookMatcher

    async def deny(data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        event = data.get("hook_event_name") if isinstance(data, dict) else None
        return lockdown_output(str(event or ""), reason, ledger, data)

    return {event: [HookMatcher(hooks=[deny])] for event in HOOK_EVENTS}  # type: ignore[list-item]


def lockdown_output(
    event: str, reason: str, ledger: AnswerLedger, data: Any = None
) -> dict[str, Any]:
    """The SDK output of one hook under lockdown (pure but for noting a blocked prompt)."""
    if event == "UserPromptSubmit":
        session_id = data.get("session_id") if isinstance(data, dict) else None
        ledger.record_prompt_block(str(session_id or ""), reason)
        message = PROMPT_BLOCK_PREFIX + reason
        return {"continue_": False, "stopReason": message, "systemMessage": message}
    if event == "PreToolUse":
        tool_use_id = data.get("tool_use_id") if isinstance(data, dict) else None
        if isinstance(tool_use_id, str) and tool_use_id:
            ledger.record_tool_call(tool_use_id, "deny", reason)
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": PROMPT_BLOCK_PREFIX + reason,
            }
        }
    if event in ("Stop", "SubagentStop", "PostToolUse"):
        return {"continue_": False, "stopReason": ANSWER_BLOCK_PREFIX + reason}
    return {}


_Guard = AktoGuardrails | Lockdown
_Session = GuardedSession | _LockedSession


def _held(stream: AsyncIterator[Any], session: _Session) -> AsyncIterator[Any]:
    """``stream`` through the held-answer path of ``session`` (its guard's fail mode)."""
    if isinstance(session, GuardedSession):
        return session.guard.held_answers(stream, session)
    return hold_answers(stream, session.answers, hold=True, judge=None)


def _session_for(guard: _Guard, options: Any) -> tuple[_Session, bool]:
    """The session a wrapped call runs in, and whether the wrapper owns (closes) it.

    Options from an open ``guard.session()`` keep that session (one ``invoke_agent``
    span, not a second one nested in it); options from an app's ``guard.instrument()``
    get a session of that guard, so the app's settings (a closed fail mode, say) are
    never swapped for the environment's; anything else gets the instrumentor's guard.
    """
    session = live_session_of(options)
    if session is not None:
        return session, False
    return (instrumented_by(options) or guard).open_session(options), True


def _sdk_provider() -> trace.TracerProvider | None:
    """The global provider when it is an SDK one (set by the distro or the app)."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


def _wrap_query(original: Callable[..., AsyncIterator[Any]], guard: _Guard) -> Any:
    @functools.wraps(original)
    async def query(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        from claude_agent_sdk import ClaudeAgentOptions

        options = kwargs.get("options")
        if options is None:
            options = ClaudeAgentOptions()
        session, owned = _session_for(guard, options)
        failed = True
        try:
            with session_current(session):
                kwargs["options"] = session.options
                given = kwargs.get("transport")
                if isinstance(session, GuardedSession) and given is not None:
                    kwargs["transport"] = session.guard.armed_transport(given)
                stream = original(*args, **kwargs)
                try:
                    async for message in _held(stream, session):
                        yield message
                except Exception as exc:
                    not_armed = not_armed_error(kwargs.get("transport"))
                    if not_armed is not None:
                        raise not_armed from exc
                    raise
            failed = False
        finally:
            if owned:
                session.close(error="session_aborted" if failed else None)

    setattr(query, ORIGINAL_ATTR, original)
    return query


def _wrap_receive(original: Callable[..., AsyncIterator[Any]], guard: _Guard) -> Any:
    @functools.wraps(original)
    async def receive_messages(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        stream = original(self, *args, **kwargs)
        session: _Session | None = getattr(self, _SESSION_ATTR, None)
        if session is None:
            async for message in stream:
                yield message
            return
        async for message in _held(stream, session):
            yield message

    return receive_messages


def _wrap_connect(original: Callable[..., Any], guard: _Guard) -> Any:
    @functools.wraps(original)
    async def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        session: _Session | None = getattr(self, _SESSION_ATTR, None)
        if session is None:
            session, owned = _session_for(guard, self.options)
            setattr(self, _SESSION_ATTR, session)
            setattr(self, _BORROWED_ATTR, not owned)
            # The client keeps using this copy; the caller's options stay untouched.
            self.options = session.options
        with session_current(session):
            try:
                return await original(self, *args, **kwargs)
            except BaseException:
                _release(self, error="connect_failed")
                raise

    return connect


def _wrap_disconnect(original: Callable[..., Any]) -> Any:
    @functools.wraps(original)
    async def disconnect(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        finally:
            _release(self, error=None)

    return disconnect


def _release(client: Any, *, error: str | None) -> None:
    """Forget the client's session; close it unless it is an app's ``guard.session()``."""
    session: _Session | None = getattr(client, _SESSION_ATTR, None)
    if session is not None and not getattr(client, _BORROWED_ATTR, False):
        session.close(error=error)
    setattr(client, _SESSION_ATTR, None)
    setattr(client, _BORROWED_ATTR, False)
