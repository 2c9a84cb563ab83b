"""``akto_otel.configure()``: one call to get guardrails plus a working OTel pipeline.

It uses the global TracerProvider and MeterProvider when the app already set SDK
ones (it never replaces them), else it installs standard ones exporting per the
``OTEL_*`` variables: ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``
(``otlp``, ``console``, ``none``; default ``otlp`` when an OTLP endpoint is set,
else ``none``), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` default, or
``grpc``), ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. The Akto span
processor is added once; calling it again returns the same guard.

Usage::

    import akto_otel

    guard = akto_otel.configure()       # then guard.session(options) / guard.instrument(options)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from akto_otel.config import Settings
from akto_otel.errors import AktoConfigError
from akto_otel.hooks import AktoGuardrails

__all__ = ["configure"]

_lock = threading.Lock()
_guards: dict[int, AktoGuardrails] = {}
_EXPORTERS = ("otlp", "console", "none")


def _exporters(env: Mapping[str, str], signal: str) -> list[str]:
    name = f"OTEL_{signal.upper()}_EXPORTER"
    raw = env.get(name)
    if raw is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    chosen = [part.strip().lower() for part in raw.split(",") if part.strip()]
    for part in chosen:
        if part not in _EXPORTERS:
            raise AktoConfigError(name, raw, "a comma-separated list of otlp, console, none")
    return [part for part in chosen if part != "none"]


def _grpc(env: Mapping[str, str], signal: str) -> bool:
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol not in ("grpc", "http/protobuf", "http/json"):
        raise AktoConfigError(
            "OTEL_EXPORTER_OTLP_PROTOCOL", protocol, "grpc, http/protobuf or http/json"
        )
    return protocol == "grpc"


def _tracer_provider(env: Mapping[str, str], resource: Resource) -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=resource)
    for name in _exporters(env, "traces"):
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif _grpc(env, "traces"):
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpanExporter,
            )

            provider.add_span_processor(BatchSpanProcessor(HttpSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _meter_provider(env: Mapping[str, str], resource: Resource) -> Any:
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        return current
    readers: list[PeriodicExportingMetricReader] = []
    for name in _exporters(env, "metrics"):
        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif _grpc(env, "metrics"):
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(HttpMetricExporter()))
    provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(provider)
    return provider


def configure(settings: Settings | None = None, **overrides: Any) -> AktoGuardrails:
    """Set up (or join) the OTel pipeline and return the process's guard."""
    env = os.environ
    base = settings if settings is not None else Settings.from_env()
    resolved = base.replace(**overrides) if overrides else base
    with _lock:
        resource = Resource.create({"service.name": resolved.agent_name})
        tracer_provider = _tracer_provider(env, resource)
        existing = _guards.get(id(tracer_provider))
        if existing is not None:
            return existing
        meter_provider = _meter_provider(env, resource)
        guard = AktoGuardrails(
            resolved, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        _guards[id(tracer_provider)] = guard
        return guard
