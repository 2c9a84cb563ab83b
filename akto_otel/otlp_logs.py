"""OTLP delivery of Akto records (``AKTO_DELIVERY=otlp``): Claude Code log events.

Instead of posting records to ``/api/ingestData``, each record leaves the process
as OpenTelemetry log records in the Claude Code event schema that Akto's OTLP
ingestion service reads (``POST /v1/logs``): ``claude_code.user_prompt``,
``claude_code.assistant_response``, ``claude_code.tool_decision`` and
``claude_code.tool_result``, with ``session.id``, ``prompt.id``, ``prompt``,
``response``, ``tool_name``, ``tool_input``, ``tool_response``. They are emitted
through the app's ``LoggerProvider`` (or one given here), so the standard OTLP log
exporter (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` and friends), a local collector and a
gateway fleet carry them. Guardrail verdicts do not go this way: they stay direct,
synchronous calls from each agent.

:func:`log_events` is the pure mapping (one contract record -> its events);
:class:`AktoLogExporter` runs it on the worker thread of
:class:`~akto_otel.processor.AktoSpanProcessor` and emits the events.

Content: the events carry the full prompt, answer, tool input and output whatever
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` says (that switch is for
spans): Akto must see the content to judge it. Every exporter of the
``LoggerProvider`` receives them, so give Akto its own provider when the app's also
feeds a general log store (docs/scale-out.md).

Every event carries ``akto.record.id``: the same value when a pipeline retries it,
different for every record, so a duplicate after a retry can be recognised.

Usage::

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from akto_otel import AktoGuardrails, AktoSpanProcessor, Settings

    logs = LoggerProvider()
    logs.add_log_record_processor(BatchLogRecordProcessor(otlp_log_exporter))
    settings = Settings.from_env(delivery="otlp")
    guard = AktoGuardrails(settings, processor=AktoSpanProcessor(settings, logger_provider=logs))

(``akto_otel.configure()`` with ``AKTO_DELIVERY=otlp`` builds that provider from the
``OTEL_*`` variables when the app has none.)
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The logs signal of OpenTelemetry Python lives under these underscore paths in every
# released version (it is still "development" status upstream); they are the paths
# the OTel documentation itself uses, and there is no other.
from opentelemetry._logs import LogRecord, SeverityNumber, get_logger_provider
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from akto_otel import semconv
from akto_otel.config import Settings
from akto_otel.contract import MAX_PROXY_STRING_CHARS, parse_claude_tool
from akto_otel.exporter import AktoSpanExporter, RecordSpan, claimed
from akto_otel.version import __version__

__all__ = [
    "EVENT_PREFIX",
    "MAX_EVENT_BYTES",
    "MAX_REQUEST_BYTES",
    "AktoLogExporter",
    "LogEvent",
    "UnmappableRecord",
    "log_batch_size",
    "log_events",
]

_log = logging.getLogger("akto_otel.otlp_logs")

#: Claude Code's event names carry this prefix (Akto's service accepts it with or without).
EVENT_PREFIX = "claude_code."
_SCOPE = "akto_otel"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_TRUNCATED = re.compile(r"\.\.\.\[truncated \d+ chars\]")
#: The largest event a record makes: two strings at the contract's cap (tool input and
#: output, or prompt and answer; UTF-8 never longer than the escaped text the cap
#: counts) and room for the attributes.
MAX_EVENT_BYTES = 2 * MAX_PROXY_STRING_CHARS + 16 * 1024
#: The largest OTLP logs request the app's batching may make. collector/agent.yaml's
#: receivers take 32 MiB and the gateways 48 MiB, so every request the agent
#: collector acknowledged also fits into a gateway.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


class UnmappableRecord(ValueError):
    """A record whose shape is not one the contract builds (a bug, counted as failed)."""


@dataclass(frozen=True)
class LogEvent:
    """One log record to emit: ``name`` without the prefix (``user_prompt``, ...)."""

    name: str
    attributes: dict[str, str | int]
    timestamp_ns: int
    blocked: bool = False
    severity: SeverityNumber = SeverityNumber.INFO

    @property
    def event_name(self) -> str:
        """The full event name, ``claude_code.<name>``."""
        return EVENT_PREFIX + self.name


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        raise UnmappableRecord(f"expected a JSON string, got {type(text).__name__}")
    try:
        return json.loads(text)
    except ValueError:
        raise UnmappableRecord("a payload is not JSON") from None


def _text(value: Any) -> str:
    """A payload value as the attribute text Akto reads (strings as they are, else JSON)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _body(payload: Any) -> Any:
    """``payload["body"]``; a truncated payload (no body) is kept whole, visibly."""
    if isinstance(payload, dict) and "body" in payload:
        return payload["body"]
    return payload


