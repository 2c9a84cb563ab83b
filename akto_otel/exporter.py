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
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    join_ingest_items,
)
from akto_otel.credentials import akto_auth
from akto_otel.guardrails import environment_proxy, error_kind, tls_context

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "AktoSpanExporter",
    "ExportStats",
    "PendingRecord",
    "RecordExporter",
    "RecordSpan",
]

_log = logging.getLogger("akto_otel.exporter")

#: Stay under the server's 10 Mi body limit on /api/ingestData.
MAX_BATCH_BYTES = 9 * 1024 * 1024
#: Records per request: after an outage the held records go out in requests of this
#: size, each answered well within AKTO_TIMEOUT (one giant request could outlive it
#: and come back as a duplicate).
MAX_BATCH_RECORDS = 512
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_EMPTY_RESOURCE = Resource.get_empty()
_CLAIM_LOCK = threading.Lock()


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
        self._fate = ""

    def claim(self, fate: str) -> bool:
        """Decide once what becomes of the carrier: ``taken`` by an exporter or ``evicted``.

        False when it was already decided: the worker and an eviction racing for one
        carrier never both count it.
        """
        with _CLAIM_LOCK:
            if self._fate:
                return False
            self._fate = fate
            return True

    @property
    def decided(self) -> bool:
        """Whether the carrier was taken or evicted."""
        return bool(self._fate)


def claimed(spans: Sequence[ReadableSpan]) -> list[RecordSpan]:
    """The carriers among ``spans`` this export takes (not evicted from the queue meanwhile)."""
    return [span for span in spans if isinstance(span, RecordSpan) and span.claim("taken")]


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
    return encode_ingest_item(record, publish_to_guardrails=True)


@dataclass(eq=False)
class _Held:
    """One record taken from the queue and not yet settled (delivered, failed or evicted)."""

    item: PendingRecord
    encoded: bytes
    sending: bool = False
    evicted: bool = False


