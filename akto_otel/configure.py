"""``akto_otel.configure()``: one call to get guardrails plus a working OTel pipeline.

It uses the global TracerProvider and MeterProvider when the app already set SDK
ones (it never replaces them), else it installs standard ones exporting per the
``OTEL_*`` variables: ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``
(``otlp``, ``console``, ``none``; default ``otlp`` when an OTLP endpoint is set,
else ``none``), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` default, or
``grpc``; per signal ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``..._METRICS_...``),
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. With ``AKTO_DELIVERY=otlp``
the Akto records travel as logs: the app's global ``LoggerProvider`` is used, else one
is installed exporting per ``OTEL_LOGS_EXPORTER`` (default ``otlp``, to
``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` or the local collector's default port; ``none``
is refused, since the records would go nowhere). Content events (capture
``EVENT_ONLY`` / ``SPAN_AND_EVENT``) also go through the global ``LoggerProvider``;
for them alone one is installed as for traces (``otlp`` when an OTLP endpoint is
set). The Akto span processor is
added once (or the app's own ``AktoSpanProcessor`` is used). Calling it again
returns the same guard; calling it again with *different* settings raises
:class:`~akto_otel.errors.AktoConfigError` instead of ignoring them.

:func:`exporter_plan` says which exporters ``configure()`` would build, and checks
every ``OTEL_*`` value it reads (``akto-otel doctor`` uses it).

Usage::

    import akto_otel

    guard = akto_otel.configure()                        # AKTO_* / OTEL_* from the env
    guard = akto_otel.configure(fail_mode="closed")      # arguments win over the env
    async with guard.session(options) as guarded:        # then pass guarded to query()
        ...
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

from akto_otel.config import Settings
from akto_otel.errors import AktoConfigError, check_keywords

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from akto_otel.hooks import AktoGuardrails

# The SDK and the hooks are imported inside the functions that build things:
# `import akto_otel` binds configure() from this module at once (so the name can
# never be shadowed by the submodule) and must stay cheap and free of side effects.

__all__ = [
    "PlannedExporter",
    "configure",
    "exporter_plan",
    "otlp_endpoint",
    "tell_where_spans_go",
    "where_spans_go",
]

_log = logging.getLogger("akto_otel.configure")
_lock = threading.Lock()
_guards: dict[int, AktoGuardrails] = {}
_told: set[str] = set()
_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("grpc", "http/protobuf", "http/json")
_OTLP_MODULES = {
    ("traces", True): "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ("traces", False): "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ("metrics", True): "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    ("metrics", False): "opentelemetry.exporter.otlp.proto.http.metric_exporter",
}


@dataclass(frozen=True)
class PlannedExporter:
    """One exporter :func:`configure` adds when the app has no SDK provider.

    ``protocol`` is ``grpc`` or ``http/protobuf`` for ``otlp`` (``http/json`` is sent
    as ``http/protobuf``, the only HTTP encoding the Python exporter has), empty for
    ``console``; ``module`` is what gets imported for it.
    """

    signal: Literal["traces", "metrics", "logs"]
    kind: Literal["otlp", "console"]
    protocol: str = ""
    module: str = ""


def _exporter_names(
    env: Mapping[str, str], signal: str, problems: list[AktoConfigError], *, records: bool = False
) -> list[str]:
    name = f"OTEL_{signal.upper()}_EXPORTER"
    raw = env.get(name)
    if raw is None and records:
        return ["otlp"]  # the spec's default; only planned when the records need it
    if raw is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    chosen = [part.strip().lower() for part in raw.split(",") if part.strip()]
    bad = [part for part in chosen if part not in _EXPORTERS]
    if bad:
        problems.append(AktoConfigError(name, raw, "a comma-separated list of otlp, console, none"))
    return [part for part in chosen if part not in ("none", *bad)]


def _protocol(env: Mapping[str, str], signal: str, problems: list[AktoConfigError]) -> str:
    specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    name = specific if env.get(specific) else "OTEL_EXPORTER_OTLP_PROTOCOL"
    raw = env.get(name) or "http/protobuf"
    protocol = raw.strip().lower()
    if protocol not in _PROTOCOLS:
        problems.append(AktoConfigError(name, raw, "grpc, http/protobuf or http/json"))
        return ""
    return "grpc" if protocol == "grpc" else "http/protobuf"


def exporter_plan(
    env: Mapping[str, str] | None = None, *, logs: bool = False, content_logs: bool = False
) -> list[PlannedExporter]:
    """The exporters :func:`configure` builds from ``env`` (default ``os.environ``).

    ``logs`` plans the logs exporters too (``AKTO_DELIVERY=otlp`` with no app
    ``LoggerProvider``); then ``OTEL_LOGS_EXPORTER=none`` is a problem.
    ``content_logs`` plans them for the content events alone (``EVENT_ONLY`` /
    ``SPAN_AND_EVENT`` capture): ``none`` is then just no events.

    Raises :class:`AktoConfigError` listing every problem at once: an unknown
    exporter name (``OTEL_TRACES_EXPORTER=jaeger``), an unknown protocol, an OTLP
    exporter package that is not installed. Builds nothing and opens no socket.

    Example::

        >>> exporter_plan({"OTEL_TRACES_EXPORTER": "console"})
        [PlannedExporter(signal='traces', kind='console', protocol='', module='')]
    """
    source = os.environ if env is None else env
    problems: list[AktoConfigError] = []
    plan: list[PlannedExporter] = []
    signals: tuple[Literal["traces", "metrics", "logs"], ...] = ("traces", "metrics")
    if logs or content_logs:
        signals += ("logs",)
    for signal in signals:
        records = signal == "logs" and logs
        kinds = _exporter_names(source, signal, problems, records=records)
        if records and not kinds:
            problems.append(
                AktoConfigError(
                    "OTEL_LOGS_EXPORTER",
                    source.get("OTEL_LOGS_EXPORTER", ""),
                    "otlp or console: AKTO_DELIVERY=otlp sends the Akto records as logs",
                )
            )
        for kind in kinds:
            if kind == "console":
                plan.append(PlannedExporter(signal, "console"))
                continue
            protocol = _protocol(source, signal, problems)
            if not protocol:
                continue
            if signal == "logs":
                module = _log_exporter_entry_point(protocol)
            else:
                module = _OTLP_MODULES[(signal, protocol == "grpc")]
            if not _importable(module):
                package = "grpc" if protocol == "grpc" else "http"
                problems.append(
                    AktoConfigError(
                        f"OTEL_{signal.upper()}_EXPORTER",
                        f"otlp ({protocol})",
                        "an installed exporter: "
                        f"pip install opentelemetry-exporter-otlp-proto-{package}",
                    )
                )
                continue
            plan.append(PlannedExporter(signal, "otlp", protocol, module))
    if problems:
        # The shared OTEL_EXPORTER_OTLP_PROTOCOL is read once per signal: report it once.
        unique = {(p.name, p.value): p for p in problems}
        raise AktoConfigError.combine(list(unique.values()))
    return plan


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module.split(":", 1)[0]) is not None
    except ImportError:
        return False


def _log_exporter_entry_point(protocol: str) -> str:
    """``module:Class`` of the OTLP log exporter, from the exporters' public entry points."""
    name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    for ep in entry_points(group="opentelemetry_logs_exporter", name=name):
        return str(ep.value)
    return f"(entry point {name} of opentelemetry_logs_exporter)"


