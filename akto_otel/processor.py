"""AktoSpanProcessor: the Akto records of finished hook spans, shipped in batches.

The hooks attach the contract's records to the span they belong to
(:meth:`AktoSpanProcessor.attach`); when that span ends, the processor hands a
:class:`~akto_otel.exporter.RecordSpan` carrying them to the SDK's public
``BatchSpanProcessor``, which runs an :class:`~akto_otel.exporter.AktoSpanExporter`
on its worker thread. Spans without records (the rest of the app's spans) are
ignored; the agent's event loop never waits for delivery. Records are held on the
processor side, keyed by span id, never put on the span itself (see
``akto_otel.exporter`` for why).

Built with no arguments it reads ``AKTO_*`` from the environment, like the SDK's
exporters. A guard (``AktoGuardrails``, ``configure()``) on a provider that already
has an ``AktoSpanProcessor`` uses that one instead of adding its own.

Usage::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from akto_otel import AktoGuardrails, AktoSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(AktoSpanProcessor())   # AKTO_DATA_INGESTION_URL, ...
    trace.set_tracer_provider(provider)
    guard = AktoGuardrails()                           # ships through the processor above
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span as ApiSpan
from opentelemetry.trace import SpanContext, TraceFlags

from akto_otel.config import Settings
from akto_otel.exporter import (
    AktoSpanExporter,
    ExportStats,
    PendingRecord,
    RecordSpan,
    at_fork_in_child,
)
from akto_otel.logs import RateLimitedLog
from akto_otel.otlp_logs import AktoLogExporter

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider

__all__ = ["AktoSpanProcessor", "find_processors", "processor_for"]

_log = logging.getLogger("akto_otel.processor")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_PROBE_KEY = otel_context.create_key("akto_otel.processor_probe")
_WAKE_UP = SpanContext(0, 1, is_remote=False, trace_flags=_SAMPLED)
_DROP_REASONS = {
    "queue_full": (
        "the delivery queue is full (AKTO_EXPORT_QUEUE_SIZE={capacity} records; Akto is "
        "unreachable or slower than the agent), the oldest records gave way"
    ),
    "already_shutdown": "attached after the processor was shut down",
}


class AktoSpanProcessor(SpanProcessor):
    """Ships the Akto records of hook spans when those spans end.

    ``settings`` default to ``Settings.from_env()``. ``max_queue_size`` (records,
    default ``AKTO_EXPORT_QUEUE_SIZE``) bounds what waits for delivery; past it
    records are dropped and counted in ``stats``. ``exporter`` replaces the
    :class:`AktoSpanExporter` built from ``settings``. With ``AKTO_DELIVERY=otlp`` the
    records leave as Claude Code log events through ``logger_provider`` (default: the
    global one; see :mod:`akto_otel.otlp_logs`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int = 512,
        schedule_delay_millis: float = 200,
        transport: httpx.BaseTransport | None = None,
        exporter: AktoSpanExporter | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        if exporter is not None:
            self.settings = exporter.settings if settings is None else settings
            self._exporter = exporter
        else:
            self.settings = settings if settings is not None else Settings.from_env()
            if self.settings.delivery == "otlp":
                self._exporter = AktoLogExporter(self.settings, logger_provider=logger_provider)
            else:
                self._exporter = AktoSpanExporter(self.settings, transport=transport)
        self.stats: ExportStats = self._exporter.stats
        self._drops = RateLimitedLog(_log)
        self.stats.listeners.append(self._tell_drops)
        self._pending: dict[int, list[PendingRecord]] = {}
        self._capacity = max_queue_size or self.settings.export_queue_size
        self._admitted = 0
        self._admit_lock = threading.Lock()
        # Admission below keeps the SDK's queue from ever overflowing with live
        # records (it would drop them silently), so the drop count is ours and exact.
        # Evicted carriers (emptied, counted) stay in it until the worker skips them:
        # room for a queue's worth of those, and for the wake-up call.
        self._batch = BatchSpanProcessor(
            self._exporter,
            max_queue_size=2 * self._capacity + max_export_batch_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
            export_timeout_millis=self.settings.timeout * 1000,
        )
        # Carriers handed to the SDK's queue, oldest first, until taken or evicted.
        self._queued: collections.deque[RecordSpan] = collections.deque()
        self._evicted_queued = 0
        self._closing = False
        self._shutdown = False
        self._exporter.when_held(self._wake_worker)
        at_fork_in_child(self._after_fork)

    def _tell_drops(self, outcome: str, count: int, reason: str) -> None:
        # Dropped records are counted in metrics; the log says so too, a line a minute.
        if outcome == "dropped":
            why = _DROP_REASONS.get(reason, reason)
            self._drops.log(
                logging.WARNING,
                reason,
                "dropped %(count)d Akto record(s) since %(since)s: %(why)s",
                count,
                why=why.format(capacity=self._capacity),
            )

    def _after_fork(self) -> None:
        # The SDK's batch processor drops the parent's queue in the child: so do we.
        self._admitted = self._exporter.settled
        self._queued = collections.deque()
        self._evicted_queued = 0

    def _wake_worker(self) -> None:
        # The exporter handed back with records still held: an empty carrier makes
        # the SDK's worker call it again even when nothing new is queued.
        if not self._shutdown:
            self._batch.on_end(RecordSpan(_WAKE_UP, ()))

    @property
    def queue_size(self) -> int:
        """Records waiting for delivery: queued, or taken by the worker and still retried."""
        return max(0, self._admitted - self._exporter.settled - self._evicted_queued)

    @property
    def exporter(self) -> AktoSpanExporter:
        """The exporter the SDK's batch processor runs."""
        return self._exporter

    def attach(
        self,
        span: ApiSpan,
        record: dict[str, Any],
        *,
        kind: str,
        guardrails: bool = False,
        response_guardrails: bool = False,
    ) -> None:
        """Hold ``record`` until ``span`` ends (queue it at once when the span is not recorded).

        ``kind`` names the record within its span (``"prompt"``, ``"tool.result"``,
        ...) for the idempotency key; the flags ask Akto to judge it on ingestion.
        """
        context = span.get_span_context()
        item = PendingRecord(
            record=record,
            key=f"{context.trace_id:032x}-{context.span_id:016x}-{kind}",
            guardrails=guardrails,
            response_guardrails=response_guardrails,
        )
        if self._closing or not span.is_recording() or not context.is_valid:
            self._emit(context, [item])  # queued now, or counted as dropped after shutdown
            return
        self._pending.setdefault(context.span_id, []).append(item)

    def _emit(self, context: SpanContext, items: list[PendingRecord]) -> None:
        if self._shutdown:
            self.stats.add("dropped", len(items), "already_shutdown")
            return
        count = len(items)
        if context.trace_flags.sampled and not context.is_remote:
            carried = context  # the ended span's own: no second context per record
        else:
            carried = SpanContext(
                context.trace_id, context.span_id, is_remote=False, trace_flags=_SAMPLED
            )
        carrier = RecordSpan(carried, tuple(items))
        evicted_queued = 0
        with self._admit_lock:
            while self._queued and self._queued[0].decided:
                self._queued.popleft()
            # Records admitted minus records settled: what waits in the SDK's queue or
            # is held by the retrying exporter. When full, the oldest give way.
            over = self.queue_size + count - self._capacity
            if over > 0:
                evicted_held = self._exporter.evict_oldest(over)
                evicted_queued = self._evict_queued(over - evicted_held)
                over -= evicted_held + evicted_queued
            full = over > 0
            if not full:
                self._admitted += count
                self._queued.append(carrier)
        # Counted (and maybe logged) outside the lock every hook's attach takes.
        self.stats.add("dropped", evicted_queued, "queue_full")
        if full:
            self.stats.add("dropped", count, "queue_full")
            return
        self._batch.on_end(carrier)

    def _evict_queued(self, count: int) -> int:
        """Give up on at least ``count`` records of the oldest queued carriers (under the
        admission lock, after the exporter gave up its held ones); how many."""
        queued = 0
        while queued < count and self._queued:
            carrier = self._queued.popleft()
            if carrier.claim("evicted"):
                queued += len(carrier.records)
                carrier.records = ()  # the SDK's queue keeps the carrier, not the content
        self._evicted_queued += queued
        return queued

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Answer :func:`find_processors`' probe; nothing else happens at span start."""
        if parent_context is not None:
            found = otel_context.get_value(_PROBE_KEY, parent_context)
            if isinstance(found, list):
                found.append(self)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the records attached to ``span``, if any."""
        context = span.context
        if context is None:
            return
        items = self._pending.pop(context.span_id, None)
        if items:
            self._emit(context, items)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver every queued record now (on the caller's thread)."""
        if self._shutdown:
            return False
        self._exporter.begin_flush(time.monotonic() + timeout_millis / 1000)
        try:
            flushed = self._batch.force_flush(timeout_millis)
        finally:
            self._exporter.end_flush()
        # With OTLP delivery the records then sit in the logs pipeline: flush it too.
        return self._exporter.force_flush(timeout_millis) and flushed and not self._exporter.held

    def shutdown(self) -> None:
        """Deliver what is queued, for at most ``export_shutdown_timeout`` seconds.

        Records of spans that never ended are queued first, so they go out too.
        """
        if self._shutdown:
            return
        self._closing = True
        pending, self._pending = self._pending, {}
        for span_id, items in list(pending.items()):
            # The carrier's trace id is never read; the records keep their own keys.
            self._emit(SpanContext(0, span_id, is_remote=False), items)
        self._shutdown = True
        timeout = self.settings.export_shutdown_timeout
        self._exporter.begin_shutdown(time.monotonic() + timeout)
        self._batch.shutdown()  # type: ignore[no-untyped-call]
        self._drops.flush()


def find_processors(provider: TracerProvider) -> list[AktoSpanProcessor]:
    """The :class:`AktoSpanProcessor` instances already on ``provider``, in order.

    Found through public API only: a probe span is started (never ended, so no
    exporter sees it) with a context value each ``AktoSpanProcessor`` answers in
    ``on_start``, under a sampled remote parent. A sampler that drops it anyway
    (``ALWAYS_OFF``, a bare ratio sampler) hides them (empty list).
    """
    found: list[AktoSpanProcessor] = []
    # A sampled remote parent: parent-based samplers (the SDK's default, and
    # ParentBased(TraceIdRatioBased(...))) then record the probe.
    parent = SpanContext(
        random.getrandbits(128) or 1,
        random.getrandbits(64) or 1,
        is_remote=True,
        trace_flags=_SAMPLED,
    )
    ctx = trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent))
    ctx = otel_context.set_value(_PROBE_KEY, found, ctx)
    try:
        provider.get_tracer("akto_otel.probe").start_span("akto_otel.probe", context=ctx)
    except Exception:
        # An app's processor that raises in on_start must not stop the guard from
        # being built: the ones it hid are not found, and the guard adds its own.
        _log.warning("a span processor raised while akto_otel looked for its own", exc_info=True)
    return found


