"""An armed guard, and denies that must hold.

Arming: the CLI answers a hook that fails (raises, returns nothing, returns what it
rejects) as "no decision" unless the hook's matcher says ``on_failure="block"``. So
in fail-closed mode the guard's judging matchers carry ``"block"`` and the others
``"continue"`` (:func:`on_failure_for`). The CLI says in its initialize reply whether
it honours that (``hook_on_failure_supported``) and whether it registered the hooks
at all (``hooks_applied``); :func:`arming_fault` reads the reply and
:class:`ArmingWatch` (a transport wrapper) sees it on its way to the SDK. A
fail-closed session with a fault refuses to start; a fail-open one warns and counts.

Denies that must hold: the real CLI runs no tool call its PreToolUse hook denied and
fires no PostToolUse for it. If one arrives anyway (a CLI bug, a permission path
around hooks, a transport that is not the CLI), the deny did not hold: the hooks
record a breach and, in fail-closed mode, end the session (:func:`breach_outcome`).
:class:`DeniedCalls` remembers the denied ids, bounded.

Usage::

    watch = ArmingWatch(transport, refuse=lambda fault: None)   # fail open: observe
    async for message in claude_agent_sdk.query(prompt=p, options=o, transport=watch):
        ...
    watch.fault  # None, "on_failure_unsupported" or "hooks_not_applied"
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from akto_otel.decision import JUDGING_HOOKS, Outcome, Rules, stance
from akto_otel.errors import AktoNotArmedError

if TYPE_CHECKING:
    from claude_agent_sdk import Transport

__all__ = [
    "ARMING_FAULTS",
    "FAULT_HOOKS_NOT_APPLIED",
    "FAULT_ON_FAILURE_UNSUPPORTED",
    "ArmingWatch",
    "DeniedCalls",
    "arming_fault",
    "arming_message",
    "breach_outcome",
    "not_armed_error",
    "on_failure_for",
]

FAULT_ON_FAILURE_UNSUPPORTED = "on_failure_unsupported"
FAULT_HOOKS_NOT_APPLIED = "hooks_not_applied"
ARMING_FAULTS = (FAULT_ON_FAILURE_UNSUPPORTED, FAULT_HOOKS_NOT_APPLIED)

OnFailure = Literal["block", "continue"]

_FAULT_TEXT = {
    FAULT_ON_FAILURE_UNSUPPORTED: (
        "the Claude Code CLI does not honour on_failure on hook matchers (it needs "
        "2.1.295 or newer), so a guardrail hook that fails or times out would not block"
    ),
    FAULT_HOOKS_NOT_APPLIED: (
        "the Claude Code process answering did not apply this session's hooks "
        "(hooks_applied: false, e.g. a session that was already running), so no "
        "guardrail hook would run"
    ),
}


def on_failure_for(event: str, rules: Rules) -> OnFailure:
    """What the CLI does when our ``event`` callback fails: block where a failed
    judgement denies (a judging hook in fail-closed, blocking mode), else continue."""
    if event in JUDGING_HOOKS and stance(event, None, rules) == "deny":
        return "block"
    return "continue"


def arming_fault(reply: Any) -> str | None:
    """Why the CLI's initialize ``reply`` leaves the guard unarmed, or None.

    Only an explicit ``hook_on_failure_supported: true`` counts as support: a CLI
    that predates the field drops it.
    """
    if not isinstance(reply, Mapping) or reply.get("hook_on_failure_supported") is not True:
        return FAULT_ON_FAILURE_UNSUPPORTED
    if reply.get("hooks_applied") is False:
        return FAULT_HOOKS_NOT_APPLIED
    return None


def arming_message(fault: str, *, fail_closed: bool) -> str:
    what = _FAULT_TEXT.get(fault, fault)
    if fail_closed:
        return (
            f"akto_otel refused to start a fail-closed session: {what}. Update Claude Code "
            "(or claude-agent-sdk, which bundles it), start a new session, or set "
            "AKTO_FAIL_MODE=open to accept running unguarded on such failures"
        )
    return (
        f"akto_otel: {what}; AKTO_FAIL_MODE=open, so the session runs, but a hook "
        "failure or timeout lets the action through unjudged"
    )


def breach_outcome(rules: Rules, tool_name: str, tool_use_id: str) -> Outcome | None:
    """The hook's answer when a denied tool call shows up as run: fail-closed ends the
    session (the CLI stops the turn on ``continue: false``); fail-open records only."""
    if not rules.fail_closed:
        return None
    reason = (
        f"Akto guardrails denied tool call {tool_use_id} ({tool_name or 'unknown tool'}) "
        "but it ran anyway; the session is stopped"
    )
    return Outcome("stop_turn", {"continue_": False, "stopReason": reason}, reason)


class DeniedCalls:
    """The tool_use_ids the guard denied, per session, least recently used dropped
    first: at most ``per_session`` ids in each of at most ``sessions`` sessions."""

    def __init__(self, per_session: int = 1024, sessions: int = 256) -> None:
        if per_session < 1 or sessions < 1:
            raise ValueError("DeniedCalls needs room for at least one id and one session")
        self._per_session = per_session
        self._sessions = sessions
        self._by_session: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def add(self, session_id: str, tool_use_id: str) -> None:
        if not tool_use_id:
            return
        ids = self._by_session.get(session_id)
        if ids is None:
            ids = self._by_session[session_id] = OrderedDict()
            while len(self._by_session) > self._sessions:
                self._by_session.popitem(last=False)
        self._by_session.move_to_end(session_id)
        ids[tool_use_id] = None
        ids.move_to_end(tool_use_id)
        while len(ids) > self._per_session:
            ids.popitem(last=False)

    def take(self, session_id: str, tool_use_id: str) -> bool:
        """True (and forgotten) when ``tool_use_id`` was denied in ``session_id``."""
        ids = self._by_session.get(session_id)
        if not tool_use_id or ids is None or tool_use_id not in ids:
            return False
        del ids[tool_use_id]
        return True

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._by_session.values())


def _initialize_id(data: str) -> str | None:
    for line in data.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict) or message.get("type") != "control_request":
            continue
        request = message.get("request")
        if isinstance(request, dict) and request.get("subtype") == "initialize":
            request_id = message.get("request_id")
            return request_id if isinstance(request_id, str) else None
    return None


class ArmingWatch:
    """A transport that passes everything through and reads the initialize reply.

    ``refuse(fault)`` is called once when the reply leaves the guard unarmed; the
    message it returns replaces the reply with an error, so the SDK's connect fails
    and no prompt is sent (fail-closed); None lets the session start (fail-open).
    """

    def __init__(self, inner: Transport, refuse: Callable[[str], str | None]) -> None:
        self._inner = inner
        self._refuse = refuse
        self._initialize_id: str | None = None
        self.fault: str | None = None
        self.refused: str | None = None

    async def connect(self) -> None:
        await self._inner.connect()

    async def write(self, data: str) -> None:
        if self._initialize_id is None:
            self._initialize_id = _initialize_id(data)
        await self._inner.write(data)

    async def read_messages(self) -> AsyncIterator[dict[str, Any]]:
        async for message in self._inner.read_messages():
            yield self._checked(message)

    def _checked(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._initialize_id is None or not isinstance(message, dict):
            return message
        if message.get("type") != "control_response":
            return message
        response = message.get("response")
        if not isinstance(response, dict) or response.get("request_id") != self._initialize_id:
            return message
        self._initialize_id = ""  # seen: later messages pass untouched
        if response.get("subtype") != "success":
            return message
        self.fault = arming_fault(response.get("response"))
        if self.fault is None:
            return message
        self.refused = self._refuse(self.fault)
        if self.refused is None:
            return message
        return {
            "type": "control_response",
            "response": {
                "subtype": "error",
                "request_id": response.get("request_id"),
                "error": self.refused,
            },
        }

    async def close(self) -> None:
        await self._inner.close()

    def is_ready(self) -> bool:
        return self._inner.is_ready()

    async def end_input(self) -> None:
        await self._inner.end_input()

    def __getattr__(self, name: str) -> Any:
        # Whatever else a newer SDK asks of its transport (never our own fields, which
        # a half-built or copied instance may lack).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def not_armed_error(transport: Any) -> AktoNotArmedError | None:
    """The error to raise when ``transport`` (an :class:`ArmingWatch`) refused the
    session: the SDK's own exception says only that initialize failed."""
    if isinstance(transport, ArmingWatch) and transport.refused and transport.fault:
        return AktoNotArmedError(transport.fault, transport.refused)
    return None
