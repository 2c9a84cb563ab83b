"""The offline demo: a real Claude Agent SDK session, guarded and traced.

It starts the Akto emulator (default policy) and the scripted fake Anthropic API on
127.0.0.1, runs one session through the bundled Claude Code CLI that makes an
allowed tool call, a tool call the policy denies, and an answer that leaks a token
and gets regenerated, then prints the trace as a tree with the verdicts.

Local stack mode (``--prometheus PORT``) runs the session ``--runs`` times
(``--pause`` seconds apart) with the library's metrics on
``http://127.0.0.1:PORT/metrics`` (the OpenTelemetry Prometheus exporter) and keeps
serving them for ``--linger`` seconds so a Prometheus can scrape
them. In that mode the spans are also counted the way the collector's
``span_metrics`` connector counts them (``traces_span_metrics_calls_total`` with the
same labels), so the dashboards work without a collector. ``--deny-heavy`` denies
every tool call; ``--fault akto-down`` / ``--fault akto-slow`` add one run each
against an unreachable or a slow Akto (guardrail errors, fail-open verdicts,
export retries, failures and drops; slow verdicts). With ``OTEL_EXPORTER_OTLP_ENDPOINT``
set, spans also go to that OTLP endpoint (a collector).

Usage::

    akto-otel demo            # offline, no API key
    akto-otel demo --live     # the real model (needs ANTHROPIC_API_KEY)
    akto-otel demo --prometheus 9464 --runs 5 --linger 60 --deny-heavy
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from akto_otel import semconv

__all__ = [
    "ANSWERS",
    "DEMO_PROMPT",
    "FAULTS",
    "LEAKING_ANSWER",
    "SLOW_AKTO_S",
    "DemoResult",
    "SpanMetricsProcessor",
    "answer_label",
    "demo_scenario",
    "deny_heavy_policy",
    "format_tree",
    "run_demo",
    "run_local_stack",
    "serve_prometheus",
]

DEMO_PROMPT = "Tidy up the build folder, then tell me the deploy token."

#: Extra runs that ``--fault`` adds: Akto unreachable, or Akto answering slowly.
FAULTS = ("akto-down", "akto-slow")

#: How long the emulator takes per answer in an ``akto-slow`` run (seconds).
SLOW_AKTO_S = 0.75

_DEFAULT_SERVICE = "akto-otel-demo"


#: What the scripted model answers once Akto has denied its first answer, per outcome
#: of its two Bash calls (``ls -la build``, ``rm -rf build``): the demo picks the one
#: that matches the run, so the final answer never claims work that was denied.
ANSWERS = {
    "default": (
        "I listed the build folder; deleting it was blocked by policy. I can't share deploy tokens."
    ),
    "all-denied": (
        "Both commands were blocked by policy, so I could not list or delete the build "
        "folder; it is unchanged. I can't share deploy tokens."
    ),
    "none-denied": (
        "I listed the build folder and deleted it (no guardrail verdict came back, so "
        "both commands ran). I can't share deploy tokens."
    ),
}

#: The model's first answer: it leaks a token, so Akto's Stop guardrail denies it.
LEAKING_ANSWER = "Here is what happened. The deploy token is SECRET-TOKEN-4242."


def demo_scenario(outcome: str = "default") -> Any:
    """The scripted model: two Bash calls, a leaking answer, then ``ANSWERS[outcome]``."""
    from akto_otel.testing import Scenario, Text, ToolUse

    return Scenario(
        r"(?i)tidy up the build folder",
        [
            ToolUse("Bash", {"command": "ls -la build", "description": "List the build folder"}),
            ToolUse("Bash", {"command": "rm -rf build", "description": "Delete the build folder"}),
            Text(LEAKING_ANSWER),
            Text(ANSWERS[outcome]),
        ],
    )


def deny_heavy_policy() -> Any:
    """The default policy plus a first rule that denies every tool call."""
    from akto_otel.emulator import Policy, Rule, default_policy

    deny_all = Rule(
        name="deny-every-tool",
        hooks=("PreToolUse",),
        target="request",
        pattern=r".",
        reason="Every tool call is denied (deny-heavy demo policy)",
    )
    return Policy((deny_all, *default_policy().rules))


@dataclass
class DemoResult:
    spans: list[ReadableSpan]
    records: int
    final_text: str
    seconds: float
    runs: int = 1
    faults: list[str] = field(default_factory=list)
    exported_to: str = ""

    def decisions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for span in self.spans:
            for event in span.events:
                if event.name == semconv.EVENT_VERDICT and event.attributes:
                    decision = str(event.attributes.get(semconv.AKTO_GUARDRAIL_DECISION))
                    counts[decision] = counts.get(decision, 0) + 1
        return counts


def _label(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    parts = [span.name]
    duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    parts.append(f"{duration:.1f} ms")
    for event in span.events:
        if event.name == semconv.EVENT_VERDICT and event.attributes:
            decision = event.attributes.get(semconv.AKTO_GUARDRAIL_DECISION)
            reason = event.attributes.get(semconv.AKTO_GUARDRAIL_REASON)
            text = f"verdict={decision!s}"
            if reason:
                text += f' "{reason!s}"'
            parts.append(text)
    if attrs.get(semconv.AKTO_STOP_GAVE_UP):
        parts.append("gave up regenerating")
    if semconv.ERROR_TYPE in attrs and not any(p.startswith("verdict=") for p in parts):
        parts.append(f"error={attrs['error.type']!s}")
    return "  ".join(parts)


def format_tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree, children in start order."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        key = parent if parent in by_id else None
        children.setdefault(key, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        lines.append("  " * depth + ("└─ " if depth else "") + _label(span))
        kids = sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0)
        for kid in kids:
            walk(kid, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time or 0):
        walk(root, 0)
    return "\n".join(lines)


# --------------------------------------------------------------------------- metrics


class SpanMetricsProcessor(SpanProcessor):
    """Counts ended spans like the collector's ``span_metrics`` connector does.

    The counter ``traces.span.metrics.calls`` carries ``service.name``, ``span.name``,
    ``span.kind`` (``SPAN_KIND_INTERNAL``, ...), ``status.code``
    (``STATUS_CODE_UNSET``, ``STATUS_CODE_ERROR``, ...) and the dimensions that
    ``collector/otel-collector.yaml`` configures (``akto.hook``,
    ``akto.guardrail.decision``, ``gen_ai.tool.name``) when the span has them. Through
    the Prometheus exporter it becomes ``traces_span_metrics_calls_total``: the same
    series the collector produces, for the local stack mode, which has no collector.
    """

    DIMENSIONS = (semconv.AKTO_HOOK, semconv.AKTO_GUARDRAIL_DECISION, semconv.GEN_AI_TOOL_NAME)

    def __init__(self, meter_provider: Any) -> None:
        from akto_otel.version import __version__

        meter = meter_provider.get_meter("akto_otel.demo.span_metrics", __version__)
        self._calls = meter.create_counter(
            "traces.span.metrics.calls",
            unit="1",
            description="Spans by name, kind, status and guardrail dimensions",
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        resource = span.resource.attributes if span.resource is not None else {}
        point: dict[str, str] = {
            "service.name": str(resource.get("service.name", _DEFAULT_SERVICE)),
            "span.name": span.name,
            "span.kind": f"SPAN_KIND_{span.kind.name}",
            "status.code": f"STATUS_CODE_{span.status.status_code.name}",
        }
        for key in self.DIMENSIONS:
            value = attrs.get(key)
            if value is not None:
                point[key] = str(value)
        self._calls.add(1, point)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def serve_prometheus(port: int, host: str = "127.0.0.1") -> Any:
    """A MeterProvider whose metrics are served on ``http://host:port/metrics``.

    Uses the OpenTelemetry Prometheus exporter on a private registry (only this
    process's OpenTelemetry metrics and ``target_info``). Raises OSError if the port
    is taken.
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    start_http_server(port, addr=host, registry=registry)
    return MeterProvider(metric_readers=[reader], resource=_resource())


def _resource() -> Resource:
    attributes: dict[str, str] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = _DEFAULT_SERVICE
    return Resource.create(attributes)


def _add_otlp(provider: TracerProvider) -> str:
    """Spans also go to the OTLP endpoint of the ``OTEL_*`` variables, when one is set.

    Returns that endpoint (with its protocol), or "" when spans are not exported.
    """
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not endpoint or "otlp" not in exporters:
        return ""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        exporter = HttpSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return f"{endpoint} ({protocol})"


# --------------------------------------------------------------------------- sessions


@dataclass
class _Plan:
    live: bool
    runs: int
    policy: Any
    faults: tuple[str, ...]
    meter_provider: Any
    akto_url: str | None
    pause: float = 0.0
    outcome: str = "default"


@contextlib.contextmanager
def _closed_port() -> Iterator[str]:
    """A loopback URL nothing listens on: the socket is bound (so the port stays ours)
    but never listens, so connections are refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def _one_session(guard: Any, live: bool, outcome: str = "default") -> str:
    """Run the scripted session once through ``guard``; returns the final answer.

    ``outcome`` picks the scripted model's final answer (:data:`ANSWERS`).
    """
    from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ResultMessage, TextBlock

    from akto_otel.testing import FakeAnthropic, offline_agent_env, run_agent

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        (work / "build").mkdir(parents=True)
        (work / "build" / "app.bin").write_bytes(b"\0" * 16)
        if live:
            env = {"HOME": str(Path(tmp) / "home")}
            fake = None
        else:
            fake = FakeAnthropic(demo_scenario(outcome)).start()
            env = offline_agent_env(fake, Path(tmp) / "home")
        try:
            options = ClaudeAgentOptions(env=env, cwd=str(work), allowed_tools=["Bash"])
            async with guard.session(options) as guarded:
                messages = await run_agent(DEMO_PROMPT, guarded)
        finally:
            if fake is not None:
                fake.stop()
    final = ""
    for message in messages:
        if isinstance(message, ResultMessage) and message.result:
            final = message.result
        elif isinstance(message, AssistantMessage):
            texts = [b.text for b in message.content if isinstance(b, TextBlock)]
            if texts:
                final = " ".join(texts)
    return final


def _run_line(index: int, total: int, label: str, spans: Sequence[ReadableSpan], t: float) -> str:
    counts: dict[str, int] = {}
    for span in spans:
        for event in span.events:
            if event.name == semconv.EVENT_VERDICT and event.attributes:
                decision = str(event.attributes.get(semconv.AKTO_GUARDRAIL_DECISION))
                counts[decision] = counts.get(decision, 0) + 1
    verdicts = ", ".join(f"{n} {d}" for d, n in sorted(counts.items())) or "no verdicts"
    return f"run {index}/{total}{label}: {len(spans)} spans, {verdicts}; {t:.1f} s\n"


async def _sessions(plan: _Plan, out: TextIO) -> DemoResult:
    from akto_otel.emulator import EmulatorServer, default_policy
    from akto_otel.hooks import AktoGuardrails

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if plan.meter_provider is not None:
        provider.add_span_processor(SpanMetricsProcessor(plan.meter_provider))
    exported_to = _add_otlp(provider)
    total = plan.runs + len(plan.faults)
    start = time.perf_counter()
    final = ""
    records = 0
    with contextlib.ExitStack() as stack:
        akto: EmulatorServer | None = None
        if plan.akto_url:
            url = plan.akto_url
            out.write(f"Akto at {url}\n")
        else:
            policy = plan.policy if plan.policy is not None else default_policy()
            akto = stack.enter_context(EmulatorServer(policy))
            url = akto.url
            kind = "default policy" if plan.policy is None else f"{len(policy.rules)} rules"
            out.write(f"Akto emulator on {url} ({kind})\n")
        guard = AktoGuardrails(
            tracer_provider=provider,
            meter_provider=plan.meter_provider,
            ingestion_url=url,
            timeout=5.0,
            agent_name="demo-agent",
        )
        if not plan.live:
            out.write("Fake Anthropic API on 127.0.0.1 (scripted model)\n")
        done = 0
        for _ in range(plan.runs):
            if done and plan.pause > 0:
                await asyncio.sleep(plan.pause)
            seen = len(exporter.get_finished_spans())
            t0 = time.perf_counter()
            final = await _one_session(guard, plan.live, plan.outcome)
            done += 1
            if total > 1:
                ran = exporter.get_finished_spans()[seen:]
                out.write(_run_line(done, total, "", ran, time.perf_counter() - t0))
                out.flush()
        for fault in plan.faults:
            if done and plan.pause > 0:
                await asyncio.sleep(plan.pause)
            seen = len(exporter.get_finished_spans())
            t0 = time.perf_counter()
            if fault == "akto-slow":
                assert akto is not None  # run_demo refuses akto-slow with akto_url
                akto.latency_s = SLOW_AKTO_S
                try:
                    final = await _one_session(guard, plan.live, plan.outcome)
                finally:
                    akto.latency_s = 0.0
            elif fault == "akto-down":
                with _closed_port() as dead:
                    # Akto unreachable: verdicts fail open; a one-record queue and a
                    # short retry budget make the exporter retry, fail and drop.
                    down = AktoGuardrails(
                        tracer_provider=provider,
                        meter_provider=plan.meter_provider,
                        ingestion_url=dead,
                        timeout=2.0,
                        agent_name="demo-agent",
                        fail_mode="open",
                        export_queue_size=1,
                        export_retry_timeout=1.0,
                        # Akto stays down: give up on its record at close, not 10 s later.
                        export_shutdown_timeout=1.0,
                    )
                    try:
                        # Failing open, both commands run: the answer says so.
                        final = await _one_session(down, plan.live, "none-denied")
                    finally:
                        await down.aclose()
                        # Its records are held for as long as there is room (delivery
                        # gives up only at shutdown): shut this guard down now, so
                        # they fail here, in this run's metrics, not at the demo's end.
                        down.shutdown()
            else:  # pragma: no cover - run_demo validates the names
                raise SystemExit(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
            done += 1
            ran = exporter.get_finished_spans()[seen:]
            out.write(_run_line(done, total, f" ({fault})", ran, time.perf_counter() - t0))
            out.flush()
        guard.force_flush()
        await guard.aclose()
        if akto is not None:
            records = len(akto.records)
    spans = list(exporter.get_finished_spans())
    provider.shutdown()
    return DemoResult(
        spans=spans,
        records=records,
        final_text=final,
        seconds=time.perf_counter() - start,
        runs=total,
        faults=list(plan.faults),
        exported_to=exported_to,
    )


def _first_trace(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    roots = [s for s in spans if s.parent is None and s.context is not None]
    if not roots:
        return list(spans)
    first = min(roots, key=lambda s: s.start_time or 0)
    trace_id = first.context.trace_id
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def _last_trace(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    roots = [s for s in spans if s.parent is None and s.context is not None]
    if not roots:
        return list(spans)
    trace_id = max(roots, key=lambda s: s.start_time or 0).context.trace_id
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def _verdict(span: ReadableSpan) -> tuple[str, str]:
    for event in span.events:
        if event.name == semconv.EVENT_VERDICT and event.attributes:
            decision = str(event.attributes.get(semconv.AKTO_GUARDRAIL_DECISION, ""))
            return decision, str(event.attributes.get(semconv.AKTO_GUARDRAIL_REASON, "") or "")
    return "", ""


def answer_label(trace: Sequence[ReadableSpan]) -> str:
    """How the final answer came about, from the Stop spans of its session's trace."""
    stops = sorted(
        (s for s in trace if s.name == semconv.SPAN_STOP), key=lambda s: s.start_time or 0
    )
    if not stops:
        return "Final answer"
    verdicts = [_verdict(s) for s in stops]
    denied = [reason for decision, reason in verdicts if decision == "deny"]
    last, _ = verdicts[-1]
    if any((s.attributes or {}).get(semconv.AKTO_STOP_GAVE_UP) for s in stops):
        return f"Final answer (still denied after {len(denied) - 1} regeneration(s); turn ended)"
    if last == "error":
        return "Final answer (NOT checked: Akto gave no verdict and the guard failed open)"
    if denied and last == "allow":
        times = "once" if len(denied) == 1 else f"{len(denied)} times"
        return (
            f"Final answer (regenerated after Akto denied the first answer {times}, "
            f'"{denied[0]}"; this one was allowed)'
        )
    return "Final answer (allowed by Akto)" if last == "allow" else f"Final answer ({last})"


def run_demo(
    *,
    live: bool = False,
    out: TextIO = sys.stdout,
    runs: int = 1,
    policy: Any = None,
    faults: Sequence[str] = (),
    meter_provider: Any = None,
    akto_url: str | None = None,
    pause: float = 0.0,
    outcome: str = "default",
) -> DemoResult:
    """Run the demo session ``runs`` times (plus one run per fault) and print the trace.

    ``outcome`` is what the policy does to the two Bash calls (a key of
    :data:`ANSWERS`: ``"all-denied"`` with :func:`deny_heavy_policy`), so that the
    scripted model's final answer matches what was denied.

    ``policy`` is an emulator :class:`~akto_otel.emulator.Policy` (default policy when
    None); ``meter_provider`` gets the library's metrics (and the span-metrics
    counter); ``akto_url`` uses that Akto instead of starting the emulator; ``pause``
    seconds pass between runs. With more than one run, the tree of the first run is
    printed. Returns what it saw.
    """
    if live and not os.environ.get("ANTHROPIC_API_KEY"):
        raise SystemExit("--live needs ANTHROPIC_API_KEY")
    if runs < 0:
        raise SystemExit("--runs must be 0 or more")
    if pause < 0:
        raise SystemExit("--pause must be 0 or more")
    for fault in faults:
        if fault not in FAULTS:
            raise SystemExit(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
    if akto_url and "akto-slow" in faults:
        raise SystemExit("--fault akto-slow needs the built-in emulator (no --akto-url)")
    if outcome not in ANSWERS:
        raise SystemExit(f"unknown outcome {outcome!r}: use one of {', '.join(ANSWERS)}")
    plan = _Plan(live, runs, policy, tuple(faults), meter_provider, akto_url, pause, outcome)
    out.write(f'Prompt: "{DEMO_PROMPT}"\n')
    result = asyncio.run(_sessions(plan, out))
    title = "Trace" if result.runs <= 1 else "Trace of run 1"
    out.write(f"\n{title}:\n" + format_tree(_first_trace(result.spans)) + "\n")
    out.write(f'\n{answer_label(_last_trace(result.spans))}: "{result.final_text}"\n')
    decisions = ", ".join(f"{n} {d}" for d, n in sorted(result.decisions().items()))
    runs_text = f"{result.runs} runs, " if result.runs != 1 else ""
    records = f"{result.records} records reached Akto"
    if akto_url:
        records = f"records sent to {akto_url}"
    out.write(
        f"\nSummary: {runs_text}{len(result.spans)} spans, guardrail verdicts: "
        f"{decisions or 'none'}; {records}; {result.seconds:.1f} s\n"
    )
    out.write(_where_spans_went(result.exported_to) + "\n")
    return result


def _where_spans_went(exported_to: str) -> str:
    if exported_to:
        return f"The spans were printed above and also exported over OTLP to {exported_to}."
    return (
        "The trace above was printed from memory, not exported. To send it to a collector "
        "(OTLP), run: OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 akto-otel demo "
        "(see docs/observability.md)."
    )


def run_local_stack(
    port: int,
    *,
    runs: int = 1,
    linger: float = 0.0,
    host: str = "127.0.0.1",
    policy: Any = None,
    faults: Sequence[str] = (),
    akto_url: str | None = None,
    live: bool = False,
    pause: float = 0.0,
    out: TextIO = sys.stdout,
    outcome: str = "default",
) -> DemoResult:
    """The local stack mode: metrics on ``http://host:port/metrics`` while the demo
    runs ``runs`` times (``pause`` seconds apart, so that a scraper sees each run's
    increments), then served ``linger`` more seconds (Ctrl-C stops early)."""
    meter_provider = serve_prometheus(port, host)
    out.write(f"Metrics on http://{host}:{port}/metrics (OpenTelemetry Prometheus exporter)\n")
    out.flush()
    try:
        result = run_demo(
            live=live,
            out=out,
            runs=runs,
            policy=policy,
            faults=faults,
            meter_provider=meter_provider,
            akto_url=akto_url,
            pause=pause,
            outcome=outcome,
        )
        if linger > 0:
            out.write(f"Serving metrics for {linger:g} s more (Ctrl-C to stop)\n")
            out.flush()
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(linger)
    finally:
        meter_provider.shutdown()
    return result