def _blocked_reason(response_payload: Any) -> str:
    body = _body(response_payload)
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return ""
    if isinstance(body, dict):
        reason = body.get("reason")
        return reason if isinstance(reason, str) else ""
    return ""


def _tool(record: dict[str, Any], headers: dict[str, Any]) -> tuple[str, Any, Any]:
    """(Claude's tool name, tool input, tool response or None) of a tool record."""
    request = _json(record.get("requestPayload"))
    response = _json(record.get("responsePayload", "{}"))
    server = headers.get("x-mcp-server")
    if isinstance(request, dict) and request.get("jsonrpc") == "2.0":
        params = request.get("params")
        params = params if isinstance(params, dict) else {}
        name = f"mcp__{server}__{params.get('name', '')}" if server else str(params.get("name"))
        result = response.get("result") if isinstance(response, dict) else None
        return name, params.get("arguments", {}), result
    body = _body(request)
    if isinstance(body, dict) and "toolArgs" in body:  # PostToolUse
        result_body = _body(response)
        result = result_body.get("result") if isinstance(result_body, dict) else result_body
        return str(body.get("toolName", "")), body["toolArgs"], result
    name = request.get("toolName", "") if isinstance(request, dict) else ""
    if not name:  # cut to a preview for size: the path still names the tool
        name = str(record.get("path", "")).rsplit("/", 1)[-1]
    return str(name), body, None