class RecordExporter:
    """Posts batches of :class:`PendingRecord` to Akto, retrying as long as they are held.

    Records the worker took stay held here, oldest first, until Akto takes them, a
    4xx refuses them, the queue needs their place (:meth:`evict_oldest`) or the
    shutdown deadline passes: no timer gives up on them. One :meth:`export` call
    retries for at most ``AKTO_EXPORT_RETRY_TIMEOUT`` seconds (or until a flush
    deadline), then hands the worker back with the records still held and calls
    ``on_held`` so the worker comes back for them. Call :meth:`export` from one
    worker thread at a time; it never raises.
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
        self._flush_until = float("inf")
        self._transport = transport
        self._client: httpx.Client | None = None
        self._interrupt = threading.Event()
        self._lock = threading.Lock()
        self._held: list[_Held] = []
        self._failures = 0
        self._next_attempt_at = 0.0
        self._last_kind = ""
        self.taken = 0
        self.settled = 0
        self._lost = 0
        #: Called (on the worker thread) when an export hands back with records held.
        self.on_held: Callable[[], None] | None = None
        self._wake_up_queued = False
        # The same rule as the verdict client's and doctor's (akto_otel.credentials).
        self._auth = akto_auth(settings.ingestion_url, settings.token)
        self._headers = {"Content-Type": "application/json", **self._auth.headers}
        at_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # The parent's pooled connections are not ours to use (or close) in the child,
        # and the records it holds are the parent's to deliver.
        self._client = None
        self._lock = threading.Lock()
        self._held = []
        self.settled = self.taken
        self._wake_up_queued = False

    @property
    def held(self) -> int:
        """Records taken from the queue and not yet settled."""
        with self._lock:
            return sum(1 for h in self._held if not h.evicted)

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
        """Take ``batch`` and deliver what is held; True when all of it was delivered."""
        with self._lock:
            self.taken += len(batch)
        if not self._settings.ingestion_url:
            self._settle_now(len(batch))
            self._stats.add("failed", len(batch), "not_configured")
            return not batch
        start = time.perf_counter()
        lost_before = self._lost
        self._hold(batch)
        if not self._held:
            return True
        self._deliver_held(time.monotonic() + self._retry_timeout)
        self._stats.took(time.perf_counter() - start)
        held = self.held
        if held and time.monotonic() < self._give_up_at:
            self._call_back_later()
        return not held and self._lost == lost_before

    def _call_back_later(self) -> None:
        # One wake-up call at a time: each is a carrier in the batch processor's queue.
        # None while a flush drains that queue (it would find the call and loop).
        flushing = self._flush_until != float("inf")
        if self.on_held is not None and not self._wake_up_queued and not flushing:
            self._wake_up_queued = True
            self.on_held()

    def woken(self) -> None:
        """The wake-up call ``on_held`` queued reached :meth:`export`."""
        self._wake_up_queued = False

    def _hold(self, batch: Sequence[PendingRecord]) -> None:
        bulk = [item for item in batch if self._route(item) == "batch"]
        held = [_Held(item, b"") for item in batch if self._route(item) == "proxy"]
        held += [_Held(item, encoded) for item, encoded in _encoded(bulk)]
        with self._lock:
            self._held.extend(held)

    def _settle_now(self, count: int) -> None:
        with self._lock:
            self.settled += count

    def evict_oldest(self, count: int) -> int:
        """Give up on up to ``count`` of the oldest held records so the queue can take new ones.

        They are counted dropped (``queue_full``) unless a request in flight delivers
        them; how many were given up on is returned.
        """
        with self._lock:
            victims = [h for h in self._held if not h.evicted][:count]
            count = len(victims)
            if not count:
                return 0
            if count == len([h for h in self._held if not h.evicted]):
                self._interrupt.set()  # nothing left to retry: let the worker take more
            for h in victims:
                h.evicted = True
            self.settled += count
            self._lost += count
            idle = [h for h in victims if not h.sending]
            if idle:
                gone = set(map(id, idle))
                self._held = [h for h in self._held if id(h) not in gone]
        self._stats.add("dropped", len(idle), "queue_full")
        return count

    def _take_chunk(self) -> list[_Held]:
        """The oldest held records one request carries, marked as being sent."""
        with self._lock:
            ready = [h for h in self._held if not h.evicted and not h.sending]
            proxied = [h for h in ready if not h.encoded]
            if proxied:
                chunk = proxied[:1]
            else:
                ready = ready[:MAX_BATCH_RECORDS]
                chunk = ready[: _leading_fit([len(h.encoded) for h in ready], MAX_BATCH_BYTES)]
            for h in chunk:
                h.sending = True
            return chunk

    def _settle(self, chunk: Sequence[_Held], outcome: str, kind: str = "") -> None:
        """Take ``chunk`` out of the held records as ``outcome`` (exported or failed)."""
        gone = set(map(id, chunk))
        with self._lock:
            for h in chunk:
                h.sending = False
            self._held = [h for h in self._held if id(h) not in gone]
            lost = [h for h in chunk if h.evicted]
            self.settled += len(chunk) - len(lost)
            if outcome != "exported":
                self._lost += len(chunk)
        if outcome == "exported":
            self._stats.add("exported", len(chunk))
            return
        self._stats.add("dropped", len(lost), "queue_full")
        self._stats.add(outcome, len(chunk) - len(lost), kind)

    def _release(self, chunk: Sequence[_Held]) -> None:
        """Keep ``chunk`` held for the next attempt; evicted ones leave now, dropped."""
        with self._lock:
            for h in chunk:
                h.sending = False
        evicted = [h for h in chunk if h.evicted]
        if evicted:
            gone = set(map(id, evicted))
            with self._lock:
                self._held = [h for h in self._held if id(h) not in gone]
            self._stats.add("dropped", len(evicted), "queue_full")

    def _deliver_held(self, hand_back_at: float) -> None:
        """Send held records, oldest first, until none is left or it is time to hand back."""
        while self.held:
            now = time.monotonic()
            if now < self._next_attempt_at:
                if self._next_attempt_at >= self._give_up_at:
                    self._fail_held(self._last_kind or "shutdown_timeout")
                    return
                if self._next_attempt_at > min(hand_back_at, self._flush_until):
                    return
                self._interrupt.wait(self._next_attempt_at - now)
                self._interrupt.clear()
                continue  # a flush or shutdown may have moved the deadlines
            if now >= self._give_up_at:
                self._fail_held(self._last_kind or "shutdown_timeout")
                return
            chunk = self._take_chunk()
            if not chunk:
                return
            try:
                delay = self._attempt(chunk)
            except Exception as exc:  # a bug must not hold records (or the queue) forever
                with self._lock:
                    stuck = [h for h in chunk if h.sending]
                self._settle(stuck, "failed", "export_error")
                _log.error("dropping %d Akto record(s): %s", len(stuck), type(exc).__name__)
                delay = None
            if delay is None:
                self._failures = 0
                self._next_attempt_at = 0.0
            else:
                self._next_attempt_at = time.monotonic() + delay

    def _fail_held(self, kind: str) -> None:
        with self._lock:
            waiting = [h for h in self._held if not h.sending]
        if waiting:
            self._settle(waiting, "failed", kind)
            _log.warning(
                "dropping %d record(s) still undelivered at the shutdown deadline: %s",
                len(waiting),
                kind,
            )

    def _attempt(self, chunk: list[_Held]) -> float | None:
        """One request for ``chunk`` (halved on a 4xx); the backoff before a retry, or None."""
        items = [h.item for h in chunk]
        if chunk[0].encoded:
            url = ingest_data_url(self._auth.base_url)
            body = join_ingest_items([h.encoded for h in chunk])
        else:
            item = items[0]
            url = http_proxy_url(
                self._auth.base_url,
                self._settings.connector,
                guardrails=item.guardrails,
                response_guardrails=item.response_guardrails,
                ingest_data=True,
            )
            body = encode_record(item.record)
        status, kind, retry_after = self._post(url, body, [i.key for i in items])
        if status is not None and 200 <= status < 300:
            self._settle(chunk, "exported")
            return None
        if status is None or status in _RETRYABLE_STATUS:
            self._last_kind = kind
            self._failures += 1
            self._stats.add("retried", len(chunk))
            self._release(chunk)
            return retry_after if retry_after is not None else _backoff(self._failures)
        if 400 <= status < 500 and len(chunk) > 1:
            # One bad record must not sink the rest: split and find it.
            middle = len(chunk) // 2
            delay = self._attempt(chunk[:middle])
            if delay is not None:
                self._release(chunk[middle:])
                return delay
            return self._attempt(chunk[middle:])
        self._settle(chunk, "failed", kind)
        _log.warning("dropping %d record(s) Akto did not take: %s", len(chunk), kind)
        return None

    def _post(self, url: str, body: bytes, keys: list[str]) -> tuple[int | None, str, float | None]:
        """One POST: (status or None, error kind, a 429's Retry-After)."""
        headers = dict(self._headers)
        headers["Idempotency-Key"] = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        try:
            response = self._http().post(url, content=body, headers=headers)
        except Exception as exc:
            return None, error_kind(exc), None
        status = response.status_code
        kind = "" if 200 <= status < 300 else f"http_{status}"
        retry_after = _retry_after(response.headers.get("retry-after")) if status == 429 else None
        return status, kind, retry_after

    def begin_flush(self, deadline: float) -> None:
        """Hand the worker back by ``deadline`` (monotonic), records still held: a flush waits."""
        self._flush_until = deadline
        self._interrupt.set()

    def end_flush(self) -> None:
        """The flush is over: retries go on at their own pace."""
        self._flush_until = float("inf")
        if self.held and time.monotonic() < self._give_up_at:
            self._call_back_later()

    def begin_shutdown(self, deadline: float) -> None:
        """Stop retrying at ``deadline`` (monotonic): shutdown must not wait forever."""
        self._give_up_at = deadline
        self._interrupt.set()

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        """Stop retrying now, count what is still held as failed, close the connection pool."""
        self._give_up_at = time.monotonic()
        self._interrupt.set()
        self._fail_held(self._last_kind or "shutdown_timeout")
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

    @property
    def settled(self) -> int:
        """Records handed to :meth:`export` whose fate is known (delivered, failed, evicted)."""
        return self.records.settled

    @property
    def held(self) -> int:
        """Records handed to :meth:`export` and still being retried."""
        return self.records.held

    def evict_oldest(self, count: int) -> int:
        """Give up on up to ``count`` of the oldest held records to make room; how many."""
        return self.records.evict_oldest(count)

    def when_held(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` called when an export hands back with records still held."""
        self.records.on_held = callback

    def begin_flush(self, deadline: float) -> None:
        """Make a retrying export hand back by ``deadline`` (``time.monotonic()``)."""
        self.records.begin_flush(deadline)

    def end_flush(self) -> None:
        """Retries go on at their own pace again."""
        self.records.end_flush()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Deliver the records of the carriers in ``spans``."""
        carriers = claimed(spans)
        if any(not span.records for span in carriers):
            self.records.woken()
        items = [item for span in carriers for item in span.records]
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


def _encoded(items: Sequence[PendingRecord]) -> list[tuple[PendingRecord, bytes]]:
    """Items with their ingestData encoding (observe-mode ones ask Akto to judge them)."""
    out: list[tuple[PendingRecord, bytes]] = []
    for index, item in enumerate(items):
        if index % _YIELD_EVERY == _YIELD_EVERY - 1:
            # Let the event loop thread run: a 512-record batch is ~5 ms of encoding,
            # and without a pause a hook waiting for the GIL waits up to the 5 ms
            # switch interval (the hook's p99).
            time.sleep(0)  # pragma: no mutate
        if item.needs_proxy:
            out.append((item, encode_observed_item(item.record)))
        else:
            out.append((item, encode_ingest_item(item.record)))
    return out


def _leading_fit(sizes: Sequence[int], max_bytes: int) -> int:
    """How many of the first items one body carries: at least one, else under ``max_bytes``."""
    size = 0
    for count, length in enumerate(sizes):
        if count and size + length > max_bytes:
            return count
        size += length + 2  # the separator
    return len(sizes)


def _chunks(
    items: Sequence[PendingRecord], max_bytes: int
) -> list[list[tuple[PendingRecord, bytes]]]:
    """Items with their ingestData encoding (done once), split to stay under ``max_bytes``."""
    rest = _encoded(items)
    chunks: list[list[tuple[PendingRecord, bytes]]] = []
    while rest:
        count = _leading_fit([len(encoded) for _, encoded in rest], max_bytes)
        chunks.append(rest[:count])
        rest = rest[count:]
    return chunks
