"""Fail-open made loud: every call allowed without a verdict is told, counted and marked.

When Akto cannot answer (unreachable, token refused, 5xx, timeout, an answer that
is not a verdict, our own internal error) or says its engine did not judge
(``failOpen``), ``AKTO_FAIL_MODE=open`` lets the call through. That must never be
silent: :class:`UnjudgedRecorder` logs a WARNING naming the hook, the tool, the
fault and that it ran without a verdict (the first per session and fault at once,
then at most one line a minute per hook and fault, with the count), adds one to
``akto.guardrail.unjudged`` (``hook``, ``fault``) and puts
``akto.guardrail.unjudged_call=true`` and ``akto.guardrail.fault`` on the span.

:class:`StartupProbe` asks Akto once per session start (cached) whether it answers
and takes the token, off the hook path, so the warning comes before the first
tool call rather than after it.

Usage (other modules go through the guard)::

    guard.record_unjudged("PreToolUse", "Bash", "connection_refused", span, session_id="s")
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from akto_otel import semconv
from akto_otel.contract import Verdict, ingest_data_url
from akto_otel.logs import DEFAULT_LOG_INTERVAL, RateLimitedLog
from akto_otel.redaction import redact_url

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from akto_otel.config import Settings
    from akto_otel.metrics import GuardrailMetrics

__all__ = [
    "LOGGER_NAME",
    "StartupProbe",
    "UnjudgedRecorder",
    "probe_fault",
    "unjudged_fault",
]

#: The logger of the unjudged-call warnings and of the start-up probe.
LOGGER_NAME = "akto_otel.unjudged"
_log = logging.getLogger(LOGGER_NAME)
#: (session, fault) pairs remembered for "the first of each is told at once".
_MAX_SEEN = 4096
_PROBE_BODY = b'{"batchData": []}'


def unjudged_fault(verdict: Verdict) -> str | None:
    """The fault when ``verdict`` lets a call through that nobody judged, else None (pure).

    That is a fail-open stand-in for a verdict Akto could not give (``decision``
    ``error``), or Akto's own ``failOpen`` answer.
    """
    if verdict.allowed and verdict.fail_open:
        return verdict.error or "fail_open"
    return None


def _what(hook: str, tool: str) -> str:
    if tool:
        return f"output of tool {tool}" if hook == "PostToolUse" else f"tool call {tool}"
    return {
        "UserPromptSubmit": "prompt",
        "Stop": "answer",
        "SubagentStop": "subagent answer",
        "PostToolUse": "tool output",
        "PreToolUse": "tool call",
    }.get(hook, "call")


class UnjudgedRecorder:
    """Tells, counts and marks each call allowed without a verdict. Never raises."""

    def __init__(
        self,
        metrics: GuardrailMetrics,
        *,
        interval: float = DEFAULT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._repeats = RateLimitedLog(_log, interval=interval, clock=clock)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def record(
        self, hook: str, tool: str, fault: str, span: Span | None = None, *, session_id: str = ""
    ) -> None:
        """One call of ``hook`` (on ``tool``, empty for prompts and answers) ran unjudged."""
        try:
            self._metrics.record_unjudged(hook, fault)
        except Exception:
            _log.debug("could not count an unjudged call", exc_info=True)
        try:
            if span is not None and span.is_recording():
                span.set_attribute(semconv.AKTO_GUARDRAIL_UNJUDGED, True)
                span.set_attribute(semconv.AKTO_GUARDRAIL_FAULT, fault)
        except Exception:
            _log.debug("could not mark an unjudged span", exc_info=True)
        try:
            self._tell(hook, tool, fault, session_id)
        except Exception:
            _log.debug("could not log an unjudged call", exc_info=True)

    def _tell(self, hook: str, tool: str, fault: str, session_id: str) -> None:
        extra = {
            "akto_unjudged": True,
            "akto_hook": hook,
            "akto_tool": tool,
            "akto_fault": fault,
            "akto_session_id": session_id,
        }
        what = _what(hook, tool)
        key = (session_id, fault)
        if key not in self._seen:
            self._seen[key] = None
            if len(self._seen) > _MAX_SEEN:
                self._seen.popitem(last=False)
            _log.warning(
                "akto_otel: %s %s ALLOWED WITHOUT A VERDICT (fail-open on %s)%s",
                hook,
                what,
                fault,
                f" in session {session_id}" if session_id else "",
                extra=extra,
            )
            return
        self._repeats.log(
            logging.WARNING,
            (hook, fault),
            "akto_otel: %(count)d %(hook)s call(s) ALLOWED WITHOUT A VERDICT since %(since)s "
            "(fail-open on %(fault)s; last: %(what)s)",
            extra=extra,
            hook=hook,
            fault=fault,
            what=what,
        )

    def flush(self) -> None:
        """Tell the repeats held back (at shutdown)."""
        self._repeats.flush()


def probe_fault(status: int | None, error: str | None) -> str | None:
    """What the start-up probe's answer says is wrong, as a fault kind; None when fine (pure).

    ``status``/``error`` are a :class:`~akto_otel.guardrails.PostResult`'s.
    """
    if status is not None and 200 <= status < 300:
        return None
    return error or f"http_{status}"


_CAUSE = {
    "http_401": "refuses the token (401)",
    "http_403": "refuses the token (403)",
    "connection_refused": "is unreachable (connection refused)",
    "dns_error": "is unreachable (DNS)",
    "tls_error": "is unreachable (TLS)",
    "timeout": "did not answer in time",
    "connection_error": "is unreachable",
    "http_5xx": "is failing (5xx)",
}


class StartupProbe:
    """One authenticated no-op to Akto (an empty ``/api/ingestData`` batch, as
    ``akto-otel doctor`` sends) at session start, its result kept for ``ttl`` seconds.

    It runs as a task on the hooks' event loop; the first tool call waits for it
    alongside its own guardrail call, so it answers no later than the longer of the
    two and a short bound (:meth:`pending`, :meth:`wait`). A problem is one WARNING
    saying what every guarded call will get: allowed without a verdict (fail-open) or
    denied (fail-closed).
    """

    def __init__(
        self,
        client: Any,
        settings: Settings,
        *,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._settings = settings
        self._ttl = ttl
        self._clock = clock
        self._task: asyncio.Task[str | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started_at = float("-inf")
        self.fault: str | None = None
        self._enabled = bool(settings.ingestion_url) and settings.sync_mode

    @property
    def enabled(self) -> bool:
        return self._enabled

    def start(self) -> asyncio.Task[str | None] | None:
        """The probe of this loop, started if none ran within ``ttl``; None without a loop."""
        if not self._enabled:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        fresh = self._clock() - self._started_at < self._ttl
        if self._task is not None and self._loop is loop and (fresh or not self._task.done()):
            return self._task
        if fresh and self._loop is not None and self._loop is not loop:
            return None  # probed on another loop a moment ago: that answer stands
        self._loop = loop
        self._started_at = self._clock()
        self._task = loop.create_task(self._run())
        return self._task

    def pending(self) -> asyncio.Task[str | None] | None:
        """The probe still running on this loop (started if due), else None. Never raises."""
        try:
            task = self.start()
        except Exception:
            _log.debug("starting the Akto probe failed", exc_info=True)
            return None
        return task if task is not None and not task.done() else None

    @staticmethod
    async def wait(task: asyncio.Task[str | None] | None, deadline: float) -> None:
        """Let ``task`` finish (and warn) until ``deadline`` (loop time). Never raises."""
        if task is None or task.done():
            return
        try:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining > 0:
                await asyncio.wait({task}, timeout=remaining)
        except Exception:
            _log.debug("waiting for the Akto probe failed", exc_info=True)

    async def _run(self) -> str | None:
        try:
            url = ingest_data_url(self._settings.ingestion_url)
            result = await self._client.post(url, _PROBE_BODY)
            fault = probe_fault(result.status, result.error)
        except Exception as exc:
            _log.debug("the Akto probe failed: %s", type(exc).__name__)
            return None
        self.fault = fault
        if fault is not None:
            self._warn(fault)
        return fault

    def _warn(self, fault: str) -> None:
        closed = self._settings.fail_mode == "closed"
        outcome = (
            "DENIED (AKTO_FAIL_MODE=closed)"
            if closed
            else "ALLOWED WITHOUT A VERDICT (AKTO_FAIL_MODE=open)"
        )
        _log.warning(
            "akto_otel: Akto at %s %s: until it answers, every guarded prompt, tool call "
            "and answer is %s; run `akto-otel doctor`",
            redact_url(self._settings.ingestion_url),
            _CAUSE.get(fault, f"cannot be used ({fault})"),
            outcome,
            extra={
                "akto_probe": True,
                "akto_fault": fault,
                "akto_fail_mode": "closed" if closed else "open",
            },
        )