def log_events(
    record: dict[str, Any],
    *,
    record_id: str,
    user_id: str = "",
) -> list[LogEvent]:
    """The Claude Code log events that carry ``record`` (a contract record) to Akto.

    - a prompt record (UserPromptSubmit) -> ``user_prompt``;
    - a tool call record (PreToolUse) -> ``tool_decision`` (``decision`` ``reject``
      when blocked, else ``accept``);
    - a tool result record (PostToolUse) -> ``tool_result``;
    - a turn record (Stop, SubagentStop) -> ``user_prompt`` and ``assistant_response``
      with one ``prompt.id``, which Akto merges into one ``/v1/messages`` record.

    A blocked record's events carry ``akto.guardrail.decision=deny`` and
    ``akto.guardrail.reason``. Only the final, allowed answer of a prompt is keyed by
    the CLI's prompt id; a blocked answer or a subagent's answer gets its own
    ``prompt.id`` (``<prompt id>/<record id>``), because Akto keeps one record per
    ``prompt.id`` and would otherwise fold it into the final answer and lose it.
    ``event`` ids are ``<record_id>/<event name>``. Raises :class:`UnmappableRecord`
    for a record the contract does not build.
    """
    headers = _json(record.get("requestHeaders"))
    if not isinstance(headers, dict):
        raise UnmappableRecord("requestHeaders is not a JSON object")
    hook = headers.get("x-claude-hook")
    blocked = str(record.get("statusCode")) == "403"
    try:
        timestamp_ns = int(record.get("time", "")) * 1_000_000
    except ValueError:
        timestamp_ns = time.time_ns()
    session_id = str(headers.get("x-akto-installer-akto_session_id") or "")
    prompt_id = str(headers.get("x-akto-installer-akto_message_id") or "")
    common: dict[str, str | int] = {semconv.AKTO_HOOK: str(hook)}
    if session_id:
        common["session.id"] = session_id
    if user_id:
        common["user.id"] = user_id
    reason = _blocked_reason(_json(record.get("responsePayload", "{}"))) if blocked else ""
    if blocked:
        common[semconv.AKTO_GUARDRAIL_DECISION] = "deny"
        common[semconv.AKTO_GUARDRAIL_REASON] = reason
    payloads = f"{record.get('requestPayload')}{record.get('responsePayload')}"
    if "x-akto-truncated" in payloads or _TRUNCATED.search(payloads):
        common[semconv.AKTO_TRUNCATED] = "true"  # cut to the contract's limits, visibly
    severity = SeverityNumber.WARN if blocked else SeverityNumber.INFO

    def event(name: str, attributes: dict[str, str | int], key: str) -> LogEvent:
        merged = {**common, **attributes}
        merged["event.name"] = name
        if key:
            merged["prompt.id"] = key
        merged[semconv.AKTO_RECORD_ID] = f"{record_id}/{name}"
        return LogEvent(name, merged, timestamp_ns, blocked, severity)

    if hook == "UserPromptSubmit":
        prompt = _text(_body(_json(record.get("requestPayload"))))
        return [event("user_prompt", {"prompt": prompt, "prompt_length": len(prompt)}, prompt_id)]
    if hook in ("Stop", "SubagentStop"):
        prompt = _text(_body(_json(record.get("requestPayload"))))
        response = _text(_body(_json(record.get("responsePayload", "{}"))))
        key = prompt_id
        if blocked or hook == "SubagentStop" or not prompt_id:
            key = f"{prompt_id}/{record_id}" if prompt_id else record_id
        turn: dict[str, str | int] = {"prompt": prompt, "prompt_length": len(prompt)}
        return [
            event("user_prompt", turn, key),
            event("assistant_response", {**turn, "response": response}, key),
        ]
    if hook in ("PreToolUse", "PostToolUse"):
        tool_name, tool_input, tool_response = _tool(record, headers)
        attributes: dict[str, str | int] = {
            "tool_name": tool_name,
            "tool_input": _text(tool_input),
        }
        if parse_claude_tool(tool_name)[0]:
            attributes["mcp_server_name"] = parse_claude_tool(tool_name)[1]
        if hook == "PreToolUse":
            attributes["decision"] = "reject" if blocked else "accept"
            attributes["source"] = "hook"
            return [event("tool_decision", attributes, prompt_id)]
        attributes["tool_response"] = _text(tool_response)
        attributes["success"] = "true"
        return [event("tool_result", attributes, prompt_id)]
    raise UnmappableRecord(f"no Claude Code event for hook {hook!r}")


