"""Zero-code instrumentation: ``opentelemetry-instrument python agent.py``.

``ClaudeAgentSDKInstrumentor`` wraps ``claude_agent_sdk.query`` and
``ClaudeSDKClient`` so every session an unmodified program starts gets the Akto
hooks (first, the program's own hooks kept, never twice) and an ``invoke_agent``
span that is current while the CLI starts (so the CLI's spans join the trace).
Their message streams hold each assistant text until Stop has judged it
(:mod:`akto_otel.answers`; ``AKTO_HOLD_ANSWERS=false`` turns that off).
The caller's options object is never modified: each call gets a copy.
``uninstrument()`` puts the originals back.

Usage::

    from akto_otel.instrumentation import ClaudeAgentSDKInstrumentor

    ClaudeAgentSDKInstrumentor().instrument()    # settings from AKTO_* / OTEL_* env
    # ... query(...) / ClaudeSDKClient(...) as usual ...
    ClaudeAgentSDKInstrumentor().uninstrument()
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from akto_otel.answers import hold_answers
from akto_otel.config import Settings
from akto_otel.hooks import ORIGINAL_ATTR, AktoGuardrails, GuardedSession

__all__ = ["ClaudeAgentSDKInstrumentor"]

_log = logging.getLogger("akto_otel.instrumentation")
_INSTRUMENTS = ("claude-agent-sdk >= 0.1.40, < 0.3",)
_SESSION_ATTR = "_akto_otel_session"


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
        import claude_agent_sdk
        from claude_agent_sdk import ClaudeSDKClient

        settings = kwargs.get("settings")
        guard = kwargs.get("guard")
        if guard is None:
            guard = AktoGuardrails(
                settings if isinstance(settings, Settings) else None,
                tracer_provider=kwargs.get("tracer_provider") or _sdk_provider(),
                meter_provider=kwargs.get("meter_provider"),
            )
        cls = type(self)
        cls._guard = guard
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


def _sdk_provider() -> trace.TracerProvider | None:
    """The global provider when it is an SDK one (set by the distro or the app)."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


def _wrap_query(original: Callable[..., AsyncIterator[Any]], guard: AktoGuardrails) -> Any:
    @functools.wraps(original)
    async def query(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        from claude_agent_sdk import ClaudeAgentOptions

        options = kwargs.get("options")
        if options is None:
            options = ClaudeAgentOptions()
        session = guard.open_session(options)
        failed = True
        try:
            with trace.use_span(session.span, end_on_exit=False, record_exception=True):
                kwargs["options"] = session.options
                stream = original(*args, **kwargs)
                async for message in hold_answers(
                    stream, session.answers, hold=guard.settings.hold_answers
                ):
                    yield message
            failed = False
        finally:
            session.close(error="session_aborted" if failed else None)

    setattr(query, ORIGINAL_ATTR, original)
    return query


def _wrap_receive(original: Callable[..., AsyncIterator[Any]], guard: AktoGuardrails) -> Any:
    @functools.wraps(original)
    async def receive_messages(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        stream = original(self, *args, **kwargs)
        session: GuardedSession | None = getattr(self, _SESSION_ATTR, None)
        if session is None:
            async for message in stream:
                yield message
            return
        async for message in hold_answers(
            stream, session.answers, hold=guard.settings.hold_answers
        ):
            yield message

    return receive_messages


def _wrap_connect(original: Callable[..., Any], guard: AktoGuardrails) -> Any:
    @functools.wraps(original)
    async def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        session: GuardedSession | None = getattr(self, _SESSION_ATTR, None)
        if session is None:
            session = guard.open_session(self.options)
            setattr(self, _SESSION_ATTR, session)
            # The client keeps using this copy; the caller's options stay untouched.
            self.options = session.options
        with trace.use_span(session.span, end_on_exit=False):
            try:
                return await original(self, *args, **kwargs)
            except BaseException:
                session.close(error="connect_failed")
                setattr(self, _SESSION_ATTR, None)
                raise

    return connect


def _wrap_disconnect(original: Callable[..., Any]) -> Any:
    @functools.wraps(original)
    async def disconnect(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        finally:
            session: GuardedSession | None = getattr(self, _SESSION_ATTR, None)
            if session is not None:
                session.close()
                setattr(self, _SESSION_ATTR, None)

    return disconnect
