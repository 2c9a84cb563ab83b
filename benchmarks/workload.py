"""Realistic hook inputs, records and akto_otel objects wired the way an app wires them."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar, cast

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.contract import WireContext, tool_request_record, tool_result_record
from akto_otel.guardrails import GuardrailClient

__all__ = [
    "HOLD_SPANS",
    "TOOL_INPUT",
    "TOOL_RESPONSE",
    "Hook",
    "NoopSpanExporter",
    "hook_callbacks",
    "make_guard",
    "make_provider",
    "post_tool_input",
    "pre_tool_input",
    "prompt_input",
    "quiet_logs",
    "stop_input",
    "timed_hooks",
    "tool_record",
    "tool_result",
]

TOOL_INPUT: dict[str, Any] = {
    "command": "ls -la /workspace/project/src && git status --short",
    "description": "List the source folder and show the working tree status",
}
TOOL_RESPONSE: dict[str, Any] = {
    "stdout": "\n".join(
        f"-rw-r--r-- 1 dev dev {1000 + i} Jan 1 12:00 module_{i}.py" for i in range(24)
    ),
    "stderr": "",
    "interrupted": False,
    "isImage": False,
}


_Options = TypeVar("_Options", bound=Any)

#: A hook callback as the SDK calls it: (input, tool_use_id, context) -> output.
Hook = Callable[[Any, "str | None", Any], Awaitable[Any]]


def hook_callbacks(guard: AktoGuardrails) -> dict[str, Hook]:
    """Event name -> akto_otel's callback for it, from ``guard.hooks()``."""
    return {event: cast(Hook, matchers[0].hooks[0]) for event, matchers in guard.hooks().items()}


def timed_hooks(
    options: _Options,
    samples: dict[Any, list[int]],
    *,
    key: Callable[[], Any] = lambda: None,
    events: Collection[str] | None = None,
) -> _Options:
    """``options`` with each hook callback (of ``events``; default every one) timed:
    its nanoseconds appended to ``samples[key()]``, ``key()`` taken before the call."""

    def wrap(event: str, callback: Any) -> Any:
        if events is not None and event not in events:
            return callback

        async def timed(input_data: Any, tool_use_id: str | None, context: Any) -> Any:
            into = samples.setdefault(key(), [])
            began = time.perf_counter_ns()
            try:
                return await callback(input_data, tool_use_id, context)
            finally:
                into.append(time.perf_counter_ns() - began)

        return timed

    hooks = {
        event: [dataclasses.replace(m, hooks=[wrap(event, cb) for cb in m.hooks]) for m in matchers]
        for event, matchers in (options.hooks or {}).items()
    }
    return dataclasses.replace(options, hooks=hooks)


def _common(session_id: str, event: str) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "transcript_path": f"/root/.claude/projects/-workspace-project/{session_id}.jsonl",
        "cwd": "/workspace/project",
        "permission_mode": "default",
        "prompt_id": f"prompt-{session_id}",
        "hook_event_name": event,
    }


def pre_tool_input(session_id: str = "bench-session-0") -> dict[str, Any]:
    """What the CLI sends with PreToolUse (shape observed on the real CLI)."""
    data = _common(session_id, "PreToolUse")
    data.update(tool_name="Bash", tool_input=dict(TOOL_INPUT))
    return data


def post_tool_input(
    session_id: str = "bench-session-0", *, with_result: bool = True
) -> dict[str, Any]:
    data = _common(session_id, "PostToolUse")
    data.update(
        tool_name="Bash",
        tool_input=dict(TOOL_INPUT),
        tool_response=dict(TOOL_RESPONSE) if with_result else {},
        duration_ms=12,
    )
    return data


def prompt_input(session_id: str = "bench-session-0") -> dict[str, Any]:
    data = _common(session_id, "UserPromptSubmit")
    data["prompt"] = "List the files of the project and tell me which ones changed."
    return data


def stop_input(session_id: str = "bench-session-0") -> dict[str, Any]:
    data = _common(session_id, "Stop")
    data.update(
        stop_hook_active=False,
        last_assistant_message="The project has 24 modules; module_3.py and module_7.py changed.",
        background_tasks=[],
    )
    return data


def tool_record() -> dict[str, Any]:
    """The PreToolUse record akto_otel sends for :data:`TOOL_INPUT`."""
    ctx = WireContext().with_session("bench-session-0", "prompt-bench-session-0")
    return tool_request_record(ctx, "Bash", TOOL_INPUT)


def tool_result(index: int = 0) -> dict[str, Any]:
    """A PostToolUse record (the ingestion unit), about 2.5 KB of JSON."""
    ctx = WireContext().with_session(f"bench-session-{index % 64}", "prompt-0")
    return tool_result_record(ctx, "Bash", TOOL_INPUT, TOOL_RESPONSE)


class NoopSpanExporter(SpanExporter):
    """Accepts spans and drops them (stands in for an OTLP exporter)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


#: A BatchSpanProcessor that exports nothing during a measuring window: no scheduled
#: export for an hour, and a batch (and queue) larger than any window fills.
HOLD_SPANS: dict[str, Any] = {
    "schedule_delay_millis": 3_600_000,
    "max_export_batch_size": 1 << 22,
    "max_queue_size": 1 << 22,
}


def make_provider(*, hold_spans: bool = False) -> TracerProvider:
    """An SDK TracerProvider with a BatchSpanProcessor and a no-op exporter.

    ``hold_spans``: the processor keeps every ended span queued (:data:`HOLD_SPANS`)
    until shutdown, so what a call leaves alive can be counted after it.
    """
    provider = TracerProvider(shutdown_on_exit=False)
    batch = HOLD_SPANS if hold_spans else {}
    provider.add_span_processor(BatchSpanProcessor(NoopSpanExporter(), **batch))
    return provider


def make_guard(
    settings: Settings,
    *,
    provider: TracerProvider | None = None,
    client: GuardrailClient | None = None,
    metrics: bool = False,
) -> AktoGuardrails:
    """An AktoGuardrails as an app builds it, spans to ``provider`` (a fresh one if None)."""
    meter_provider = MeterProvider() if metrics else None
    return AktoGuardrails(
        settings,
        tracer_provider=provider or make_provider(),
        meter_provider=meter_provider,
        client=client,
    )


def quiet_logs() -> None:
    """Keep akto_otel's warnings (e.g. Akto down) off stderr while still formatting them."""
    for name in ("akto_otel", "benchmarks", "opentelemetry"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        logger.propagate = False
