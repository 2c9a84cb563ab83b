"""AktoSpanProcessor: the Akto records of finished hook spans, shipped in batches.

The hooks attach the contract's records to the span they belong to; when that span
ends, the processor queues them for a background worker (the OpenTelemetry SDK's
own batch machinery: a bounded deque, a worker thread, flush and shutdown), which
posts them to Akto: ``{"batchData": [...]}`` to ``/api/ingestData`` in ``batch``
mode, one record at a time to ``/api/http-proxy?...&ingest_data=true`` in ``proxy``
mode (and always for records that ask for server-side guardrails). Spans without
records (the rest of the app's spans) are ignored. The agent's event loop never
waits for any of this.

Usage::

    from opentelemetry.sdk.trace import TracerProvider
    from akto_otel.config import Settings
    from akto_otel.exporter import AktoSpanProcessor

    provider = TracerProvider()
    processor = AktoSpanProcessor(Settings.from_env())
    provider.add_span_processor(processor)
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry.context import Context
from opentelemetry.sdk._shared_internal import BatchProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Span as ApiSpan

from akto_otel.config import Settings
from akto_otel.contract import (
    encode_ingest_item,
    encode_record,
    http_proxy_url,
    ingest_data_url,
    join_ingest_items,
)
from akto_otel.guardrails import error_kind, tls_context

__all__ = ["AktoSpanProcessor", "ExportStats", "PendingRecord", "RecordExporter"]

_log = logging.getLogger("akto_otel.exporter")

#: Stay under the server's 10 Mi body limit on /api/ingestData.
MAX_BATCH_BYTES = 9 * 1024 * 1024
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class PendingRecord:
    """One record on its way to Akto, with the flags its request needs."""

    record: dict[str, Any]
    key: str
    guardrails: bool = False
    response_guardrails: bool = False

    @property
    def needs_proxy(self) -> bool:
        return self.guardrails or self.response_guardrails


class ExportStats:
    """Thread-safe counters of what happened to records (also fed to metrics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0
        self.failures: dict[str, int] = {}
        self.listeners: list[Callable[[str, int, str], None]] = []
        self.duration_listeners: list[Callable[[float], None]] = []

    def add(self, what: str, count: int, reason: str = "") -> None:
        if count <= 0:
            return
        with self._lock:
            setattr(self, what, getattr(self, what) + count)
            if reason:
                self.failures[reason] = self.failures.get(reason, 0) + count
        for listener in self.listeners:
            try:
                listener(what, count, reason)
            except Exception:  # a metrics callback must not break delivery
                _log.debug("export stats listener failed", exc_info=True)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "exported": self.exported,
                "failed": self.failed,
                "dropped": self.dropped,
                "retried": self.retried,
            }


class _QueueMetrics:
    """The SDK batch processor's metrics hook: counts queue drops exactly."""

    def __init__(self, stats: ExportStats) -> None:
        self._stats = stats
        self.queue_size: Callable[[], int] = lambda: 0

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        self.queue_size = get_queue_size

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self._stats.add("dropped", count, error_type)

    def finish_items(self, count: int) -> None:
        pass


