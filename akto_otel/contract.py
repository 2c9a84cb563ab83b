"""Akto's wire contract: pure builders for records and URLs, and the verdict parser.

Byte-compatible with Akto's reference Claude Agent SDK connector: same key order,
same ``json.dumps`` encoding (default separators, ASCII escapes) of the nested JSON
strings. No I/O here; the time is an argument so records are reproducible.

Usage::

    from akto_otel.contract import WireContext, prompt_record, http_proxy_url, parse_verdict

    ctx = WireContext(client_ip="10.0.0.7")
    record = prompt_record(ctx, "hello", time_ms=1700000000000)
    url = http_proxy_url("https://akto.example", "claude_agent_sdk", guardrails=True)
    body = {"success": True, "data": {"guardrailsResult": {"Allowed": False, "Reason": "x"}}}
    verdict = parse_verdict(body)
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from akto_otel.config import Settings

__all__ = [
    "AKTO_FAIL_OPEN_REASON",
    "BLOCKED_BY",
    "DEFAULT_BLOCK_REASON",
    "MAX_PROXY_BODY_CHARS",
    "MAX_PROXY_STRING_CHARS",
    "PAYLOAD_LIMIT",
    "Decision",
    "Verdict",
    "VerdictFault",
    "WireContext",
    "dumps",
    "encode_ingest_batch",
    "encode_ingest_item",
    "encode_record",
    "fits_payload",
    "health_check_url",
    "http_proxy_url",
    "ingest_data_url",
    "ingest_record",
    "join_ingest_items",
    "parse_claude_tool",
    "parse_verdict",
    "payload_chars",
    "prompt_record",
    "read_verdict",
    "tool_path",
    "tool_request_record",
    "tool_request_value",
    "tool_result_record",
    "tool_result_values",
    "turn_record",
]

Record = dict[str, Any]
Decision = Literal["allow", "deny", "warn", "alert", "ask", "modify", "error"]

BLOCKED_BY = "Akto Proxy"
DEFAULT_BLOCK_REASON = "Policy violation"
DEFAULT_CLIENT_IP = "0.0.0.0"
PROMPT_PATH = "/v1/messages"
#: The server's default per-string limit on /api/http-proxy (about 256 Ki characters).
MAX_PROXY_STRING_CHARS = 256 * 1024
#: The server's default body limit on /api/http-proxy (2 Mi).
MAX_PROXY_BODY_CHARS = 2 * 1024 * 1024
#: Room left for the JSON escaping a payload string gets inside the record body.
_PAYLOAD_LIMIT = MAX_PROXY_STRING_CHARS - 1024
#: The longest payload string a judged record carries (longer content is windowed).
PAYLOAD_LIMIT = _PAYLOAD_LIMIT
_TRUNCATION_MARKER = "...[truncated {n} chars]"
_GEN_AI_TAGS = {"gen-ai": "Gen AI", "agent-name": "claude-agent"}
_INGEST_ONLY_FIELDS = ("contextSource", "metadata")
#: ``json.dumps(value, allow_nan=False)`` builds an encoder per call; one is enough.
_STRICT_ENCODER = json.JSONEncoder(allow_nan=False)
_UNSAFE_PATH_CHARS = re.compile(r"[^a-zA-Z0-9._~-]+")
_DASHES = re.compile(r"-+")
_MAX_DEPTH = 64
#: Identifiers (session and message ids, tool and server names) are short in
#: practice; an absurd one is cut so a header or path can never hit the server's
#: string limit.
MAX_IDENTIFIER_CHARS = 1024


# --------------------------------------------------------------------------- JSON encoding


def dumps(value: Any) -> str:
    """``json.dumps`` as the reference connector calls it, made total.

    Values json cannot encode (bytes, sets, datetimes, NaN, cycles, very deep
    nesting, custom objects) are turned into JSON-safe stand-ins instead of raising.
    """
    try:
        return _STRICT_ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        return _STRICT_ENCODER.encode(_json_safe(value, 0, set()))


def _json_safe(value: Any, depth: int, seen: set[int]) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return "[max depth]"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        if id(value) in seen:
            return "[cycle]"
        seen.add(id(value))
        try:
            return {
                k if isinstance(k, str) else _key(k): _json_safe(v, depth + 1, seen)
                for k, v in value.items()
            }
        finally:
            seen.discard(id(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        if id(value) in seen:
            return "[cycle]"
        seen.add(id(value))
        try:
            items: Iterable[Any] = value
            if isinstance(value, (set, frozenset)):
                items = sorted(value, key=repr)
            return [_json_safe(v, depth + 1, seen) for v in items]
        finally:
            seen.discard(id(value))
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _key(key: Any) -> str:
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key) if not isinstance(key, float) or math.isfinite(key) else str(key)
    try:
        return str(key)
    except Exception:
        return f"<unprintable {type(key).__name__}>"


def _truncate_strings(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        if len(value) <= cap:
            return value
        return value[:cap] + _TRUNCATION_MARKER.format(n=len(value) - cap)
    if isinstance(value, dict):
        return {k: _truncate_strings(v, cap) for k, v in value.items()}
    if isinstance(value, list):
        return [_truncate_strings(v, cap) for v in value]
    return value


def payload_chars(value: Any) -> int:
    """The length of ``value`` as a payload string, as the server measures it (escaped)."""
    return len(dumps(value))


def fits_payload(value: Any) -> bool:
    """True when ``value`` goes into a record whole, without :func:`_payload` cutting it."""
    return payload_chars(value) <= _PAYLOAD_LIMIT


def _payload(value: Any, limit: int = _PAYLOAD_LIMIT) -> str:
    """Encode ``value`` as a JSON string of at most ``limit`` characters.

    Long strings inside are cut with a marker, so the result stays valid JSON of
    the same shape; only a value too large in its structure is replaced by a
    ``{"x-akto-truncated": true, "preview": ...}`` object.
    """
    text = dumps(value)
    if len(text) <= limit:
        return text
    safe = json.loads(text)  # JSON-safe copy: the shape the server would have seen
    cap = limit // 2
    while cap >= 64:
        text = json.dumps(_truncate_strings(safe, cap))
        if len(text) <= limit:
            return text
        cap //= 2
    preview = json.dumps(safe)[: limit // 4]
    return json.dumps({"x-akto-truncated": True, "preview": preview})


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class WireContext:
    """The per-deployment values every record carries."""

    akto_host: str = "api.anthropic.com"
    client_ip: str = ""
    vxlan_id: str = "0"
    connector_value: str = "claude_agent_sdk"
    context_source: str = "AGENTIC"
    mcp_ingest_path: str = "/mcp"
    non_mcp_tool_path_prefix: str = "/tool"
    extra_request_headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings, client_ip: str = "") -> WireContext:
        return cls(
            akto_host=settings.akto_host,
            client_ip=client_ip,
            vxlan_id=settings.vxlan_id,
            connector_value=settings.connector_value,
            context_source=settings.context_source,
            mcp_ingest_path=settings.mcp_ingest_path,
            non_mcp_tool_path_prefix=settings.non_mcp_tool_path_prefix,
        )

    def with_session(self, session_id: str | None, message_id: str | None) -> WireContext:
        """A context whose requestHeaders carry Akto's session and message ids."""
        extra: list[tuple[str, str]] = []
        if session_id:
            extra.append(("x-akto-installer-akto_session_id", _identifier(session_id)))
        if message_id:
            extra.append(("x-akto-installer-akto_message_id", _identifier(message_id)))
        return WireContext(
            akto_host=self.akto_host,
            client_ip=self.client_ip,
            vxlan_id=self.vxlan_id,
            connector_value=self.connector_value,
            context_source=self.context_source,
            mcp_ingest_path=self.mcp_ingest_path,
            non_mcp_tool_path_prefix=self.non_mcp_tool_path_prefix,
            extra_request_headers=tuple(extra),
        )