def _log_exporter(planned: PlannedExporter) -> LogRecordExporter:
    from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

    if planned.kind == "console":
        return ConsoleLogRecordExporter()
    module, _, attr = planned.module.partition(":")
    exporter: LogRecordExporter = getattr(importlib.import_module(module), attr)()
    return exporter


def _logger_provider(plan: list[PlannedExporter], resource: Resource, queue: int) -> None:
    """Install a LoggerProvider exporting per ``plan`` unless the app set an SDK one.

    Its batch queue holds ``queue`` log records: a full one drops without a trace, so
    it is sized for every record the Akto processor may hold (two events each).
    """
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from akto_otel.otlp_logs import log_batch_size

    if isinstance(get_logger_provider(), LoggerProvider):
        return
    # Not shut down at exit by itself: the Akto processor flushes it after its own
    # last records (an exit hook of its own could run first and lose them).
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for planned in plan:
        if planned.signal == "logs":
            provider.add_log_record_processor(
                BatchLogRecordProcessor(
                    _log_exporter(planned),
                    max_queue_size=queue,
                    max_export_batch_size=log_batch_size(queue),
                )
            )
    set_logger_provider(provider)


def _has_logger_provider() -> bool:
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider

    return isinstance(get_logger_provider(), LoggerProvider)


