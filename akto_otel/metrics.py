"""Metric instruments of akto_otel (low-cardinality attributes only).

Names become Prometheus names with dots -> underscores, e.g. the decisions counter
is ``akto_guardrail_decisions_total``: the deny-rate alerts are built on it.

Usage::

    from opentelemetry.sdk.metrics import MeterProvider
    metrics = GuardrailMetrics(MeterProvider())
    metrics.record_decision("PreToolUse", verdict)
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from akto_otel import semconv
from akto_otel.armed import ARMING_FAULTS
from akto_otel.contract import Verdict
from akto_otel.version import __version__

__all__ = [
    "DURATION_BUCKETS_S",
    "JUDGING_HOOKS",
    "STARTING_FAULTS",
    "GuardrailMetrics",
    "metrics_for",
]

#: Bucket boundaries (seconds) for 1 ms .. 10 s; the SDK defaults are for milliseconds.
DURATION_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


_MAX_CACHED = 512
#: The hooks that ask Akto for a verdict, and the (decision, behaviour) of the verdicts
#: every guard sees: their decision series start at 0 when the instruments are made, so
#: a process's first deny is an increase Prometheus can see (a series whose first
#: sample is already 1 gives no rate).
JUDGING_HOOKS = ("UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SubagentStop")
_STARTING_DECISIONS = (("allow", ""), ("deny", "block"))
#: Where a denied tool call can show up as run, and why a guard may not be armed
#: (akto_otel/armed.py): their series start at 0 too, so the first one alerts.
BREACH_HOOKS = ("PostToolUse", "PostToolUseFailure")
#: The faults every fail-open guard meets first (Akto down, slow, refusing the token,
#: failing, its own failOpen, our own bug): their unjudged series start at 0 too.
STARTING_FAULTS = (
    "connection_refused",
    "timeout",
    "http_401",
    "http_5xx",
    "akto_fail_open",
    "internal_error",
    # refusals of akto-otel serve (a hook request it could not judge)
    "request_too_large",
    "bad_request",
    "overloaded",
)


def _decision_attributes(
    hook: str, decision: str, behaviour: str, fail_open: bool, error: str | None
) -> dict[str, str | bool]:
    attributes: dict[str, str | bool] = {
        "hook": hook,
        "decision": decision,
        "behaviour": behaviour or "none",
        "fail_open": fail_open,
    }
    if error:
        attributes["error_type"] = error
    return attributes


_SHARED: weakref.WeakKeyDictionary[Any, GuardrailMetrics] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def metrics_for(meter_provider: Any = None) -> GuardrailMetrics:
    """The one :class:`GuardrailMetrics` of a MeterProvider.

    Instruments are per provider: a second set with the same names would be
    ignored by the SDK, and with it the second guard's queue-size callback.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _shared_lock:
        try:
            existing = _SHARED.get(provider)
        except TypeError:  # a provider that cannot be weakly referenced
            return GuardrailMetrics(provider)
        if existing is None:
            existing = GuardrailMetrics(provider)
            _SHARED[provider] = existing
        return existing