def _identifier(value: str) -> str:
    return value if len(value) <= MAX_IDENTIFIER_CHARS else value[:MAX_IDENTIFIER_CHARS]


def parse_claude_tool(tool_name: str) -> tuple[bool, str, str]:
    """``mcp__<server>__<tool>`` -> (True, server, tool); anything else (False, "", "")."""
    if not tool_name.startswith("mcp__"):
        return False, "", ""
    parts = tool_name.split("__")
    if len(parts) < 3:
        return False, "", ""
    server, tool = parts[1], "__".join(parts[2:])
    if not server or not tool:
        return False, "", ""
    return True, server, tool


#: Tool names up to this long have their path remembered (a session calls a few tools).
_REMEMBERED_NAME_CHARS = 256


def tool_path(ctx: WireContext, tool_name: str) -> str:
    """The mirrored path of a tool call: the MCP path, or ``<prefix>/<normalized name>``."""
    if parse_claude_tool(tool_name)[0]:
        return ctx.mcp_ingest_path
    if len(tool_name) <= _REMEMBERED_NAME_CHARS:
        return _remembered_tool_path(ctx.non_mcp_tool_path_prefix, tool_name)
    return _tool_path(ctx.non_mcp_tool_path_prefix, tool_name)


def _tool_path(path_prefix: str, tool_name: str) -> str:
    prefix = (path_prefix or "/tool").strip()
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    prefix = prefix.rstrip("/") or "/tool"
    name = _UNSAFE_PATH_CHARS.sub("-", _identifier(tool_name or "unknown").strip())
    name = _DASHES.sub("-", name).strip("-") or "unknown"
    return f"{prefix}/{name}"