def log_batch_size(queue: int) -> int:
    """Events per OTLP logs request: a batch of events at the cap stays under the request limit."""
    return max(1, min(512, queue, MAX_REQUEST_BYTES // MAX_EVENT_BYTES))


def _record_ids(span: RecordSpan) -> list[str]:
    """A stable, unique id per record of ``span``: its key, made unique within the span.

    A record attached to a span with no valid ids (a no-op tracer) has an all-zero
    key that every such record shares: it gets a random id instead, once, so a
    retry of the same export still carries the same id.
    """
    seen: dict[str, int] = {}
    ids: list[str] = []
    for item in span.records:
        key = item.key
        trace_hex, span_hex, kind = [*key.split("-", 2), "", ""][:3]
        if not trace_hex.strip("0") or not span_hex.strip("0"):
            key = f"{uuid.uuid4().hex}-{kind}"
        n = seen.get(key, 0)
        seen[key] = n + 1
        ids.append(key if n == 0 else f"{key}#{n}")
    return ids


class AktoLogExporter(AktoSpanExporter):
    """Emits the records carried by :class:`RecordSpan` spans as Claude Code log events.

    ``logger_provider`` defaults to the global one, looked up at every export (an app
    may set it after the guard is built). Without an SDK ``LoggerProvider`` the
    records are counted as failed (``no_logger_provider``) and a warning is logged
    once: they are never dropped silently. ``stats.exported`` counts records handed
    to the logs pipeline; delivery beyond it is that pipeline's (its exporter, a
    collector's persistent queue).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        super().__init__(settings)
        self._provider = logger_provider
        self._taken = 0
        self._taken_lock = threading.Lock()
        self._warned = False
        self._user_id = self.settings.agent_id or self.settings.agent_name

    @property
    def taken(self) -> int:
        """Records handed to :meth:`export` so far."""
        return self._taken

    @property
    def settled(self) -> int:
        """Records handed to :meth:`export`: each is emitted or failed at once."""
        return self._taken

    @property
    def held(self) -> int:
        """Nothing is held here: the logs pipeline holds what was emitted."""
        return 0

    def evict_oldest(self, count: int) -> int:
        """Nothing held, nothing to evict."""
        return 0

    def _logger_provider(self) -> LoggerProvider | None:
        provider = self._provider if self._provider is not None else get_logger_provider()
        return provider if isinstance(provider, LoggerProvider) else None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Emit the events of the records in the carriers among ``spans``."""
        carriers = claimed(spans)
        count = sum(len(span.records) for span in carriers)
        with self._taken_lock:
            self._taken += count
        if not count:
            return SpanExportResult.SUCCESS
        provider = self._logger_provider()
        if provider is None:
            self.stats.add("failed", count, "no_logger_provider")
            if not self._warned:
                self._warned = True
                _log.warning(
                    "AKTO_DELIVERY=otlp but no OpenTelemetry SDK LoggerProvider is set: "
                    "%d Akto record(s) not delivered (set one, or use akto_otel.configure())",
                    count,
                )
            return SpanExportResult.FAILURE
        logger = provider.get_logger(_SCOPE, __version__)
        start = time.perf_counter()
        failed = 0
        for span in carriers:
            context = _log_context(span)
            for item, record_id in zip(span.records, _record_ids(span), strict=True):
                try:
                    for ev in log_events(item.record, record_id=record_id, user_id=self._user_id):
                        logger.emit(_log_record(ev, context))
                except Exception as exc:  # one bad record must not sink the others
                    failed += 1
                    reason = "unmappable" if isinstance(exc, UnmappableRecord) else "emit_error"
                    self.stats.add("failed", 1, reason)
                    _log.warning("Akto record not emitted as a log event: %s", exc)
        self.stats.add("exported", count - failed)
        self.stats.took(time.perf_counter() - start)
        return SpanExportResult.SUCCESS if not failed else SpanExportResult.FAILURE

    def begin_shutdown(self, deadline: float) -> None:
        """Nothing to cut short: emitting never waits on the network."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the logs pipeline, so what was emitted is exported now."""
        provider = self._logger_provider()
        return True if provider is None else bool(provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Flush (never shut down) the logs pipeline: the provider is the app's."""
        self.force_flush(int(self.settings.export_shutdown_timeout * 1000))


def _log_context(span: RecordSpan) -> Context | None:
    """The hook span as the log records' context, so logs and traces correlate."""
    ctx = span.get_span_context()
    if ctx is None or not ctx.trace_id or not ctx.span_id:
        return None
    linked = SpanContext(ctx.trace_id, ctx.span_id, is_remote=False, trace_flags=_SAMPLED)
    return set_span_in_context(NonRecordingSpan(linked))


def _log_record(event: LogEvent, context: Context | None) -> LogRecord:
    return LogRecord(
        timestamp=event.timestamp_ns,
        context=context,
        severity_number=event.severity,
        severity_text=event.severity.name,
        body=event.event_name,
        attributes=event.attributes,
        event_name=event.event_name,
    )
