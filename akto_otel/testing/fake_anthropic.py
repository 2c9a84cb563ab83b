"""A scripted fake Anthropic Messages API that drives real Claude Agent SDK sessions offline.

Point the Claude Code CLI bundled with ``claude-agent-sdk`` at :attr:`FakeAnthropic.url`
and every model turn is answered from a :class:`~akto_otel.testing.Scenario`; the CLI
runs the requested tools for real and fires every hook through the SDK's control
protocol. Usage::

    import tempfile
    from pathlib import Path

    from claude_agent_sdk import ClaudeAgentOptions, HookMatcher
    from akto_otel.testing import (
        FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent,
    )

    async def on_hook(hook_input, tool_use_id, context):
        print(hook_input["hook_event_name"], hook_input.get("tool_input"))
        return {}

    scenario = Scenario(r"make a file", [
        ToolUse("Bash", {"command": "echo hi > made.txt"}),
        Text("Made it."),
    ])
    with FakeAnthropic(scenario) as fake, tempfile.TemporaryDirectory() as tmp:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, Path(tmp) / "home"),
            allowed_tools=["Bash", "Read"],
            hooks={"PreToolUse": [HookMatcher(matcher=None, hooks=[on_hook])]},
            cwd=tmp,
        )
        messages = await run_agent("please make a file", options)
        assert [r.step for r in fake.records if r.kind == "conversation"] == [0, 1]

Routes: ``POST /v1/messages`` (``?beta=true`` or not; SSE when ``"stream": true``,
else a JSON message), ``POST /v1/messages/count_tokens``, ``HEAD``/``GET /`` and
``/api/hello`` probes, ``GET /v1/models``. Anything else is logged (logger
``akto_otel.testing.fake_anthropic``), recorded with ``kind="unknown"`` and
answered 404. Each response is written with one ``send`` on a ``TCP_NODELAY``
socket (about 1 ms per keep-alive request instead of Nagle's 40 ms).

Findings (claude-agent-sdk 0.2.187, bundled Claude Code CLI 2.1.330, offline)
------------------------------------------------------------------------------

1. **Requests.** ``HEAD /api/hello`` (connectivity probe) once at start, then only
   ``POST /v1/messages?beta=true``, always ``"stream": true`` (no
   ``count_tokens``, no ``/v1/models``). Headers: ``x-api-key: <ANTHROPIC_API_KEY>``,
   ``anthropic-version: 2023-06-01``, ``anthropic-beta: claude-code-20250219,
   interleaved-thinking-2025-05-14,context-management-2025-06-27,...``,
   ``User-Agent: claude-cli/2.1.330 (external, sdk-py, agent-sdk/0.2.187)``,
   ``x-app: cli``, ``X-Claude-Code-Session-Id: <session_id of the hooks>`` (also
   in ``metadata.user_id`` JSON; subagent requests carry the parent's id).
   Model: ``claude-opus-5-5`` by default for every request (main, subagent,
   title); ``ClaudeAgentOptions(model="sonnet")`` -> ``claude-sonnet-5-5``
   everywhere. Conversation body keys: ``model, messages, system, tools,
   metadata, max_tokens (128000), thinking ({"type": "adaptive"}),
   context_management, output_config ({"effort": "medium"}), stream``.
   ``system`` is a list of text blocks (billing header, "You are a Claude
   agent, built on Anthropic's Claude Agent SDK."); the first user message is
   ``[<system-reminder>attribution</system-reminder>, <prompt>]`` followed by a
   ``{"role": "system"}`` message (environment, agent types, skills) and more
   system messages later. Main agent gets 12 tools (``Agent, Bash, Edit,
   ListAgents, Read, ReportFindings, ScheduleWakeup, Skill, ToolSearch,
   Workflow, DeferredToolPlaceholder, Write``), a subagent 8-10. One assistant
   turn with several blocks comes back as ONE assistant message (the SDK
   yields one ``AssistantMessage`` per block), so counting assistant messages
   counts turns. Side requests (must not consume steps): the session title
   (``tools: []``, system "You are naming a coding session ...", user text
   ``<session>\\n{prompt}\\n</session>...``, ``output_config.format`` =
   JSON schema ``{"title": string}``; sent for some prompts only, concurrently
   with the first turn) -> answered with JSON for the schema; compaction
   (``/compact`` or auto): the whole conversation with tools plus a last user
   text "CRITICAL: Respond with TEXT ONLY ... create a detailed summary of the
   conversation so far" -> answered with ``<summary>`` that keeps the original
   prompt and a ``[FakeAnthropic steps-done=N]`` marker so the script continues
   where it was. The CLI also resolves ``api.anthropic.com`` (event logging,
   feature flags); offline that fails fast and harmlessly.

2. **Hooks.** Every input has ``session_id``, ``transcript_path``
   (``$HOME/.claude/projects/<cwd-slug>/<session_id>.jsonl``), ``cwd``,
   ``prompt_id``, ``hook_event_name``; most have ``permission_mode``
   ("default"); tool/stop events have ``effort: {"level": "medium"}``; events
   inside a subagent add ``agent_id`` and ``agent_type``.

   * prompt -> ``UserPromptSubmit``: ``{..., "prompt": "make a file"}``. Not
     fired for slash commands such as ``/compact``.
   * Bash -> ``PreToolUse``: ``{..., "tool_name": "Bash", "tool_input":
     {"command": "echo hi > made.txt", "description": "make file"},
     "tool_use_id": "toolu_..."}``; ``PostToolUse``: same plus
     ``"tool_response": {"stdout": "", "stderr": "", "interrupted": false,
     "isImage": false, "noOutputExpected": false}, "duration_ms": 60``.
     ``tool_input`` is the CLI-normalised input (Read's relative
     ``file_path`` arrives absolute).
   * failure -> ``PostToolUseFailure`` (not ``PostToolUse``) for Bash ``exit 3``
     (``"error": "Exit code 3"``) and Read of a missing file (``"error": "File
     does not exist. Note: your current working directory is ..."``), both with
     ``"is_interrupt": false, "duration_ms": N`` and ``tool_input``, no
     ``tool_response``. The model gets ``tool_result`` with ``is_error: true``.
   * ``Stop``: ``{..., "stop_hook_active": false, "last_assistant_message":
     "Done.", "background_tasks": [], "session_crons": []}``.
   * subagent: the tool is ``Agent`` (``Task`` still accepted as an alias; hooks
     report ``tool_name: "Agent"``), input ``{"description", "prompt",
     "subagent_type": "general-purpose", "run_in_background": false}``; it is
     not gated by ``allowed_tools``. Order: PreToolUse(Agent) ->
     ``SubagentStart {agent_id: "a2343...", agent_type: "general-purpose"}`` (no
     permission_mode/effort) -> the subagent's PreToolUse/PostToolUse (with
     agent_id/agent_type) -> ``SubagentStop {..., agent_id, agent_type,
     agent_transcript_path: ".../<session>/subagents/agent-<id>.jsonl",
     last_assistant_message, stop_hook_active: false, background_tasks,
     session_crons}`` -> PostToolUse(Agent) with ``tool_response: {"status":
     "completed", "agentId", "agentType", "content": [...], "totalTokens",
     "usage", "toolStats", ...}`` -> Stop. Without ``run_in_background: false``
     the agent runs in the background: PostToolUse(Agent) comes at once with
     ``{"isAsync": true, "status": "async_launched", ...}``, the main turn
     stops, and on completion the CLI starts a new turn whose
     ``UserPromptSubmit.prompt`` is a ``<task-notification>`` (``query()``
     then yields two ``ResultMessage``). The subagent's requests are separate
     conversations whose first user text is the Agent ``prompt``: script them
     with their own scenario.
   * ``PermissionRequest`` (tool not in ``allowed_tools``, e.g. Write outside
     cwd): after PreToolUse, ``{..., "tool_name": "Write", "tool_input": {...},
     "permission_suggestions": [{"type": "setMode", "mode": "acceptEdits",
     "destination": "session"}, {"type": "addDirectories", ...}]}``. Without an
     answer the call is denied (no PostToolUse*, ``tool_result`` is_error);
     returning ``{"hookSpecificOutput": {"hookEventName": "PermissionRequest",
     "decision": {"behavior": "allow"}}}`` lets it run.
   * ``Notification``: only ``{..., "message": "Claude needs your permission to
     use Write", "notification_type": "permission_prompt"}`` when a
     ``can_use_tool`` callback takes more than ~6 s (no permission_mode).
   * ``PreCompact``: ``/compact keep it short`` sent as a second prompt of a
     ``ClaudeSDKClient`` -> ``{..., "trigger": "manual", "custom_instructions":
     "keep it short"}``; a ``Step(input_tokens=990_000)`` (near the 1M window)
     triggers ``{"trigger": "auto", "custom_instructions": null}`` before the
     next prompt. Compaction also fires a ``SubagentStop`` with
     ``agent_type: ""`` and no SubagentStart.

3. **Timing / HOME.** A 2-turn session (Bash + text) takes 0.7-0.9 s wall
   clock (0.3 s inside the CLI). ``HOME`` need not pre-exist but must be set to
   a temporary directory: with ``HOME=""`` the CLI falls back to the real home
   and writes ``~/.claude.json`` and ``~/.claude/{projects,sessions,plugins,
   telemetry,...}`` there, and it reads the user's settings/CLAUDE.md/agents.
   ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` removes the probe, the title
   request and the DNS lookups, and ``DISABLE_TELEMETRY=1`` most lookups, but
   BOTH also stop the CLI's OpenTelemetry metrics export (traces and logs still
   go), so :func:`~akto_otel.testing.offline_agent_env` sets them only with
   ``quiet=True``; the speed gain is ~0.1 s.

4. **Stop block.** Returning ``{"decision": "block", "reason": r}`` from Stop
   makes the CLI continue: the next request ends with ``{"role": "assistant",
   "content": [{"type": "text", "text": "<blocked answer>"}]}``,
   ``{"role": "user", "content": "Stop hook feedback:\\n<r>"}`` and a
   ``{"role": "system"}`` message ("Stop:Callback hook blocking error from
   command: ..."); the blocked answer counts as a turn, so the script moves to
   the next step. The second Stop has ``stop_hook_active: true``. The SDK
   yields a ``UserMessage`` with the feedback text. A script whose last step
   repeats loops for as long as the hook keeps blocking: bound it.

5. **Matchers.** ``hooks={event: [HookMatcher(matcher=None, hooks=[cb])]}``, one
   entry per event; ``matcher=None`` matches everything. On tool events
   (Pre/PostToolUse, PostToolUseFailure, PermissionRequest) a matcher is
   matched against ``tool_name`` (``"Bash"``, ``"Read|Write"``; checked on
   PreToolUse); on
   UserPromptSubmit and Stop it is ignored (``matcher="zzz"`` still fires).
   All matching entries run, in order. The callback is ``async def
   cb(hook_input: dict, tool_use_id: str | None, context) -> dict``; ``{}``
   means "no decision".
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from .scenario import Scenario, Step, Text, select_scenario

__all__ = [
    "SIDE_REPLY_TEXT",
    "FakeAnthropic",
    "RecordedRequest",
    "count_assistant_turns",
    "first_user_text",
    "is_side_request",
    "message_text",
    "step_index",
]

_log = logging.getLogger(__name__)

SIDE_REPLY_TEXT = "OK"
"""Text answered to side requests (titles, summaries, probes) that are not the
scripted conversation."""

_DEFAULT_MODEL = "claude-fake-1"
_REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
# System prompt fragments of the CLI's own side requests. They are not the
# scripted conversation and must not consume its steps.
_SIDE_SYSTEM_MARKERS = (
    "naming a coding session",  # session title (2.1.x)
    "Summarize this coding conversation",
    "summarize the conversation",
    "generate a concise title",
    "Generate a short title",
)
# Text of the CLI's compaction request (last user message), 2.1.x.
_COMPACT_MARKERS = (
    "create a detailed summary of the conversation so far",
    "CRITICAL: Respond with TEXT ONLY",
)
_STEPS_MARKER = "[FakeAnthropic steps-done={}]"
_STEPS_MARKER_RE = re.compile(r"\[FakeAnthropic steps-done=(\d+)\]")


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request received by :class:`FakeAnthropic`.

    ``kind`` is ``"conversation"`` (a scripted turn), ``"side"`` (a CLI side
    request answered with a short harmless reply), ``"count_tokens"``,
    ``"probe"`` (HEAD/GET health checks), ``"models"`` or ``"unknown"``.
    ``note`` tells side requests apart (``"structured"`` for JSON-schema
    requests such as the session title, ``"compact"`` for compaction summaries).
    ``scenario`` (its label) and ``step`` are set for conversation requests.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    kind: str
    note: str | None = None
    scenario: str | None = None
    step: int | None = None
    timestamp: float = field(default_factory=time.time)

    @property
    def session_id(self) -> str | None:
        """The CLI's ``X-Claude-Code-Session-Id`` header: the ``session_id`` its
        hooks report (subagent requests carry the parent session's id)."""
        for key, value in self.headers.items():
            if key.lower() == "x-claude-code-session-id":
                return value
        return None


def message_text(content: Any) -> str:
    """Joined text of a message ``content`` (string or list of blocks)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "text":
                text = block.get("text")
                if isinstance(text, str):
                    parts.append(text)
    return "\n".join(parts)


def first_user_text(messages: Any) -> str:
    """Text of the first ``user`` message, with ``<system-reminder>`` blocks removed.

    This is what a :class:`~akto_otel.testing.Scenario` ``match`` is searched in:
    for a main conversation it is the prompt given to ``query()``, for a
    subagent it is the ``prompt`` of the Agent/Task tool call that spawned it.
    """
    if not isinstance(messages, list):
        return ""
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _REMINDER_RE.sub("", message_text(message.get("content"))).strip()
    return ""


def count_assistant_turns(messages: Any) -> int:
    """Number of ``assistant`` messages in a request (one per model turn, however
    many blocks it had). See :func:`step_index` for the step that answers it."""
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, Mapping) and m.get("role") == "assistant")


def _system_text(body: Mapping[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return message_text(system)


def _json_schema_format(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    output_config = body.get("output_config")
    if isinstance(output_config, Mapping):
        fmt = output_config.get("format")
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            return schema if isinstance(schema, Mapping) else {}
    return None


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return message_text(message.get("content"))
    return ""


def _side_kind(body: Mapping[str, Any]) -> str | None:
    """``None`` for an agent conversation turn, else the kind of side request:
    ``"compact"`` (conversation summary for /compact or auto-compaction),
    ``"structured"`` (JSON-schema output, e.g. the session title) or ``"side"``."""
    last_user = _last_user_text(body.get("messages"))
    if any(marker in last_user for marker in _COMPACT_MARKERS):
        return "compact"
    if body.get("tools"):
        return None
    if _json_schema_format(body) is not None:
        return "structured"
    system = _system_text(body).lower()
    if any(marker.lower() in system for marker in _SIDE_SYSTEM_MARKERS):
        return "side"
    return None if first_user_text(body.get("messages")) else "side"


def is_side_request(body: Mapping[str, Any]) -> bool:
    """Whether a ``/v1/messages`` body is one of the CLI's own side requests
    rather than a turn of a scripted agent conversation.

    Agent turns (main agent and subagents) always offer tools; the CLI's side
    requests (session title, ...) send ``tools: []`` with a JSON-schema output
    format or a side-task system prompt. Compaction requests (``/compact`` or
    auto-compaction) do offer tools but end with the summary instructions.
    """
    return _side_kind(body) is not None


def _steps_done(first_text: str) -> int:
    """Steps consumed before the last compaction (marker left in the summary)."""
    found = _STEPS_MARKER_RE.findall(first_text)
    return int(found[-1]) if found else 0


def step_index(messages: Any) -> int:
    """Index of the scenario step that answers a conversation request:
    assistant turns in ``messages`` plus the turns consumed before a compaction."""
    return _steps_done(first_user_text(messages)) + count_assistant_turns(messages)


def _example_for_schema(schema: Any, depth: int = 0) -> Any:
    """A small value that satisfies a (simple) JSON schema."""
    if not isinstance(schema, Mapping) or depth > 8:
        return SIDE_REPLY_TEXT
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _example_for_schema(options[0], depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), typ[0] if typ else "string")
    if typ == "object" or "properties" in schema:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = schema.get("required")
        keys = (
            list(props) if not isinstance(required, list) else [k for k in props if k in required]
        )
        return {k: _example_for_schema(props[k], depth + 1) for k in keys}
    if typ == "array":
        return []
    if typ in ("integer", "number"):
        return 0
    if typ == "boolean":
        return False
    if typ == "null":
        return None
    return "Fake session"


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _estimate_tokens(value: Any) -> int:
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError):
        size = len(str(value))
    return max(1, size // 4)


def _message(
    model: str,
    text: str | Sequence[str] | None,
    tool_uses: Sequence[Mapping[str, Any]],
    input_tokens: int,
    *,
    thinking: str | None = None,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": "fake-signature"})
    texts = [text] if isinstance(text, str) else list(text or ())
    for part in texts:
        content.append({"type": "text", "text": part})
    for tool_use in tool_uses:
        content.append(
            {
                "type": "tool_use",
                "id": tool_use["id"],
                "name": tool_use["name"],
                "input": dict(tool_use["input"]),
            }
        )
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_uses else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": _estimate_tokens(content),
        },
    }


def _sse_events(message: Mapping[str, Any], chunk: int = 0) -> list[tuple[str, dict[str, Any]]]:
    usage = dict(message["usage"])
    start_message = dict(message)
    start_message["content"] = []
    start_message["stop_reason"] = None
    start_message["usage"] = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start_message}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        deltas: list[dict[str, Any]]
        if block["type"] == "text":
            start_block: dict[str, Any] = {"type": "text", "text": ""}
            text = block["text"]
            size = chunk or max(1, len(text))
            deltas = [
                {"type": "text_delta", "text": text[i : i + size]}
                for i in range(0, max(1, len(text)), size)
            ]
        elif block["type"] == "thinking":
            start_block = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            start_block = {
                "type": "tool_use",
                "id": block["id"],
                "name": block["name"],
                "input": {},
            }
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start_block},
            )
        )
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _sse_body(message: Mapping[str, Any], chunk: int = 0) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        for name, data in _sse_events(message, chunk)
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeAnthropic) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            # Clients closing keep-alive connections (e.g. the CLI exiting).
            _log.debug("fake Anthropic API: connection from %s closed: %r", client_address, exc)
        else:
            _log.warning(
                "fake Anthropic API: error handling request from %s", client_address, exc_info=True
            )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - %s", self.address_string(), format % args)

    # -- transport -------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        *,
        head_only: bool = False,
    ) -> None:
        reason = self.responses.get(status, ("",))[0]
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"request-id: {_new_id('req_')}\r\n"
            "anthropic-organization-id: 00000000-0000-0000-0000-000000000000\r\n"
            "Cache-Control: no-cache\r\n"
            "Connection: keep-alive\r\n"
            "\r\n"
        ).encode("latin-1")
        # One write = one send: no Nagle / delayed-ACK stall between head and body.
        self.wfile.write(head if head_only else head + body)
        self.wfile.flush()

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    def _record(self, body: Any, kind: str, **extra: Any) -> None:
        self.server.fake._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers=dict(self.headers.items()),
                body=body,
                kind=kind,
                **extra,
            )
        )

    # -- verbs -----------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._record(None, "probe")
        self._send(200, b"", head_only=True)

    def do_GET(self) -> None:
        route = urlsplit(self.path).path.rstrip("/")
        if route == "/v1/models":
            self._record(None, "models")
            model = self.server.fake.model
            self._send_json(
                200,
                {
                    "data": [
                        {
                            "type": "model",
                            "id": model,
                            "display_name": model,
                            "created_at": "2025-01-01T00:00:00Z",
                        }
                    ],
                    "has_more": False,
                    "first_id": model,
                    "last_id": model,
                },
            )
        elif route in ("", "/api/hello", "/health"):
            self._record(None, "probe")
            self._send_json(200, {"status": "ok"})
        else:
            self._unknown(None)

    def do_POST(self) -> None:
        raw = self._read_body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        route = urlsplit(self.path).path.rstrip("/")
        if route == "/v1/messages" and isinstance(body, dict):
            self._messages(body)
        elif route == "/v1/messages/count_tokens" and isinstance(body, dict):
            self._record(body, "count_tokens")
            self._send_json(200, {"input_tokens": _estimate_tokens(body.get("messages"))})
        else:
            self._unknown(body)

    do_PUT = do_POST
    do_PATCH = do_POST

    def do_DELETE(self) -> None:
        self._unknown(None)

    def _unknown(self, body: Any) -> None:
        self._record(body, "unknown")
        _log.warning("fake Anthropic API: unknown request %s %s", self.command, self.path)
        self._send_json(
            404,
            {
                "type": "error",
                "error": {
                    "type": "not_found_error",
                    "message": f"fake Anthropic API has no {self.command} {self.path}",
                },
            },
        )

    def _messages(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        try:
            reply = fake._reply(body)
        except Exception as exc:  # never let a scripting bug hang the CLI
            _log.exception("fake Anthropic API failed to build a reply")
            self._record(body, "error")
            self._send_json(
                500, {"type": "error", "error": {"type": "api_error", "message": repr(exc)}}
            )
            return
        self._record(body, reply.kind, note=reply.note, scenario=reply.scenario, step=reply.step)
        if reply.delay:
            time.sleep(reply.delay)
        if body.get("stream"):
            body_bytes = _sse_body(reply.message, reply.chunk)
            self._send(200, body_bytes, "text/event-stream; charset=utf-8")
        else:
            self._send_json(200, reply.message)


class FakeAnthropic:
    """A local, scripted Anthropic Messages API for offline agent sessions.

    Point the Claude Code CLI at :attr:`url` (``ANTHROPIC_BASE_URL``); see
    :func:`akto_otel.testing.offline_agent_env`. The reply to each request is
    decided from the request alone (see :mod:`akto_otel.testing.scenario`), so
    concurrent sessions never interfere.

    Example::

        with FakeAnthropic([Scenario("hello", [Text("Hi!")])]) as fake:
            env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "dummy"}
            ...
            assert fake.conversation_requests
    """

    def __init__(
        self,
        scenarios: Sequence[Scenario] | Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str | None = None,
    ) -> None:
        self.scenarios: tuple[Scenario, ...] = (
            (scenarios,) if isinstance(scenarios, Scenario) else tuple(scenarios)
        )
        for scenario in self.scenarios:
            if not isinstance(scenario, Scenario):
                raise TypeError(f"not a Scenario: {scenario!r}")
        self.host = host
        self.model = model or _DEFAULT_MODEL
        """Model name reported when a request names none (GET /v1/models)."""
        self._port = port
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        """Bind and serve on a daemon thread (no-op when already running)."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server((self.host, self._port), self)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"FakeAnthropic:{server.server_address[1]}",
                daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close open connections (no-op when not running)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            connections = list(server.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        server = self._server
        if server is None:
            raise RuntimeError("FakeAnthropic is not running; call start() first")
        return int(server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for ``ANTHROPIC_BASE_URL``, e.g. ``http://127.0.0.1:40123``."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    # -- recorded traffic ----------------------------------------------------------

    def _record(self, record: RecordedRequest) -> None:
        _log.debug(
            "fake Anthropic API: %s %s kind=%s scenario=%s step=%s",
            record.method,
            record.path,
            record.kind,
            record.scenario,
            record.step,
        )
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[RecordedRequest]:
        """Every request received so far (a copy), in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """JSON bodies of every ``POST /v1/messages`` so far (conversation and side)."""
        return [
            r.body
            for r in self.records
            if r.kind in ("conversation", "side") and isinstance(r.body, dict)
        ]

    @property
    def conversation_requests(self) -> list[dict[str, Any]]:
        """JSON bodies of the scripted (non-side) ``/v1/messages`` requests."""
        return [r.body for r in self.records if r.kind == "conversation"]

    @property
    def side_requests(self) -> list[dict[str, Any]]:
        """JSON bodies of the CLI's side requests (titles, ...)."""
        return [r.body for r in self.records if r.kind == "side"]

    @property
    def unknown_requests(self) -> list[RecordedRequest]:
        """Requests to paths the fake does not know (answered with 404)."""
        return [r for r in self.records if r.kind == "unknown"]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._records.clear()

    # -- replies -------------------------------------------------------------------

    def reply_for(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The Messages API reply (non-streamed form) the fake gives to ``body``."""
        return self._reply(body).message

    def _reply(self, body: Mapping[str, Any]) -> _Reply:
        model = body.get("model")
        model = model if isinstance(model, str) and model else self.model
        messages = body.get("messages")
        input_tokens = _estimate_tokens(messages)
        side = _side_kind(body)
        if side == "compact":
            # Keep the original prompt (so the scenario still matches after the
            # compaction) and the number of steps consumed so far.
            done = step_index(messages)
            summary = (
                "<analysis>Scripted by FakeAnthropic.</analysis>\n<summary>\n"
                f"1. Primary Request and Intent: {first_user_text(messages)}\n"
                f"{_STEPS_MARKER.format(done)}\n</summary>"
            )
            return _Reply(_message(model, summary, (), input_tokens), "side", note=side)
        if side is not None:
            schema = _json_schema_format(body)
            text = SIDE_REPLY_TEXT if schema is None else json.dumps(_example_for_schema(schema))
            return _Reply(_message(model, text, (), input_tokens), "side", note=side)
        prompt = first_user_text(messages)
        index = step_index(messages)
        scenario = select_scenario(self.scenarios, prompt)
        if scenario is None:
            _log.warning("fake Anthropic API: no scenario matches prompt %r", prompt[:200])
            step: Step = Text(f"[FakeAnthropic] no scenario matches the prompt: {prompt[:200]}")
            label = None
        else:
            step = scenario.step_at(index)
            label = scenario.label
        tool_uses = [
            {"id": t.id or _new_id("toolu_"), "name": t.name, "input": t.input}
            for t in step.tool_uses
        ]
        if step.input_tokens is not None:
            input_tokens = step.input_tokens
        message = _message(model, step.texts, tool_uses, input_tokens, thinking=step.thinking)
        return _Reply(
            message,
            "conversation",
            scenario=label,
            step=index,
            delay=step.delay,
            chunk=step.chunk,
        )


@dataclass(frozen=True)
class _Reply:
    message: dict[str, Any]
    kind: str
    note: str | None = None
    scenario: str | None = None
    step: int | None = None
    delay: float = 0.0
    chunk: int = 0