_remembered_tool_path = functools.lru_cache(maxsize=256)(_tool_path)


# The headers and tags of a session's records are the same on every call: encoded once.
@functools.lru_cache(maxsize=1024)
def _request_headers(ctx: WireContext, hook: str, mcp_server: str = "") -> str:
    headers = {"host": ctx.akto_host, "x-claude-hook": hook, "content-type": "application/json"}
    if mcp_server:
        headers["x-mcp-server"] = _identifier(mcp_server)
    headers.update(ctx.extra_request_headers)
    return json.dumps(headers)


@functools.lru_cache(maxsize=16)
def _hook_response_headers(hook: str, content_type: bool) -> str:
    headers = {"x-claude-hook": hook}
    if content_type:
        headers["content-type"] = "application/json"
    return json.dumps(headers)


def _blocked_response_headers(hook: str) -> str:
    return json.dumps(
        {"x-claude-hook": hook, "x-blocked-by": BLOCKED_BY, "content-type": "application/json"}
    )


def _blocked_body(reason: str) -> dict[str, str]:
    return {"x-blocked-by": BLOCKED_BY, "reason": reason or DEFAULT_BLOCK_REASON}


@functools.lru_cache(maxsize=64)
def _tags_json(items: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(items))


def _record(
    ctx: WireContext,
    *,
    path: str,
    request_headers: str,
    response_headers: str,
    request_payload: str,
    response_payload: str,
    status: str,
    tags: Mapping[str, str],
    time_ms: int | None,
) -> Record:
    tag = _tags_json(tuple(tags.items()))
    return {
        "path": path,
        "requestHeaders": request_headers,
        "responseHeaders": response_headers,
        "method": "POST",
        "requestPayload": request_payload,
        "responsePayload": response_payload,
        "ip": ctx.client_ip or DEFAULT_CLIENT_IP,
        "destIp": "127.0.0.1",
        "time": str(int(time.time() * 1000) if time_ms is None else time_ms),
        "statusCode": status,
        "type": "HTTP/1.1",
        "status": status,
        "akto_account_id": "1000000",
        "akto_vxlan_id": ctx.vxlan_id,
        "is_pending": "false",
        "source": "MIRRORING",
        "direction": None,
        "process_id": None,
        "socket_id": None,
        "daemonset_id": None,
        "enabled_graph": None,
        "tag": tag,
        "metadata": tag,
        "contextSource": ctx.context_source,
    }


def prompt_record(
    ctx: WireContext,
    prompt: str,
    *,
    blocked_reason: str | None = None,
    time_ms: int | None = None,
) -> Record:
    """A UserPromptSubmit record; ``blocked_reason`` makes it the 403 "blocked" variant."""
    hook = "UserPromptSubmit"
    blocked = blocked_reason is not None
    return _record(
        ctx,
        path=PROMPT_PATH,
        request_headers=_request_headers(ctx, hook),
        response_headers=(
            _blocked_response_headers(hook) if blocked else _hook_response_headers(hook, False)
        ),
        request_payload=_payload({"body": prompt.strip()}),
        response_payload=(
            json.dumps({"body": json.dumps(_blocked_body(blocked_reason or ""))})
            if blocked
            else "{}"
        ),
        status="403" if blocked else "200",
        tags=_GEN_AI_TAGS,
        time_ms=time_ms,
    )


