"""Delivery of Akto records: an OpenTelemetry ``SpanExporter`` and the HTTP sender behind it.

:class:`AktoSpanExporter` is a public-API ``SpanExporter``: the SDK's own
``BatchSpanProcessor`` runs it (queue, worker thread, flush, shutdown). The spans it
exports are :class:`RecordSpan` carriers that :class:`~akto_otel.processor.AktoSpanProcessor`
builds when a hook span ends, each holding that span's records; any other span is
ignored. :class:`RecordExporter` posts the records: ``{"batchData": [...]}`` to
``/api/ingestData`` in ``batch`` mode (records that ask for server-side guardrails,
observe mode, carry ``"publishToGuardrails": true``), one record at a time to
``/api/http-proxy?...&ingest_data=true`` in ``proxy`` mode (and for observe-mode
records when ``AKTO_OBSERVE_DELIVERY=proxy``). Retries with backoff and jitter,
``Retry-After``, bisection of a rejected batch, idempotency keys and a bounded
shutdown live here.

Why carriers and not span attributes: a record holds the prompt, tool input and
output in full (up to megabytes); as attributes or events on the hook span they
would reach every exporter of the app's pipeline (content the app may have chosen
not to capture) and hit attribute length limits. A carrier is a ``ReadableSpan``
subclass that only our own batch processor ever sees.

Usage (what ``AktoSpanProcessor`` does; the exporter alone exports only carriers)::

    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from akto_otel.exporter import AktoSpanExporter

    exporter = AktoSpanExporter()       # settings from AKTO_* variables
    batch = BatchSpanProcessor(exporter)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext

from akto_otel import semconv
from akto_otel.config import Settings
from akto_otel.contract import (
    encode_ingest_item,
    encode_record,
    http_proxy_url,
    ingest_data_url,
    ingest_record,
    join_ingest_items,
)
from akto_otel.guardrails import environment_proxy, error_kind, tls_context

if TYPE_CHECKING:
    from akto_otel.processor import AktoSpanProcessor

__all__ = [
    "MAX_BATCH_BYTES",
    "AktoSpanExporter",
    "AktoSpanProcessor",
    "ExportStats",
    "PendingRecord",
    "RecordExporter",
    "RecordSpan",
]

_log = logging.getLogger("akto_otel.exporter")

#: Stay under the server's 10 Mi body limit on /api/ingestData.
MAX_BATCH_BYTES = 9 * 1024 * 1024
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_EMPTY_RESOURCE = Resource.get_empty()


@dataclass(frozen=True)
class PendingRecord:
    """One record on its way to Akto, with the flags its request needs.

    ``guardrails`` / ``response_guardrails`` ask Akto to judge the record on
    ingestion (observe mode); ``key`` (``<trace id>-<span id>-<kind>``) feeds the
    request's ``Idempotency-Key``.
    """

    record: dict[str, Any]
    key: str
    guardrails: bool = False
    response_guardrails: bool = False

    @property
    def needs_proxy(self) -> bool:
        """Whether the record asks for server-side guardrails (observe mode)."""
        return self.guardrails or self.response_guardrails


class RecordSpan(ReadableSpan):
    """A carrier: the Akto records of one ended hook span, as the SDK's batch processor queues them.

    Always sampled, so ``BatchSpanProcessor`` takes it whatever the app's sampler said;
    it never reaches any processor but the one :class:`AktoSpanProcessor` owns.
    """

    def __init__(self, context: SpanContext, records: tuple[PendingRecord, ...]) -> None:
        super().__init__(name=semconv.SCOPE_RECORDS, context=context, resource=_EMPTY_RESOURCE)
        self.records = records


class ExportStats:
    """Thread-safe counters of what happened to records (also fed to metrics).

    ``listeners`` are called with ``(outcome, count, reason)`` for every change,
    ``duration_listeners`` with the seconds one export took.
    """

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
        """Count ``count`` records as ``what`` (exported, failed, dropped, retried)."""
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

    def took(self, seconds: float) -> None:
        """Tell the duration listeners one export took ``seconds``."""
        for listener in self.duration_listeners:
            try:
                listener(seconds)
            except Exception:  # a metrics callback must not break delivery
                _log.debug("export duration listener failed", exc_info=True)

    def snapshot(self) -> dict[str, int]:
        """The four counters at one instant."""
        with self._lock:
            return {
                "exported": self.exported,
                "failed": self.failed,
                "dropped": self.dropped,
                "retried": self.retried,
            }


def encode_observed_item(record: dict[str, Any]) -> bytes:
    """An observe-mode record inside an ingestData batch: asks Akto to judge it too.

    The ingestData record (byte for byte :func:`~akto_otel.contract.encode_ingest_item`'s
    fields) plus ``"publishToGuardrails": true`` last.
    """
    item = ingest_record(record)
    item["publishToGuardrails"] = True
    return json.dumps(item).encode("utf-8")


class RecordExporter:
    """Posts batches of :class:`PendingRecord` to Akto with bounded retries.

    Call :meth:`export` from one worker thread; it never raises.
    """

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
        at_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # The parent's pooled connections are not ours to use (or close) in the child.
        self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            t = self._settings.timeout
            self._client = httpx.Client(
                timeout=httpx.Timeout(t, connect=t, read=t, write=t, pool=t),
                verify=tls_context(self._settings),
                transport=self._transport,
                # The proxy urllib would use (HTTPS_PROXY, NO_PROXY); never ~/.netrc.
                proxy=None if self._transport else environment_proxy(self._settings.ingestion_url),
                trust_env=False,
                follow_redirects=False,
            )
        return self._client

    def _route(self, item: PendingRecord) -> str:
        """``proxy`` (one /api/http-proxy call) or ``batch`` (ingestData) for ``item``."""
        if self._settings.delivery == "proxy":
            return "proxy"
        if item.needs_proxy and self._settings.observe_delivery == "proxy":
            return "proxy"
        return "batch"

    def export(self, batch: Sequence[PendingRecord], /) -> bool:
        """Deliver ``batch``; True when every record was delivered."""
        with self._taken_lock:
            self.taken += len(batch)
        if not batch:
            return True
        if not self._settings.ingestion_url:
            self._stats.add("failed", len(batch), "not_configured")
            return False
        start = time.perf_counter()
        delivered = 0
        bulk: list[PendingRecord] = []
        for item in batch:
            if self._route(item) == "proxy":
                delivered += self._deliver_one(item)
            else:
                bulk.append(item)
        for chunk in _chunks(bulk, MAX_BATCH_BYTES):
            delivered += self._deliver_batch(chunk)
        self._stats.took(time.perf_counter() - start)
        return delivered == len(batch)

    def _deliver_one(self, item: PendingRecord) -> int:
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
            return 1
        self._stats.add("failed", 1, kind)
        return 0

    def _deliver_batch(self, items: Sequence[tuple[PendingRecord, bytes]]) -> int:
        url = ingest_data_url(self._settings.ingestion_url)
        status, kind = self._post(
            url, join_ingest_items([encoded for _, encoded in items]), [i.key for i, _ in items]
        )
        if status is not None and 200 <= status < 300:
            self._stats.add("exported", len(items))
            return len(items)
        if status is not None and 400 <= status < 500 and len(items) > 1:
            # One bad record must not sink the rest: split and find it.
            middle = len(items) // 2
            return self._deliver_batch(items[:middle]) + self._deliver_batch(items[middle:])
        self._stats.add("failed", len(items), kind)
        _log.warning("dropping %d record(s) Akto did not take: %s", len(items), kind)
        return 0

    def _post(self, url: str, body: bytes, keys: list[str]) -> tuple[int | None, str]:
        """POST with retries; return (final status or None, error kind)."""
        if time.monotonic() >= self._give_up_at:
            return None, "shutdown_timeout"
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
        """Stop retrying now and close the connection pool."""
        self._give_up_at = time.monotonic()
        self._stopping.set()
        if self._client is not None:
            self._client.close()
            self._client = None


class AktoSpanExporter(SpanExporter):
    """Exports the Akto records carried by :class:`RecordSpan` spans; ignores other spans.

    Built with no arguments it reads its settings from the environment, like the
    SDK's exporters::

        exporter = AktoSpanExporter()                 # AKTO_DATA_INGESTION_URL, ...
        exporter = AktoSpanExporter(Settings(ingestion_url="http://127.0.0.1:9091"))

    ``stats`` counts what happened to every record; ``records`` is the HTTP sender.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.stats = ExportStats()
        self.records = RecordExporter(self.settings, self.stats, transport=transport)

    @property
    def taken(self) -> int:
        """Records handed to :meth:`export` so far (delivered, failed or in flight)."""
        return self.records.taken

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Deliver the records of the carriers in ``spans``."""
        items = [item for span in spans if isinstance(span, RecordSpan) for item in span.records]
        try:
            ok = self.records.export(items)
        except Exception:  # export must never raise into the SDK's worker
            _log.exception("exporting %d Akto record(s) failed", len(items))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def begin_shutdown(self, deadline: float) -> None:
        """Stop retrying at ``deadline`` (``time.monotonic()``)."""
        self.records.begin_shutdown(deadline)

    def shutdown(self) -> None:
        """Stop retrying and close connections."""
        self.records.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered here: the batch processor holds the queue."""
        return True