def _span_exporter(planned: PlannedExporter) -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if planned.kind == "console":
        return ConsoleSpanExporter()
    exporter_class = importlib.import_module(planned.module).OTLPSpanExporter
    exporter: SpanExporter = exporter_class()
    return exporter


def _metric_exporter(planned: PlannedExporter) -> MetricExporter:
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    if planned.kind == "console":
        return ConsoleMetricExporter()
    exporter_class = importlib.import_module(planned.module).OTLPMetricExporter
    exporter: MetricExporter = exporter_class()
    return exporter


def _tracer_provider(plan: list[PlannedExporter], resource: Resource) -> TracerProvider:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=resource)
    for planned in plan:
        if planned.signal == "traces":
            provider.add_span_processor(BatchSpanProcessor(_span_exporter(planned)))
    trace.set_tracer_provider(provider)
    return provider


def _meter_provider(plan: list[PlannedExporter], resource: Resource) -> Any:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        return current
    readers = [
        PeriodicExportingMetricReader(_metric_exporter(planned))
        for planned in plan
        if planned.signal == "metrics"
    ]
    provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(provider)
    return provider


def _differences(first: Settings, asked: Settings) -> list[str]:
    changed: list[str] = []
    for f in dataclasses.fields(Settings):
        before, after = getattr(first, f.name), getattr(asked, f.name)
        if before != after:
            if f.name == "token":
                changed.append("token (hidden)")
            else:
                changed.append(f"{f.name}={after!r} (was {before!r})")
    return changed


def otlp_endpoint(env: Mapping[str, str], signal: str, grpc: bool) -> tuple[str, bool]:
    """Where the OTLP exporter of ``signal`` sends, and whether that is its default."""
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return specific, False
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if base:
        return (base if grpc else f"{base.rstrip('/')}/v1/{signal}"), False
    return ("http://localhost:4317" if grpc else f"http://localhost:4318/v1/{signal}"), True


def where_spans_go(env: Mapping[str, str] | None = None) -> str:
    """One sentence saying where the OpenTelemetry SDK sends spans under ``env``.

    For the once-only log line of :func:`configure` and the zero-code instrumentor,
    so an unset endpoint is said plainly instead of showing up as export retries.
    Never raises: a bad setting is reported as such.

    Example::

        >>> where_spans_go({"OTEL_TRACES_EXPORTER": "console"})
        'spans are printed to stdout (OTEL_TRACES_EXPORTER=console)'
    """
    from akto_otel.redaction import redact_url

    source = os.environ if env is None else env
    try:
        plan = [p for p in exporter_plan(source) if p.signal == "traces"]
    except AktoConfigError as exc:
        return f"spans are not exported: {exc}"
    if not plan:
        return (
            "spans are not exported (no OTEL_TRACES_EXPORTER and no "
            "OTEL_EXPORTER_OTLP_ENDPOINT); Akto still receives its records"
        )
    places: list[str] = []
    for exporter in plan:
        if exporter.kind == "console":
            places.append("printed to stdout (OTEL_TRACES_EXPORTER=console)")
            continue
        endpoint, default = otlp_endpoint(source, "traces", exporter.protocol == "grpc")
        place = f"sent over OTLP ({exporter.protocol}) to {redact_url(endpoint)}"
        if default:
            place += (
                ", the default, as OTEL_EXPORTER_OTLP_ENDPOINT is not set: with no collector "
                "there each batch is retried, then dropped (set the endpoint, or "
                "OTEL_TRACES_EXPORTER=console or none)"
            )
        places.append(place)
    return "spans are " + "; and ".join(places)