def _tool_tags(ctx: WireContext, is_mcp: bool) -> dict[str, str]:
    if is_mcp:
        return {"mcp-server": "MCP Server", "mcp-client": ctx.connector_value}
    return {"gen-ai": "Gen AI", "ai-agent": ctx.connector_value}


def _jsonrpc_arguments(tool_input: Any) -> Any:
    if isinstance(tool_input, dict):
        return tool_input
    if tool_input is None:
        return {}
    return {"input": tool_input}


def _jsonrpc_call(tool: str, tool_input: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "tools/call",
        "params": {"name": tool, "arguments": _jsonrpc_arguments(tool_input)},
        "id": 1,
    }


def tool_request_value(tool_name: str, tool_input: Any) -> Any:
    """What a PreToolUse record's ``requestPayload`` encodes (before any cut)."""
    is_mcp, _, tool = parse_claude_tool(tool_name)
    if is_mcp:
        return _jsonrpc_call(tool, tool_input)
    return {"body": tool_input, "toolName": tool_name}


def tool_result_values(tool_name: str, tool_input: Any, tool_response: Any) -> tuple[Any, Any]:
    """What a PostToolUse record's ``requestPayload`` and ``responsePayload`` encode."""
    is_mcp, _, tool = parse_claude_tool(tool_name)
    if is_mcp:
        result = tool_response if isinstance(tool_response, dict) else {"output": tool_response}
        return _jsonrpc_call(tool, tool_input), {"jsonrpc": "2.0", "id": 1, "result": result}
    return {"body": {"toolName": tool_name, "toolArgs": tool_input}}, {
        "body": {"result": tool_response}
    }


def tool_request_record(
    ctx: WireContext,
    tool_name: str,
    tool_input: Any,
    *,
    blocked_reason: str | None = None,
    time_ms: int | None = None,
) -> Record:
    """A PreToolUse record (built-in or MCP tool); ``blocked_reason`` -> the 403 variant."""
    hook = "PreToolUse"
    is_mcp, server, _ = parse_claude_tool(tool_name)
    request_payload = _payload(tool_request_value(tool_name, tool_input))
    blocked = blocked_reason is not None
    return _record(
        ctx,
        path=tool_path(ctx, tool_name),
        request_headers=_request_headers(ctx, hook, server),
        response_headers=(
            _blocked_response_headers(hook) if blocked else _hook_response_headers(hook, False)
        ),
        request_payload=request_payload,
        response_payload=(
            json.dumps({"body": _blocked_body(blocked_reason or "")}) if blocked else "{}"
        ),
        status="403" if blocked else "200",
        tags=_tool_tags(ctx, is_mcp),
        time_ms=time_ms,
    )


def tool_result_record(
    ctx: WireContext,
    tool_name: str,
    tool_input: Any,
    tool_response: Any,
    *,
    time_ms: int | None = None,
) -> Record:
    """A PostToolUse record: the call and its result."""
    hook = "PostToolUse"
    is_mcp, server, _ = parse_claude_tool(tool_name)
    request, response = tool_result_values(tool_name, tool_input, tool_response)
    return _record(
        ctx,
        path=tool_path(ctx, tool_name),
        request_headers=_request_headers(ctx, hook, server),
        response_headers=_hook_response_headers(hook, True),
        request_payload=_payload(request),
        response_payload=_payload(response),
        status="200",
        tags=_tool_tags(ctx, is_mcp),
        time_ms=time_ms,
    )


def turn_record(
    ctx: WireContext,
    user_prompt: str,
    response_text: str,
    *,
    hook: str = "Stop",
    blocked_reason: str | None = None,
    time_ms: int | None = None,
) -> Record:
    """A Stop (or SubagentStop) record: the prompt and the assistant's answer."""
    blocked = blocked_reason is not None
    return _record(
        ctx,
        path=PROMPT_PATH,
        request_headers=_request_headers(ctx, hook),
        response_headers=(
            _blocked_response_headers(hook) if blocked else _hook_response_headers(hook, True)
        ),
        request_payload=_payload({"body": user_prompt}),
        response_payload=(
            json.dumps({"body": json.dumps(_blocked_body(blocked_reason or ""))})
            if blocked
            else _payload({"body": response_text})
        ),
        status="403" if blocked else "200",
        tags=_GEN_AI_TAGS,
        time_ms=time_ms,
    )