class RecordExporter:
    """Posts batches of :class:`PendingRecord` to Akto with bounded retries."""

    def __init__(
        self,
        settings: Settings,
        stats: ExportStats,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._retry_timeout = settings.export_retry_timeout
        self._give_up_at = float("inf")
        self._transport = transport
        self._client: httpx.Client | None = None
        self._stopping = threading.Event()
        self._taken_lock = threading.Lock()
        self.taken = 0
        self._headers = {"Content-Type": "application/json"}
        if settings.token:
            self._headers["Authorization"] = settings.token

    def _http(self) -> httpx.Client:
        if self._client is None:
            t = self._settings.timeout
            self._client = httpx.Client(
                timeout=httpx.Timeout(t, connect=t, read=t, write=t, pool=t),
                verify=tls_context(self._settings),
                transport=self._transport,
                trust_env=False,
                follow_redirects=False,
            )
        return self._client

    def export(self, batch: list[PendingRecord], /) -> None:
        with self._taken_lock:
            self.taken += len(batch)
        if not batch:
            return
        if not self._settings.ingestion_url:
            self._stats.add("failed", len(batch), "not_configured")
            return
        start = time.perf_counter()
        proxy = [p for p in batch if p.needs_proxy or self._settings.delivery == "proxy"]
        bulk = [p for p in batch if not (p.needs_proxy or self._settings.delivery == "proxy")]
        for item in proxy:
            self._deliver_one(item)
        for chunk in _chunks(bulk, MAX_BATCH_BYTES):
            self._deliver_batch(chunk)
        elapsed = time.perf_counter() - start
        for listener in self._stats.duration_listeners:
            try:
                listener(elapsed)
            except Exception:
                _log.debug("export duration listener failed", exc_info=True)

    def _deliver_one(self, item: PendingRecord) -> None:
        url = http_proxy_url(
            self._settings.ingestion_url,
            self._settings.connector,
            guardrails=item.guardrails,
            response_guardrails=item.response_guardrails,
            ingest_data=True,
        )
        status, kind = self._post(url, encode_record(item.record), [item.key])
        if status is not None and 200 <= status < 300:
            self._stats.add("exported", 1)
        else:
            self._stats.add("failed", 1, kind)

    def _deliver_batch(self, items: Sequence[tuple[PendingRecord, bytes]]) -> None:
        url = ingest_data_url(self._settings.ingestion_url)
        status, kind = self._post(
            url, join_ingest_items([encoded for _, encoded in items]), [i.key for i, _ in items]
        )
        if status is not None and 200 <= status < 300:
            self._stats.add("exported", len(items))
        elif status is not None and 400 <= status < 500 and len(items) > 1:
            # One bad record must not sink the rest: split and find it.
            middle = len(items) // 2
            self._deliver_batch(items[:middle])
            self._deliver_batch(items[middle:])
        else:
            self._stats.add("failed", len(items), kind)
            _log.warning("dropping %d record(s) Akto did not take: %s", len(items), kind)

    def _post(self, url: str, body: bytes, keys: list[str]) -> tuple[int | None, str]:
        """POST with retries; return (final status or None, error kind)."""
        headers = dict(self._headers)
        headers["Idempotency-Key"] = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        deadline = min(time.monotonic() + self._retry_timeout, self._give_up_at)
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = self._http().post(url, content=body, headers=headers)
                status: int | None = response.status_code
                kind = "" if 200 <= response.status_code < 300 else f"http_{response.status_code}"
                if response.status_code == 429:
                    retry_after = _retry_after(response.headers.get("retry-after"))
                retryable = response.status_code in _RETRYABLE_STATUS
            except Exception as exc:
                status, kind, retryable = None, error_kind(exc), True
            if not retryable:
                return status, kind
            attempt += 1
            delay = retry_after if retry_after is not None else _backoff(attempt)
            if time.monotonic() + delay > min(deadline, self._give_up_at):
                return status, kind or "retries_exhausted"
            self._stats.add("retried", len(keys))
            self._stopping.wait(delay)

    def begin_shutdown(self, deadline: float) -> None:
        """Stop retrying at ``deadline`` (monotonic): shutdown must not wait forever."""
        self._give_up_at = deadline

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        self._give_up_at = time.monotonic()
        self._stopping.set()
        if self._client is not None:
            self._client.close()
            self._client = None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return min(60.0, max(0.0, float(value)))
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: 0.1 s doubling, capped at 5 s."""
    return random.uniform(0, min(5.0, 0.1 * (2 ** (attempt - 1))))


def _chunks(
    items: Sequence[PendingRecord], max_bytes: int
) -> list[list[tuple[PendingRecord, bytes]]]:
    """Items with their ingestData encoding (done once), split to stay under ``max_bytes``."""
    chunks: list[list[tuple[PendingRecord, bytes]]] = []
    current: list[tuple[PendingRecord, bytes]] = []
    size = 0
    for item in items:
        encoded = encode_ingest_item(item.record)
        if current and size + len(encoded) > max_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append((item, encoded))
        size += len(encoded) + 2
    if current:
        chunks.append(current)
    return chunks


class AktoSpanProcessor(SpanProcessor):
    """Ships the Akto records of hook spans when those spans end."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int = 512,
        schedule_delay_millis: float = 200,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.stats = ExportStats()
        self._pending: dict[int, list[PendingRecord]] = {}
        self._capacity = max_queue_size or settings.export_queue_size
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self._queue_metrics = _QueueMetrics(self.stats)
        self._exporter = RecordExporter(settings, self.stats, transport=transport)
        self._batch: BatchProcessor[PendingRecord] = BatchProcessor(
            self._exporter,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
            export_timeout_millis=settings.timeout * 1000,
            # Slack for the batch the worker may hold: admission below keeps the
            # SDK's deque from ever overflowing, so our drop count is exact.
            max_queue_size=self._capacity + max_export_batch_size,
            exporting="AktoRecord",
            metrics=self._queue_metrics,
        )
        self._shutdown = False

    @property
    def queue_size(self) -> int:
        return self._queue_metrics.queue_size()

    @property
    def exporter(self) -> RecordExporter:
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
        """Hold ``record`` until ``span`` ends (at once when the span is not recorded)."""
        context = span.get_span_context()
        item = PendingRecord(
            record=record,
            key=f"{context.trace_id:032x}-{context.span_id:016x}-{kind}",
            guardrails=guardrails,
            response_guardrails=response_guardrails,
        )
        if not span.is_recording() or not context.is_valid:
            self._emit(item)
            return
        self._pending.setdefault(context.span_id, []).append(item)

    def _emit(self, item: PendingRecord) -> None:
        if self._shutdown:
            self.stats.add("dropped", 1, "already_shutdown")
            return
        with self._admit_lock:
            # Items admitted minus items the exporter took: what is queued now (or
            # popped and about to be exported, which errs on the side of dropping).
            if self._admitted - self._exporter.taken >= self._capacity:
                full = True
            else:
                full = False
                self._admitted += 1
        if full:
            self.stats.add("dropped", 1, "queue_full")
            return
        self._batch.emit(item)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        items = self._pending.pop(context.span_id, None)
        if items:
            for item in items:
                self._emit(item)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._shutdown:
            return False
        return bool(self._batch.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Deliver what is queued, for at most ``export_shutdown_timeout`` seconds."""
        if self._shutdown:
            return
        # Records of spans that never ended still go out.
        for items in list(self._pending.values()):
            for item in items:
                self._emit(item)
        self._pending.clear()
        self._shutdown = True
        timeout = self.settings.export_shutdown_timeout
        self._exporter.begin_shutdown(time.monotonic() + timeout)
        self._batch.shutdown(timeout_millis=int(timeout * 1000))