_GUARD_MADE: weakref.WeakSet[AktoSpanProcessor] = weakref.WeakSet()


def processor_for(
    provider: TracerProvider, settings: Settings, processor: AktoSpanProcessor | None = None
) -> AktoSpanProcessor:
    """The processor a guard with ``settings`` ships its records through on ``provider``.

    ``processor`` when given (added to the provider unless already on it); else an
    ``AktoSpanProcessor`` the app put on the provider; else a new one built from
    ``settings`` and added. Guards never share the processors they made: two guards
    with different settings on one provider each deliver where their settings say.
    """
    present = find_processors(provider)
    if processor is not None:
        if processor not in present:
            provider.add_span_processor(processor)
        return processor
    apps = [p for p in present if p not in _GUARD_MADE]
    if apps:
        from akto_otel.redaction import redact_url

        theirs, ours = apps[0].settings, settings
        for variable, mine, guards in (
            ("AKTO_DATA_INGESTION_URL", theirs.ingestion_url, ours.ingestion_url),
            ("AKTO_DELIVERY", theirs.delivery, ours.delivery),
        ):
            if mine != guards:
                _log.warning(
                    "using the app's AktoSpanProcessor (%s=%s), not the guard's %s=%s",
                    variable,
                    redact_url(mine),
                    variable,
                    redact_url(guards),
                )
        return apps[0]
    made = AktoSpanProcessor(settings)
    _GUARD_MADE.add(made)
    provider.add_span_processor(made)
    return made