# --------------------------------------------------------------------------- URLs and bodies


def http_proxy_url(
    base_url: str,
    connector: str,
    *,
    guardrails: bool = False,
    response_guardrails: bool = False,
    ingest_data: bool = False,
) -> str:
    """``{base}/api/http-proxy?...`` with the flags in the reference connector's order."""
    params: list[str] = []
    if guardrails:
        params.append("guardrails=true")
    if response_guardrails:
        params.append("response_guardrails=true")
    params.append(f"akto_connector={connector}")
    if ingest_data:
        params.append("ingest_data=true")
    return f"{base_url}/api/http-proxy?{'&'.join(params)}"


def ingest_data_url(base_url: str) -> str:
    return f"{base_url}/api/ingestData"


def health_check_url(base_url: str) -> str:
    return f"{base_url}/healthCheck"


#: Printable ASCII but '"' and '\\': what a JSON string holds as it is.
_PLAIN_ASCII = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')
#: String values from this length on are escaped in bytes when they can be.
_LONG_STRING = 16 * 1024
#: Past one escaped character in this many, json's loop can be the faster (each
#: ``bytes.replace`` occurrence costs more than json's per-character step): at random
#: places they break even near 1 in 14; a payload of code, escapes in clusters, is
#: still 3x faster at 1 in 15.
_SPARSE = 12
_PAYLOAD_FIELDS = ("requestPayload", "responsePayload")


def _long_ascii_string(value: str) -> bytes | None:
    """``json.dumps(value)`` in bytes, quotes left off, for a string of printable
    ASCII with few quotes and backslashes; None for any other string.

    The megabyte a hook judges is mostly such a string (a window's payload is itself
    JSON: ASCII without a control character, a backslash per escaped newline), and
    two ``bytes.replace`` calls escape it in a quarter to a half of the time json's
    loop takes; near the density bound they take up to about 1.3x as long
    (``python -m benchmarks.escape_density``).
    """
    if not value.isascii():
        return None
    raw = value.encode("ascii")
    head = raw[:_LONG_STRING]
    if len(head.translate(None, _PLAIN_ASCII)) * _SPARSE > len(head):
        return None  # dense from the start: spare the whole pass below
    escaped = raw.translate(None, _PLAIN_ASCII)  # '"', '\\' and control characters
    if len(escaped) * _SPARSE > len(raw) or escaped.strip(b'"\\'):
        return None  # dense escapes, or control characters and DEL: json's loop
    return raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def _encode_object(value: dict[str, Any]) -> bytes:
    """``json.dumps(value).encode()`` byte for byte, a long payload of printable
    ASCII escaped by :func:`_long_ascii_string`."""
    fast: dict[str, bytes] = {}
    for name in _PAYLOAD_FIELDS:  # two lookups: a small record pays next to nothing
        item = value.get(name)
        if type(item) is str and len(item) >= _LONG_STRING:
            escaped = _long_ascii_string(item)
            if escaped is not None:
                fast[name] = escaped
    if not fast:
        return json.dumps(value).encode("utf-8")
    parts: list[bytes] = [b"{"]
    run: dict[Any, Any] = {}

    def flush() -> None:
        if run:
            if len(parts) > 1:
                parts.append(b", ")
            parts.append(json.dumps(run)[1:-1].encode("utf-8"))
            run.clear()

    for key, item in value.items():
        escaped = fast.get(key) if type(key) is str else None
        if escaped is None:
            run[key] = item
            continue
        flush()
        if len(parts) > 1:
            parts.append(b", ")
        parts += (b'"', key.encode("ascii"), b'": "', escaped, b'"')
    flush()
    parts.append(b"}")
    return b"".join(parts)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """The http-proxy body: the record as the reference connector encodes it."""
    if type(record) is dict:
        return _encode_object(record)
    return json.dumps(record).encode("utf-8")


def ingest_record(record: Mapping[str, Any]) -> Record:
    """The record as ``/api/ingestData`` takes it: without contextSource and metadata."""
    return {k: v for k, v in record.items() if k not in _INGEST_ONLY_FIELDS}


def encode_ingest_batch(records: Sequence[Mapping[str, Any]]) -> bytes:
    """The ``/api/ingestData`` body ``{"batchData": [...]}``."""
    return json.dumps({"batchData": [ingest_record(r) for r in records]}).encode("utf-8")


