"""OTLP logs -> Akto ``/api/ingestData`` records, mapped the way Akto's own service does.

A pure mirror of Akto's OTLP ingestion service (public akto repository,
``apps/otel-ingestion-service``: ``pkg/decode/decode.go``, ``pkg/adapter/registry.go``,
``pkg/adapter/claude_code.go``, ``pkg/adapter/raw.go``, ``pkg/sink/ingest_mapper.go``),
so the emulator's ``POST /v1/logs`` stores what Akto would store:

- decode ``ExportLogsServiceRequest`` from http/json or http/protobuf (by
  ``Content-Type``: ``json`` -> JSON; ``protobuf`` or none -> protobuf; anything else
  protobuf then JSON); every attribute becomes a string (pdata's ``AsString``);
  resource attributes are merged under the record's;
- the event name is the record's ``eventName``, else its body as a string; the
  Claude Code adapter takes names with the ``claude_code.`` prefix, the six bare
  names, or any record of a ``cowork`` / ``claude-code`` service, and adds the prefix;
- ``user_prompt`` / ``api_request`` / ``assistant_response`` events of one
  ``prompt.id`` (else the correlation id) merge into one ``/v1/messages`` record;
  ``api_request`` and internal hook events never become records; tool events become
  ``/tool/<name>`` (MCP tools ``/mcp`` JSON-RPC, the whole attribute map as arguments);
- every record carries ``publishToGuardrails: true``, connector ``claude_cowork``,
  ``mode: observe`` in its tag, the host ``<device>.ai-agent.claude_cowork``, and
  ``time`` in epoch **seconds**.

Merging is per request, as in the Akto version this mirrors (newer Akto versions
also hold an incomplete turn for up to 5 minutes to merge it with a later request).
JSON is written the way Go's ``encoding/json`` writes it (sorted map keys, ``<>&``
escaped), so stored records compare byte for byte.

Usage::

    from akto_otel.emulator.otlp_ingest import map_logs

    records = map_logs(body, "application/x-protobuf", account_id=1000000)
    # -> [{"path": "/v1/messages", "requestPayload": "...", "publishToGuardrails": True, ...}]

    # A whole POST /v1/logs (auth, size, decoding, the OTLP response):
    answer = handle_logs_request(body, content_type=ct, authorization=auth, token="secret")
    # answer.status, answer.body, answer.content_type; answer.records to store

One divergence, on purpose: Akto answers 200 as soon as a request is queued and drops
an undecodable body later in its worker; here such a body is answered 400 at once, so
a test sees it.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = [
    "MAX_BODY_BYTES",
    "LogsResponse",
    "OtlpDecodeError",
    "OtlpEvent",
    "decode_logs",
    "handle_logs_request",
    "map_logs",
    "to_ingest_records",
]

DEFAULT_ACCOUNT_ID = 1000000
#: Akto's default ``OTLP_MAX_BATCH_BYTES``: a larger body is answered 413.
MAX_BODY_BYTES = 4 * 1024 * 1024
_CLAUDE_SERVICES = frozenset({"cowork", "claude-code", "claude_code"})
_CLAUDE_EVENTS = frozenset(
    {
        "user_prompt",
        "assistant_response",
        "tool_result",
        "tool_decision",
        "api_request",
        "api_error",
    }
)
_PREFIX = "claude_code."
_CONNECTOR = "claude_cowork"
_SKIP_INGEST = frozenset(
    {"plugin_loaded", "hook_execution_start", "hook_execution_complete", "api_request"}
)
_SKIP_MERGE = frozenset(
    {
        "plugin_loaded",
        "hook_execution_start",
        "hook_execution_complete",
        "tool_decision",
        "tool_result",
    }
)
_SLUG = re.compile(r"[^a-z0-9._~-]+")
_MAX_DEVICE_PREFIX = 12


class OtlpDecodeError(ValueError):
    """The body is not an OTLP logs export request in the encoding it claims."""


@dataclass
class OtlpEvent:
    """One log record after Akto's adapters: every attribute a string."""

    event_name: str
    attributes: dict[str, str]
    timestamp_ns: int
    correlation_id: str
    account_id: int = DEFAULT_ACCOUNT_ID
    source: str = "claude_code"
    resource: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- JSON like Go