def tell_where_spans_go(env: Mapping[str, str] | None = None) -> None:
    """Log :func:`where_spans_go` once per process per distinct answer."""
    message = where_spans_go(env)
    if message not in _told:
        _told.add(message)
        _log.warning("akto_otel: %s", message)


def configure(settings: Settings | None = None, **overrides: Any) -> AktoGuardrails:
    """Set up (or join) the OTel pipeline and return the process's guard.

    ``settings`` and keyword arguments (the :class:`~akto_otel.config.Settings`
    fields, parsed like their environment variables) override ``AKTO_*``. The first
    call builds the guard; later calls return it. A later call that asks for
    different settings raises :class:`AktoConfigError` naming them, rather than
    returning a guard that does not do what it asked (build a separate
    ``AktoGuardrails(...)`` for other settings). Bad ``AKTO_*`` or ``OTEL_*`` values
    are all reported in one ``AktoConfigError`` before anything is built.

    Example::

        import akto_otel
        from claude_agent_sdk import ClaudeAgentOptions, query

        guard = akto_otel.configure(fail_mode="closed")
        async with guard.session(ClaudeAgentOptions(allowed_tools=["Bash"])) as options:
            async for message in query(prompt="list the files", options=options):
                print(message)
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from akto_otel.hooks import AktoGuardrails

    check_keywords(
        "configure()", overrides, (f.name for f in dataclasses.fields(Settings) if f.init)
    )
    env = os.environ
    problems: list[AktoConfigError] = []
    resolved: Settings | None = None
    try:
        if settings is None:
            resolved = Settings.from_env(**overrides)
        else:
            resolved = settings.replace(**overrides) if overrides else settings
    except AktoConfigError as exc:
        problems.extend(exc.problems)
    explicit = settings is not None or any(v is not None for v in overrides.values())
    with _lock:
        current = trace.get_tracer_provider()
        existing = _guards.get(id(current)) if isinstance(current, TracerProvider) else None
        plan: list[PlannedExporter] = []
        if existing is None:
            logs = resolved is not None and resolved.delivery == "otlp"
            content = resolved is not None and resolved.capture_in_events
            try:
                plan = exporter_plan(
                    env,
                    logs=logs and not _has_logger_provider(),
                    content_logs=content and not _has_logger_provider(),
                )
            except AktoConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise AktoConfigError.combine(problems)
        assert resolved is not None
        if existing is None:
            resource = Resource.create({"service.name": resolved.agent_name})
            if resolved.delivery == "otlp" or any(p.signal == "logs" for p in plan):
                _logger_provider(plan, resource, 2 * resolved.export_queue_size)
            tracer_provider = _tracer_provider(plan, resource)
            if tracer_provider is not current:
                tell_where_spans_go(env)
            existing = _guards.get(id(tracer_provider))
            if existing is None:
                meter_provider = _meter_provider(plan, resource)
                guard = AktoGuardrails(
                    resolved, tracer_provider=tracer_provider, meter_provider=meter_provider
                )
                _guards[id(tracer_provider)] = guard
                return guard
        if explicit and resolved != existing.settings:
            changed = _differences(existing.settings, resolved)
            error = AktoConfigError(
                "configure()", ", ".join(changed), "the settings of the first configure() call"
            )
            error.args = (
                "configure() was already called with other settings; this call asks for "
                + ", ".join(changed)
                + ". The first guard is still in use: call configure() with no arguments to "
                "get it, or build a separate akto_otel.AktoGuardrails(...) for other settings.",
            )
            raise error
        return existing