def encode_ingest_item(record: Mapping[str, Any], *, publish_to_guardrails: bool = False) -> bytes:
    """One record as it stands inside an ingestData batch (encode once, then join);
    with ``publish_to_guardrails``, ``"publishToGuardrails": true`` last (Akto judges it)."""
    item = ingest_record(record)
    if publish_to_guardrails:
        item["publishToGuardrails"] = True
    return _encode_object(item)


def join_ingest_items(items: Sequence[bytes]) -> bytes:
    """The ingestData body from encoded items: byte for byte ``encode_ingest_batch``.

    One join, one copy: a batch can pass a megabyte, and each ``+`` of one copies it
    again while the delivery worker holds the GIL (~0.7 ms against 45 µs at 1.3 MB).
    """
    parts = [b'{"batchData": [']
    for index, item in enumerate(items):
        if index:
            parts.append(b", ")
        parts.append(item)
    parts.append(b"]}")
    return b"".join(parts)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """What Akto (or the fail mode standing in for it) decided.

    ``allowed`` says whether the SDK lets the thing pass; ``decision`` is the
    low-cardinality label spans and metrics carry.
    """

    decision: Decision
    allowed: bool
    behaviour: str = ""
    reason: str = ""
    modified_payload: str | None = None
    fail_open: bool = False
    error: str | None = None
    latency_s: float = 0.0
    policy_name: str = ""
    rule_violated: str = ""
    severity: str = ""
    ran: bool = True
    #: ``Allowed`` as Akto sent it (None: no result, or unreadable); telemetry only,
    #: never read for a decision, so it takes no part in comparing verdicts.
    akto_allowed: bool | None = field(default=None, compare=False)

    @classmethod
    def allow(cls, *, ran: bool = False) -> Verdict:
        return cls(decision="allow", allowed=True, ran=ran)

    @classmethod
    def failure(cls, error: str, *, fail_closed: bool, reason: str = "") -> Verdict:
        """The verdict when Akto could not answer: deny when failing closed, else allow."""
        text = reason or f"Akto guardrails unavailable ({error})"
        return cls(
            decision="error",
            allowed=not fail_closed,
            reason=text,
            fail_open=not fail_closed,
            error=error,
            ran=False,
        )

    def with_latency(self, latency_s: float) -> Verdict:
        # A field-for-field copy: dataclasses.replace re-runs __init__ through the
        # field table, a tenth of a guarded call's own CPU.
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        object.__setattr__(copied, "latency_s", latency_s)
        return copied


class VerdictFault(ValueError):
    """A 200 reply that is not a verdict: nothing was judged, the fail mode decides.

    ``kind`` is the low-cardinality error kind the verdict carries:
    ``invalid_response`` (not Akto's shape, or an ``Allowed`` nobody can read),
    ``akto_error`` (``success`` is not true) or ``akto_fail_open`` (Akto's own
    engine did not judge and said so with ``failOpen: true``).
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


#: The reason a verdict gives when Akto's engine failed open and nothing judged the content.
AKTO_FAIL_OPEN_REASON = "Akto's guardrail engine did not judge this (it answered failOpen)"

_FALSY_STRINGS = frozenset({"false", "0", "no", "off"})


def _as_bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return default
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _FALSY_STRINGS:
            return False
        if lowered in ("true", "1", "yes", "on"):
            return True
        return default
    if isinstance(value, (int, float)):
        return bool(value)
    return default


def _allowed(value: Any) -> bool | None:
    """``Allowed`` as Akto sends it (a boolean, or the text true/false); None if unreadable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _as_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return dumps(value)


#: Behaviours under which a verdict passes whatever ``Allowed`` says.
_PASSING = ("warn", "alert")