def at_fork_in_child(method: Callable[[], None]) -> None:
    """Call ``method`` in a forked child for as long as its object lives."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.WeakMethod(method)

    def _call() -> None:
        alive = ref()
        if alive is not None:
            alive()

    os.register_at_fork(after_in_child=_call)


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


#: Records encoded between two GIL releases of the delivery worker (~80 µs of work).
_YIELD_EVERY = 8


def _chunks(
    items: Sequence[PendingRecord], max_bytes: int
) -> list[list[tuple[PendingRecord, bytes]]]:
    """Items with their ingestData encoding (done once), split to stay under ``max_bytes``."""
    chunks: list[list[tuple[PendingRecord, bytes]]] = []
    current: list[tuple[PendingRecord, bytes]] = []
    size = 0
    for index, item in enumerate(items):
        if index % _YIELD_EVERY == _YIELD_EVERY - 1:
            # Let the event loop thread run: a 512-record batch is ~5 ms of encoding,
            # and without a pause a hook waiting for the GIL waits up to the 5 ms
            # switch interval (the hook's p99).
            time.sleep(0)  # pragma: no mutate
        if item.needs_proxy:
            encoded = encode_observed_item(item.record)
        else:
            encoded = encode_ingest_item(item.record)
        if current and size + len(encoded) > max_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append((item, encoded))
        size += len(encoded) + 2
    if current:
        chunks.append(current)
    return chunks


def __getattr__(name: str) -> Any:
    # AktoSpanProcessor moved to akto_otel.processor; the old import path still works.
    if name == "AktoSpanProcessor":
        from akto_otel.processor import AktoSpanProcessor

        return AktoSpanProcessor
    raise AttributeError(f"module 'akto_otel.exporter' has no attribute {name!r}")
