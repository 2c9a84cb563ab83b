"""What every hook handler is given: the scope it runs in, the call it answers.

A handler is ``async def handler(scope, data, call) -> dict``: ``scope`` is a
:class:`HookScope` (session spans, verdicts, rules, the answer ledger), ``data`` the
hook's input as the CLI sends it (a plain dict), and ``call`` the :class:`Call` whose
:meth:`~Call.settle` fixes the answer once :func:`akto_otel.decision.decide` has made
it. Handlers see no SDK object, so any front door that has the hook JSON can run them.

Usage::

    scope = HookScope(verdicts, rules, probe, tracer, client_ip="10.0.0.1")
    call = Call()
    output = await hook_tools.pre_tool_use(scope, {"session_id": "s", ...}, call)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

from akto_otel import armed, contract, semconv
from akto_otel.answers import AnswerLedger
from akto_otel.contract import WireContext
from akto_otel.decision import Outcome, Rules
from akto_otel.spans import SessionTracing
from akto_otel.unjudged import StartupProbe
from akto_otel.verdict import Verdicts

__all__ = [
    "Call",
    "Handler",
    "HookCallback",
    "HookOutput",
    "HookScope",
    "as_mapping",
    "conversation",
    "text",
]

HookOutput = dict[str, Any]


class HookScope:
    """What one set of callbacks shares: the guard's verdicts (the judge and the
    recorder), rules and probe, and its own sessions, their spans, the client IP,
    the answer ledger and the tool calls it denied."""

    def __init__(
        self,
        verdicts: Verdicts,
        rules: Rules,
        probe: StartupProbe,
        tracer: trace.Tracer,
        client_ip: str = "",
        root: Span | None = None,
    ) -> None:
        self.verdicts = verdicts
        self.settings = verdicts.settings
        self.limits = verdicts.limits
        self.rules = rules
        self.probe = probe
        self.client_ip = client_ip
        self.tracing = SessionTracing(tracer, self.settings, root=root)
        self.wire = WireContext.from_settings(self.settings, client_ip)
        self._wires: dict[tuple[str, str], WireContext] = {}
        self.answers = AnswerLedger()
        self.denied = armed.DeniedCalls()

    def wire_for(self, data: Mapping[str, Any]) -> WireContext:
        """The wire context of one hook call: with its session headers when they are on."""
        if not self.settings.session_headers:
            return self.wire
        key = (text(data, "session_id"), text(data, "prompt_id"))
        wire = self._wires.get(key)
        if wire is None:
            # One per session and prompt (its records' headers are then encoded once);
            # the oldest make way, so a flood of ids holds at most _WIRES of them.
            if len(self._wires) >= _WIRES:
                del self._wires[next(iter(self._wires))]
            wire = self._wires[key] = self.wire.with_session(*key)
        return wire


#: Wire contexts kept by :meth:`HookScope.wire_for` (one per live session and prompt).
_WIRES = 256


class Call:
    """One hook call: the decision, once made, is what the hook answers."""

    __slots__ = ("output",)

    def __init__(self) -> None:
        self.output: HookOutput | None = None

    def settle(self, outcome: Outcome) -> HookOutput:
        self.output = outcome.output
        return outcome.output


Handler = Callable[[HookScope, Mapping[str, Any], Call], Awaitable[HookOutput]]
#: A callback as the SDK calls it: (input, tool_use_id, context) -> output.
HookCallback = Callable[[Any, "str | None", Any], Awaitable[HookOutput]]


def text(data: Mapping[str, Any], key: str) -> str:
    """``data[key]`` as text: "" when absent, JSON for anything not a string."""
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return contract.dumps(value)


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def conversation(session_id: str, prompt_id: str) -> dict[str, Any]:
    """The span attributes naming a hook's conversation (and prompt, when known)."""
    attributes: dict[str, Any] = {}
    if session_id:
        attributes[semconv.GEN_AI_CONVERSATION_ID] = session_id
    if prompt_id:
        attributes[semconv.AKTO_PROMPT_ID] = prompt_id
    return attributes