def _go_float(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return f"json: unsupported value: {value}"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)


def _go_numbers(value: Any) -> Any:
    """Decoded JSON as Go's ``interface{}`` holds it: every number a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 1e21 else number
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _go_numbers(v) for k, v in value.items()}
    return value


def go_json(value: Any) -> str:
    """``json.Marshal`` output: compact, map keys sorted, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


# --------------------------------------------------------------------------- decoding


def _pb_raw(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return int(value.int_value)
    if kind == "double_value":
        return float(value.double_value)
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [_pb_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_raw(kv.value) for kv in value.kvlist_value.values}
    return None


def _json_raw(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return None
    if "stringValue" in value:
        return str(value["stringValue"])
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            raise OtlpDecodeError(f"bad intValue {value['intValue']!r}") from None
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            raise OtlpDecodeError(f"bad doubleValue {value['doubleValue']!r}") from None
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "bytesValue" in value:
        return str(value["bytesValue"])
    if "arrayValue" in value:
        return [_json_raw(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return {
            str(kv.get("key", "")): _json_raw(kv.get("value"))
            for kv in (value["kvlistValue"] or {}).get("values", [])
        }
    return None


def _as_string(raw: Any) -> str:
    """pdata's ``Value.AsString``."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return _go_float(raw)
    return go_json(raw)


@dataclass(frozen=True)
class _Record:
    resource: dict[str, str]
    attributes: dict[str, str]
    event_name: str
    body: str
    time_unix_nano: int


def _from_protobuf(body: bytes) -> list[_Record]:
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError (its package ships no type stubs)
        raise OtlpDecodeError(f"not an OTLP logs protobuf: {exc}") from None
    out: list[_Record] = []
    for rl in request.resource_logs:
        resource = {kv.key: _as_string(_pb_raw(kv.value)) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                out.append(
                    _Record(
                        resource,
                        {kv.key: _as_string(_pb_raw(kv.value)) for kv in lr.attributes},
                        lr.event_name,
                        _as_string(_pb_raw(lr.body)),
                        int(lr.time_unix_nano),
                    )
                )
    return out


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{what} is not a list")
    return value


def _from_json(body: bytes) -> list[_Record]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise OtlpDecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OtlpDecodeError("an OTLP JSON request is an object")
    out: list[_Record] = []
    for rl in _list(data.get("resourceLogs"), "resourceLogs"):
        if not isinstance(rl, dict):
            raise OtlpDecodeError("a resourceLogs entry is not an object")
        resource_attrs = _list((rl.get("resource") or {}).get("attributes"), "attributes")
        resource = {
            str(kv.get("key")): _as_string(_json_raw(kv.get("value"))) for kv in resource_attrs
        }
        for sl in _list(rl.get("scopeLogs"), "scopeLogs"):
            if not isinstance(sl, dict):
                raise OtlpDecodeError("a scopeLogs entry is not an object")
            for lr in _list(sl.get("logRecords"), "logRecords"):
                if not isinstance(lr, dict):
                    raise OtlpDecodeError("a log record is not an object")
                try:
                    nanos = int(lr.get("timeUnixNano") or 0)
                except (TypeError, ValueError):
                    raise OtlpDecodeError("bad timeUnixNano") from None
                attrs = _list(lr.get("attributes"), "attributes")
                out.append(
                    _Record(
                        resource,
                        {
                            str(kv.get("key")): _as_string(_json_raw(kv.get("value")))
                            for kv in attrs
                        },
                        str(lr.get("eventName") or ""),
                        _as_string(_json_raw(lr.get("body"))),
                        nanos,
                    )
                )
    return out


def _records(body: bytes, content_type: str) -> list[_Record]:
    ct = content_type.strip().lower()
    if "json" in ct:
        return _from_json(body)
    if "protobuf" in ct or not ct:
        return _from_protobuf(body)
    try:
        return _from_protobuf(body)
    except OtlpDecodeError:
        return _from_json(body)


def _first(attrs: Mapping[str, str], *keys: str) -> str:
    for key in keys:
        value = attrs.get(key, "")
        if value:
            return value
    return ""


def decode_logs(
    body: bytes, content_type: str, *, account_id: int = DEFAULT_ACCOUNT_ID
) -> list[OtlpEvent]:
    """The events Akto's adapters make of an OTLP logs request (no merging yet).

    Raises :class:`OtlpDecodeError` for a body that is not one.
    """
    events: list[OtlpEvent] = []
    for rec in _records(body, content_type):
        name = rec.event_name or rec.body
        attrs = {**rec.resource, **rec.attributes}
        nanos = rec.time_unix_nano or time.time_ns()
        service = rec.resource.get("service.name", "").lower()
        if name.startswith(_PREFIX) or service in _CLAUDE_SERVICES or name in _CLAUDE_EVENTS:
            if name and not name.startswith(_PREFIX):
                name = _PREFIX + name
            correlation = _first(attrs, "prompt.id", "prompt_id") or attrs.get("session.id", "")
            source = "claude_code"
        else:
            name = name or "unknown"
            correlation = _first(attrs, "prompt.id", "trace_id", "session.id")
            source = "raw"
        events.append(
            OtlpEvent(name, attrs, nanos, correlation, account_id, source, dict(rec.resource))
        )
    return events


# --------------------------------------------------------------------------- mapping


def _hook(event_name: str) -> str:
    return event_name[len(_PREFIX) :] if event_name.startswith(_PREFIX) else event_name


def _int_attr(attrs: Mapping[str, str], key: str) -> int:
    try:
        return int(attrs.get(key, ""))
    except ValueError:
        return 0


@dataclass
class _Turn:
    base: OtlpEvent
    prompt: str = ""
    response: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    has_user_prompt: bool = False


def _merge_turns(events: Sequence[OtlpEvent]) -> list[OtlpEvent]:
    by_prompt: dict[str, _Turn] = {}
    out: list[OtlpEvent] = []
    for e in events:
        hook = _hook(e.event_name)
        if hook in _SKIP_MERGE:
            out.append(e)
            continue
        prompt_id = _first(e.attributes, "prompt.id", "prompt_id") or e.correlation_id
        if not prompt_id:
            if hook in ("user_prompt", "assistant_response"):
                out.append(e)
            continue
        turn = by_prompt.setdefault(prompt_id, _Turn(e))
        if hook == "user_prompt":
            turn.has_user_prompt = True
            turn.prompt = e.attributes.get("prompt") or turn.prompt
            if e.timestamp_ns < turn.base.timestamp_ns:
                turn.base = e
        elif hook == "assistant_response":
            turn.response = e.attributes.get("response") or turn.response
            turn.model = e.attributes.get("model") or turn.model
            turn.base = e
        elif hook == "api_request":
            turn.model = e.attributes.get("model") or turn.model
            turn.input_tokens = _int_attr(e.attributes, "input_tokens") or turn.input_tokens
            turn.output_tokens = _int_attr(e.attributes, "output_tokens") or turn.output_tokens
            turn.base = e
    for prompt_id, turn in by_prompt.items():
        attrs = dict(turn.base.attributes)
        attrs["prompt.id"] = prompt_id
        for key, value in (
            ("prompt", turn.prompt),
            ("response", turn.response),
            ("model", turn.model),
        ):
            if value:
                attrs[key] = value
        if turn.input_tokens > 0:
            attrs["input_tokens"] = str(turn.input_tokens)
        if turn.output_tokens > 0:
            attrs["output_tokens"] = str(turn.output_tokens)
        if turn.response or turn.model or turn.input_tokens > 0 or turn.output_tokens > 0:
            name = _PREFIX + "assistant_response"
        elif turn.has_user_prompt:
            name = _PREFIX + "user_prompt"
        else:
            continue
        base = turn.base
        out.append(
            OtlpEvent(
                name, attrs, base.timestamp_ns, base.correlation_id, base.account_id, base.source
            )
        )
    return out


def _parse_mcp(tool_name: str) -> tuple[str, str]:
    if not tool_name.startswith("mcp__"):
        return "", ""
    parts = tool_name.split("__")
    if len(parts) < 3 or not parts[1] or not "__".join(parts[2:]):
        return "", ""
    return parts[1], "__".join(parts[2:])


def _tool_path_name(tool_name: str) -> str:
    name = _SLUG.sub("-", (tool_name.strip() or "unknown").lower()).strip("-")
    return name or "unknown"


def _truncate_device(value: str) -> str:
    for sep in (".", "-"):
        idx = value.find(sep)
        if idx > 0 and idx <= _MAX_DEVICE_PREFIX:
            return value[:idx]
    return value[:_MAX_DEVICE_PREFIX]


def _device(attrs: Mapping[str, str]) -> str:
    for key in ("user.id", "session.id"):
        if attrs.get(key):
            return _truncate_device(attrs[key])
    return "cowork"


def _os(value: str) -> str:
    return {
        "darwin": "mac",
        "macos": "mac",
        "mac": "mac",
        "windows": "windows",
        "win32": "windows",
        "win": "windows",
        "linux": "linux",
    }.get(value.strip().lower(), "")


def _json_or_string(text: str) -> Any:
    try:
        return _go_numbers(json.loads(text))
    except ValueError:
        return text


def _messages_response(model: str, text: str, input_tokens: int, output_tokens: int) -> str:
    payload: dict[str, Any] = {}
    if model:
        payload["model"] = model
    if text:
        payload["content"] = [{"type": "text", "text": text}]
    usage = {}
    if input_tokens > 0:
        usage["input_tokens"] = input_tokens
    if output_tokens > 0:
        usage["output_tokens"] = output_tokens
    if usage:
        payload["usage"] = usage
    return go_json(payload) if payload else "{}"


def _path_and_payloads(
    e: OtlpEvent, hook: str, tool_name: str, mcp_tool: str
) -> tuple[str, str, str]:
    attrs = e.attributes
    if hook in ("user_prompt", "assistant_response"):
        prompt, response, model = (
            attrs.get("prompt", ""),
            attrs.get("response", ""),
            attrs.get("model", ""),
        )
        inputs, outputs = _int_attr(attrs, "input_tokens"), _int_attr(attrs, "output_tokens")
        body = prompt or (attrs.get("prompt_length", "") if hook == "user_prompt" else "")
        response_payload = "{}"
        if hook == "assistant_response" or response or model or inputs > 0 or outputs > 0:
            response_payload = _messages_response(model, response, inputs, outputs)
        return "/v1/messages", go_json({"body": body}), response_payload
    if hook in ("tool_decision", "tool_result"):
        if mcp_tool:
            rpc = {
                "jsonrpc": "2.0",
                "method": "tools/call",
                "params": {"name": mcp_tool, "arguments": attrs},
                "id": 1,
            }
            return "/mcp", go_json(rpc), "{}"
        raw_input = _first(attrs, "tool_input", "tool.input", "tool_args")
        tool_body = _json_or_string(raw_input) if raw_input else attrs
        request = go_json({"body": tool_body, "toolName": tool_name})
        path = "/tool/" + _tool_path_name(tool_name)
        if hook == "tool_result":
            raw_output = _first(attrs, "tool_response", "tool.response", "tool_output")
            result = _json_or_string(raw_output) if raw_output else attrs
            return path, request, go_json({"body": {"result": result}})
        return path, request, "{}"
    return f"/cowork/{e.event_name}", go_json(attrs), "{}"


def _ingest_record(e: OtlpEvent) -> dict[str, Any]:
    attrs = e.attributes
    device = _device(attrs)
    hook = _hook(e.event_name)
    prompt_id = _first(attrs, "prompt.id", "prompt_id")
    session_id = attrs.get("session.id", "")
    email = _first(attrs, "user.email", "user_email")
    tool_name = (
        _first(attrs, "tool_name", "tool.name") if hook in ("tool_decision", "tool_result") else ""
    )
    mcp_server, mcp_tool = _parse_mcp(tool_name)
    is_mcp = bool(mcp_server and mcp_tool)
    host = f"{device}.{_CONNECTOR}.{mcp_server}" if is_mcp else f"{device}.ai-agent.{_CONNECTOR}"
    os_name = _os(_first(attrs, "os.type", "os_type"))
    tag = {
        "gen-ai": "Gen AI",
        "source": "ENDPOINT",
        "hook": hook,
        "akto_connector": _CONNECTOR,
        "mode": "observe",
    }
    if is_mcp:
        tag["mcp-server"] = "MCP Server"
        tag["mcp-client"] = _CONNECTOR
    else:
        tag["ai-agent"] = _CONNECTOR
    for key, value in (
        ("prompt_id", prompt_id),
        ("session_id", session_id),
        ("username", email),
        ("os", os_name),
        ("tool_name", tool_name),
    ):
        if value:
            tag[key] = value
    headers = {
        "host": host,
        "content-type": "application/json",
        "x-otel-event": e.event_name,
        "x-claude_cowork-hook": hook,
        "x-akto-installer-device_id": device,
        "x-akto-installer-akto_session_id": session_id,
        "x-akto-installer-session_id": session_id,
        "x-akto-installer-akto_message_id": prompt_id,
    }
    for key, value in (
        ("x-akto-installer-user_email", email),
        ("x-akto-installer-os", os_name),
        ("x-akto-installer-os_version", _first(attrs, "os.version", "os_version")),
        ("x-akto-installer-arch", _first(attrs, "host.arch", "host_arch")),
        ("x-tool-name", tool_name),
        ("x-mcp-server", mcp_server),
    ):
        if value:
            headers[key] = value
    path, request_payload, response_payload = _path_and_payloads(
        e, hook, tool_name, mcp_tool if is_mcp else ""
    )
    return {
        "path": path,
        "requestHeaders": go_json(headers),
        "responseHeaders": "{}",
        "method": "POST",
        "requestPayload": request_payload,
        "responsePayload": response_payload,
        "ip": email or "127.0.0.1",
        "destIp": "",
        "time": str(e.timestamp_ns // 1_000_000_000),
        "statusCode": "200",
        "type": "HTTP/1.1",
        "status": "OK",
        "akto_account_id": str(e.account_id),
        "akto_vxlan_id": device,
        "is_pending": "false",
        "source": "MIRRORING",
        "tag": go_json(tag),
        "publishToGuardrails": True,
    }


def to_ingest_records(events: Sequence[OtlpEvent]) -> list[dict[str, Any]]:
    """The ``batchData`` Akto's service posts to ``/api/ingestData`` for ``events``."""
    return [
        _ingest_record(e) for e in _merge_turns(events) if _hook(e.event_name) not in _SKIP_INGEST
    ]


def map_logs(
    body: bytes, content_type: str, *, account_id: int = DEFAULT_ACCOUNT_ID
) -> list[dict[str, Any]]:
    """An OTLP logs request (``POST /v1/logs`` body) -> Akto ingestData records.

    Raises :class:`OtlpDecodeError` (answer 400) for a body that is not one.
    """
    return to_ingest_records(decode_logs(body, content_type, account_id=account_id))


@dataclass(frozen=True)
class LogsResponse:
    """What to answer a ``POST /v1/logs``, and the records to store (empty unless 200)."""

    status: int
    body: bytes
    content_type: str
    records: list[dict[str, Any]] = field(default_factory=list)


def _token_from_header(header: str) -> str:
    """Akto's ``TokenFromHeader``: ``Bearer <token>`` (any case) or the raw header."""
    header = header.strip()
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return header


def handle_logs_request(
    body: bytes,
    *,
    content_type: str,
    authorization: str | None,
    token: str | None,
    account_id: int = DEFAULT_ACCOUNT_ID,
) -> LogsResponse:
    """Answer one ``POST /v1/logs`` the way Akto's OTLP service does (see module notes).

    ``token`` None accepts any caller (Akto with authentication off); else the
    ``Authorization`` header must carry it (``Bearer <token>`` or raw): 401 otherwise.
    Over :data:`MAX_BODY_BYTES`: 413. Not an OTLP logs request: 400. Otherwise 200
    with an empty export response in the request's encoding (``{}`` for JSON, an
    empty ``ExportLogsServiceResponse`` for protobuf) and the mapped records.
    """
    text = "text/plain; charset=utf-8"
    if token is not None:
        given = _token_from_header(authorization or "")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return LogsResponse(401, b"unauthorized\n", text)
    if len(body) > MAX_BODY_BYTES:
        return LogsResponse(413, b"payload too large\n", text)
    try:
        records = map_logs(body, content_type, account_id=account_id)
    except OtlpDecodeError as exc:
        return LogsResponse(400, f"bad request: {exc}\n".encode(), text)
    if "json" in content_type.lower():
        return LogsResponse(200, b"{}", "application/json", records)
    response = ExportLogsServiceResponse().SerializeToString()
    return LogsResponse(200, response, "application/x-protobuf", records)