class GuardrailMetrics:
    """The instruments, on ``meter_provider`` or the global one.

    Use :func:`metrics_for` to share one set per provider.
    """

    def __init__(self, meter_provider: Any = None) -> None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("akto_otel", __version__)
        self._decisions = meter.create_counter(
            semconv.METRIC_GUARDRAIL_DECISIONS,
            unit="1",
            description="Guardrail verdicts by hook, decision and behaviour",
        )
        for hook in JUDGING_HOOKS:
            for decision, behaviour in _STARTING_DECISIONS:
                self._decisions.add(0, _decision_attributes(hook, decision, behaviour, False, None))
        self._unjudged = meter.create_counter(
            semconv.METRIC_GUARDRAIL_UNJUDGED,
            unit="1",
            description="Calls allowed without a verdict (fail-open), by hook and fault",
        )
        self._unjudged_attributes: dict[tuple[str, str], dict[str, str]] = {}
        for hook in JUDGING_HOOKS:
            for fault in STARTING_FAULTS:
                self._unjudged.add(0, self._fault_attributes(hook, fault))
        self._duration = meter.create_histogram(
            semconv.METRIC_GUARDRAIL_DURATION,
            unit="s",
            description="Time to get a guardrail verdict from Akto",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
        )
        self._hook_duration = meter.create_histogram(
            semconv.METRIC_HOOK_DURATION,
            unit="s",
            description="Time spent inside an akto_otel hook callback",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
        )
        self._hook_errors = meter.create_counter(
            semconv.METRIC_HOOK_ERRORS,
            unit="1",
            description="Hook callbacks that failed internally",
        )
        self._records = meter.create_counter(
            semconv.METRIC_EXPORTER_RECORDS,
            unit="1",
            description="Akto records by outcome: exported, failed, dropped, retried",
        )
        self._truncated = meter.create_counter(
            semconv.METRIC_RECORDS_TRUNCATED,
            unit="1",
            description="Records cut to Akto's limits for delivery (never for judging)",
        )
        self._export_duration = meter.create_histogram(
            semconv.METRIC_EXPORTER_DURATION,
            unit="s",
            description="Time to deliver one batch of records to Akto (retries included)",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS_S),
        )
        self._breaches = meter.create_counter(
            semconv.METRIC_GUARDRAIL_BREACHES,
            unit="1",
            description="Tool calls the guard denied that still ran (a deny that did not hold)",
        )
        for hook in BREACH_HOOKS:
            self._breaches.add(0, {"hook": hook})
        self._unarmed = meter.create_counter(
            semconv.METRIC_GUARDRAIL_UNARMED,
            unit="1",
            description="Sessions whose CLI cannot block on a failed hook or did not apply ours",
        )
        for fault in ARMING_FAULTS:
            self._unarmed.add(0, {"fault": fault})
        self._dropped_connections = meter.create_counter(
            semconv.METRIC_SERVE_CONNECTIONS_DROPPED,
            unit="1",
            description="Connections akto-otel serve closed before a request, by reason",
        )
        self._queue_sizes: list[Callable[[], int]] = []
        # Attribute sets are built once per distinct value and reused on every call.
        self._decision_attributes: dict[
            tuple[str, str, str, bool, str | None], dict[str, str | bool]
        ] = {}
        self._by_hook: dict[str, dict[str, str]] = {}
        meter.create_observable_gauge(
            semconv.METRIC_EXPORTER_QUEUE_SIZE,
            callbacks=[self._observe_queue],
            # Not "1": a collector's Prometheus exporter would add a _ratio suffix.
            unit="{record}",
            description="Records waiting for delivery to Akto",
        )

    def _observe_queue(self, options: CallbackOptions) -> Iterable[Observation]:
        total = 0
        for size in self._queue_sizes:
            try:
                total += size()
            except Exception:
                continue
        yield Observation(total)

    def watch_queue(self, size: Callable[[], int]) -> None:
        self._queue_sizes.append(size)

    def record_export_duration(self, seconds: float) -> None:
        self._export_duration.record(seconds)

    def record_decision(self, hook: str, verdict: Verdict) -> None:
        key = (hook, verdict.decision, verdict.behaviour, verdict.fail_open, verdict.error)
        attributes = self._decision_attributes.get(key)
        if attributes is None:
            attributes = _decision_attributes(*key)
            # The behaviour comes from Akto's answer: cap what a server can make us keep.
            if len(self._decision_attributes) < _MAX_CACHED:
                self._decision_attributes[key] = attributes
        self._decisions.add(1, attributes)
        if verdict.ran or verdict.error not in (None, "not_configured"):
            self._duration.record(verdict.latency_s, self._hook_attributes(hook))

    def record_unjudged(self, hook: str, fault: str) -> None:
        """One call ``hook`` let through without a verdict, because of ``fault``."""
        self._unjudged.add(1, self._fault_attributes(hook, fault))

    def _fault_attributes(self, hook: str, fault: str) -> dict[str, str]:
        key = (hook, fault)
        attributes = self._unjudged_attributes.get(key)
        if attributes is None:
            attributes = {"hook": hook, "fault": fault}
            if len(self._unjudged_attributes) < _MAX_CACHED:
                self._unjudged_attributes[key] = attributes
        return attributes

    def _hook_attributes(self, hook: str) -> dict[str, str]:
        attributes = self._by_hook.get(hook)
        if attributes is None:
            attributes = {"hook": hook}
            if len(self._by_hook) < _MAX_CACHED:
                self._by_hook[hook] = attributes
        return attributes

    def record_hook_duration(self, hook: str, seconds: float) -> None:
        self._hook_duration.record(seconds, self._hook_attributes(hook))

    def record_hook_error(self, hook: str) -> None:
        self._hook_errors.add(1, {"hook": hook})

    def record_breach(self, hook: str) -> None:
        self._breaches.add(1, {"hook": hook})

    def record_unarmed(self, fault: str) -> None:
        self._unarmed.add(1, {"fault": fault})

    def start_dropped_connections(self, reasons: Iterable[str]) -> None:
        """Start ``akto.serve.connections.dropped`` at 0 for each reason (a server's)."""
        for reason in reasons:
            self._dropped_connections.add(0, {"reason": reason})

    def record_dropped_connection(self, reason: str) -> None:
        """One connection ``akto-otel serve`` closed (evicted, timed out, refused)."""
        self._dropped_connections.add(1, {"reason": reason})

    def record_truncated(self, kind: str) -> None:
        self._truncated.add(1, {"kind": kind})

    def record_export(self, outcome: str, count: int, reason: str) -> None:
        attributes: dict[str, str] = {"outcome": outcome}
        if reason:
            attributes["reason"] = reason
        self._records.add(count, attributes)