def _side_verdict(result: Mapping[str, Any]) -> Verdict | VerdictFault:
    """One side's result: a verdict, or the fault that makes it none."""
    behaviour = _as_str(result.get("behaviour") or result.get("Behaviour")).strip().lower()
    allowed = given = _allowed(result.get("Allowed"))
    if allowed is None:
        if not behaviour or behaviour in _PASSING:
            return VerdictFault("invalid_response", "'Allowed' is missing or unreadable")
        allowed = False  # unreadable next to a blocking behaviour: the behaviour stands
    reason = _as_str(result.get("Reason") or result.get("reason"))
    metadata = result.get("Metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    modified = _as_bool(result.get("Modified"), False)
    payload = result.get("ModifiedPayload")
    common: dict[str, Any] = {
        "behaviour": behaviour,
        "reason": reason,
        "policy_name": _as_str(meta.get("policy_name")),
        "rule_violated": _as_str(meta.get("rule_violated")),
        "severity": _as_str(meta.get("severity")),
        "akto_allowed": given,
    }
    passes = allowed or behaviour in _PASSING
    if passes and _as_bool(result.get("failOpen"), False):
        return VerdictFault("akto_fail_open", "Akto's guardrail engine failed open")
    if modified and isinstance(payload, str) and payload and passes:
        return Verdict(decision="modify", allowed=True, modified_payload=payload, **common)
    if allowed:
        return Verdict(decision="allow", allowed=True, **common)
    if behaviour == "warn":
        return Verdict(decision="warn", allowed=True, **common)
    if behaviour == "alert":
        return Verdict(decision="alert", allowed=True, **common)
    if behaviour == "approval":
        return Verdict(decision="ask", allowed=False, **common)
    return Verdict(decision="deny", allowed=False, **common)


_SEVERITY = {"deny": 5, "ask": 4, "modify": 3, "warn": 2, "alert": 1, "allow": 0}


#: Answers up to this many bytes are remembered by :func:`read_verdict`.
_REMEMBERED_ANSWER_BYTES = 2048


def read_verdict(body: bytes) -> Verdict:
    """Decode and read an ``/api/http-proxy`` answer body (:func:`parse_verdict`).

    Raises ``ValueError`` for a body that is not JSON and :class:`VerdictFault` for
    one that is not a verdict. Akto answers most calls with the same few bodies, so
    the verdicts of small ones are remembered: the same bytes, the same verdict.
    """
    if len(body) <= _REMEMBERED_ANSWER_BYTES:
        return _read_remembered(body)
    return parse_verdict(json.loads(body))


@functools.lru_cache(maxsize=128)
def _read_remembered(body: bytes) -> Verdict:
    # Only verdicts are remembered: a fault raises, and is read again next time.
    return parse_verdict(json.loads(body))


def parse_verdict(body: Any) -> Verdict:
    """Read a ``/api/http-proxy`` answer (already JSON-decoded) into a :class:`Verdict`.

    Only a well-formed success is a verdict: an object with ``success: true`` and a
    ``data`` object. In it, no ``guardrailsResult`` means nothing ran: allow (as the
    reference connector does). Anything else raises :class:`VerdictFault`, whose
    ``kind`` the caller turns into the fail mode's verdict, as it does for an
    unreadable ``Allowed`` (unless a blocking behaviour stands next to it: then it
    is a deny) and for Akto's own ``failOpen: true``. When the server nested
    ``requestResult`` and ``responseResult``, the stricter side wins; a deny (or an
    approval request) wins over a side that is a fault.
    """
    if not isinstance(body, Mapping):
        raise VerdictFault("invalid_response", f"verdict body is a {type(body).__name__}")
    if body.get("success") is not True:
        kind = "akto_error" if "success" in body else "invalid_response"
        raise VerdictFault(kind, f"'success' is {body.get('success')!r}, not true")
    data = body.get("data")
    if not isinstance(data, Mapping):
        raise VerdictFault("invalid_response", f"verdict 'data' is a {type(data).__name__}")
    result = data.get("guardrailsResult")
    if result is None:
        return Verdict.allow()
    if not isinstance(result, Mapping):
        raise VerdictFault("invalid_response", f"'guardrailsResult' is a {type(result).__name__}")
    sides = [
        side
        for side in (result.get("requestResult"), result.get("responseResult"))
        if isinstance(side, Mapping)
    ]
    # The top level repeats the request side; without sides, or when it says something, read it.
    read = [result, *sides] if not sides or "Allowed" in result else sides
    outcomes = [_side_verdict(side) for side in read]
    verdicts = [o for o in outcomes if isinstance(o, Verdict)]
    faults = [o for o in outcomes if isinstance(o, VerdictFault)]
    # The first of the strictest: the top level wins a tie with a side.
    strictest = max(verdicts, key=lambda v: _SEVERITY.get(v.decision, 0), default=None)
    if strictest is not None and (not faults or strictest.decision in ("deny", "ask")):
        return strictest
    raise faults[0]
