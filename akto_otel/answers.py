"""Held answers: what the model says reaches the app only after it was judged.

The CLI emits an assistant message, then runs the Stop hook (in this process),
and only then emits the next message. So when a stream wrapper receives the
message that follows a held assistant text, the Stop handler has already told
the :class:`AnswerLedger` whether it denied that text. :func:`hold_answers`
wraps a Claude Agent SDK message stream and applies the ledger:

- every assistant message with content (text, thinking, tool calls) and the
  partial ``StreamEvent`` s around it are held until the next other message;
  then each agent's turn is judged as the app would assemble it: its text
  blocks since the last tool result concatenated with no separator (a secret
  split across blocks or deltas is seen whole), its thinking, and a
  ``StructuredOutput`` call's input (with ``output_format`` that call *is* the
  answer). What Stop or SubagentStop judged (they judge the same whole turn,
  read from the transcript: :func:`hook_answer`) comes from the ledger; the rest
  goes to ``judge`` (the guard's response guardrail). A denied turn is dropped
  with every partial event held beside it;
- a tool call's input reaches the app only as PreToolUse let it through: withheld
  when it denied the call (the result becomes an error), masked when it masked it
  (verdicts noted by ``tool_use_id``; the CLI runs PreToolUse before it emits the
  next message). The rest is judged with the turn's text, in the same check; the
  task messages, the subagent prompt and the result's ``permission_denials`` that
  repeat a withheld input get the reason instead;
- a tool result PostToolUse withheld (Read, Grep: outputs the CLI cannot
  replace) or replaced reaches the app as the model got it, never the original;
- a ``ResultMessage`` after any of that, or whose ``result`` or
  ``structured_output`` is a denied answer, becomes an error: ``is_error=True``,
  ``subtype="error_guardrail"``, ``result`` = the block reason, no
  ``structured_output``;
- a ``ResultMessage`` after a blocked prompt becomes the same kind of error
  carrying Akto's reason;
- a subagent's task notification whose summary is a denied answer gets the
  reason instead (:func:`withheld_agent_output` does the same for the
  parent model's view of the Agent tool's result).

A judge that raises withholds what it was judging (the result becomes an error);
with ``fail_open`` the content is delivered and reported unjudged
(:func:`note_unjudged`).

The hooks tell the ledger through :func:`note_hook_output` (every Stop,
SubagentStop, UserPromptSubmit and PostToolUse output, whichever path produced it). The
ledger matches by content (the text Stop judged), not by arrival time, so a
slow consumer that reads messages long after the CLI produced them is handled
the same way. Usage::

    ledger = AnswerLedger()
    ledger.record_denial("leaked SECRET", "Secret in response")   # from the Stop handler
    async for message in hold_answers(query(prompt=..., options=...), ledger, judge=judge):
        ...
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from akto_otel.metrics import GuardrailMetrics, metrics_for
from akto_otel.unjudged import UnjudgedRecorder

__all__ = [
    "GUARDRAIL_ERROR_SUBTYPE",
    "STRUCTURED_OUTPUT_TOOL",
    "AnswerLedger",
    "Holder",
    "Judge",
    "Unjudged",
    "UnjudgedReporter",
    "hold_answers",
    "hook_answer",
    "note_hook_output",
    "note_unjudged",
    "structured_text",
    "whole_answer",
    "withheld_agent_output",
]

_log = logging.getLogger("akto_otel.answers")

GUARDRAIL_ERROR_SUBTYPE = "error_guardrail"
PROMPT_BLOCK_PREFIX = "Blocked by Akto Guardrails: "
ANSWER_BLOCK_PREFIX = "Response blocked by Akto Guardrails: "
_MAX_DENIALS = 256
_MAX_PROMPT_BLOCKS = 1024
#: Texts shorter than this match a denied text only when equal (no containment).
_MIN_CONTAINED = 8
_AGENT_TOOLS = frozenset({"Agent", "Task"})


def _matches(candidate: str, denied: str) -> bool:
    """Whether ``candidate`` (what the app or the parent would see) is the denied text."""
    candidate, denied = candidate.strip(), denied.strip()
    if not candidate or not denied:
        return False
    if candidate == denied:
        return True
    shorter, longer = sorted((candidate, denied), key=len)
    return len(shorter) >= _MIN_CONTAINED and shorter in longer


class AnswerLedger:
    """What the Stop, SubagentStop and UserPromptSubmit handlers denied, for the wrappers.

    One per hook scope; bounded. Every method is cheap and never raises.
    """

    def __init__(self) -> None:
        self._denials: deque[tuple[str, str]] = deque(maxlen=_MAX_DENIALS)
        self._judged: deque[str] = deque(maxlen=_MAX_DENIALS)
        self._prompt_blocks: dict[str, str] = {}
        self._tool_outputs: dict[str, tuple[str, Any, bool]] = {}
        self._tool_calls: dict[str, tuple[str, Any]] = {}
        #: Set while a holder reads this session's stream: Stop may wait for it.
        self.tracking = False
        self._live_text: str | None = None
        self._live_structured: str | None = None

    def set_live(self, text: str | None, structured: str | None) -> None:
        """What the holder has seen of the main agent's current turn so far."""
        self._live_text, self._live_structured = text, structured

    def live_text(self) -> str | None:
        return self._live_text

    def live_structured(self) -> str | None:
        return self._live_structured

    def record_tool_output(
        self, tool_use_id: str, reason: str, replacement: Any, *, stopped: bool
    ) -> None:
        """A tool output PostToolUse withheld (``stopped``: the turn ended) or replaced
        (``replacement``: what the model got instead)."""
        if len(self._tool_outputs) >= _MAX_PROMPT_BLOCKS:
            self._tool_outputs.pop(next(iter(self._tool_outputs)))
        self._tool_outputs[tool_use_id] = (reason, copy.deepcopy(replacement), stopped)

    def record_tool_call(self, tool_use_id: str, verdict: str, detail: Any = None) -> None:
        """PreToolUse's verdict on a call: ``"deny"`` (``detail``: the reason),
        ``"mask"`` (``detail``: the input the tool got instead) or ``"allow"``."""
        if len(self._tool_calls) >= _MAX_PROMPT_BLOCKS:
            self._tool_calls.pop(next(iter(self._tool_calls)))
        self._tool_calls[tool_use_id] = (verdict, copy.deepcopy(detail))

    def tool_call(self, tool_use_id: str) -> tuple[str, Any] | None:
        """``(verdict, detail)`` PreToolUse recorded for a call, None if it did not run."""
        return self._tool_calls.get(tool_use_id)

    def tool_output(self, tool_use_id: str) -> tuple[str, Any, bool] | None:
        """``(reason, replacement or None, stopped)`` for a withheld or replaced tool output."""
        return self._tool_outputs.get(tool_use_id)

    def was_judged_exactly(self, text: str) -> bool:
        """Whether a hook judged exactly ``text`` and let it through (a text that only
        contains a judged one was not judged: the rest of it was never seen)."""
        wanted = text.strip()
        return bool(wanted) and any(wanted == judged.strip() for judged in self._judged)

    def record_allowed(self, text: str) -> None:
        """An answer Stop or SubagentStop judged and let through."""
        if text.strip():
            self._judged.append(text)

    def was_judged(self, text: str) -> bool:
        """Whether Stop or SubagentStop judged ``text`` (allowed or denied)."""
        if self.denial_reason(text) is not None:
            return True
        return any(_matches(text, judged) for judged in reversed(self._judged))

    def record_denial(self, text: str, reason: str) -> None:
        """An answer (main agent or subagent) that Akto denied, with the reason."""
        if text.strip():
            self._denials.append((text, reason))

    def record_prompt_block(self, session_id: str, reason: str) -> None:
        if len(self._prompt_blocks) >= _MAX_PROMPT_BLOCKS:
            self._prompt_blocks.pop(next(iter(self._prompt_blocks)))
        self._prompt_blocks[session_id] = reason

    def denial_reason(self, text: str) -> str | None:
        """The reason ``text`` was denied, or None if no denied answer matches it."""
        for denied, reason in reversed(self._denials):
            if _matches(text, denied):
                return reason
        return None

    def take_prompt_block(self, session_id: str) -> str | None:
        """The reason of the blocked prompt of ``session_id`` (once), else None."""
        reason = self._prompt_blocks.pop(session_id, None)
        if reason is None and not session_id and len(self._prompt_blocks) == 1:
            reason = self._prompt_blocks.pop(next(iter(self._prompt_blocks)))
        return reason


def _output_reason(output: Mapping[str, Any]) -> str:
    for key in ("reason", "stopReason", "systemMessage"):
        value = output.get(key)
        if isinstance(value, str) and value:
            for prefix in (ANSWER_BLOCK_PREFIX, PROMPT_BLOCK_PREFIX):
                value = value.removeprefix(prefix)
            return value
    return "blocked"


def _denies(output: Mapping[str, Any]) -> bool:
    return output.get("decision") == "block" or output.get("continue_") is False


def _tool_replacement(output: Mapping[str, Any]) -> tuple[bool, Any]:
    specific = output.get("hookSpecificOutput")
    if not isinstance(specific, Mapping):
        return False, None
    for key in ("updatedToolOutput", "updatedMCPToolOutput"):
        if key in specific:
            return True, specific[key]
    return False, None


def note_hook_output(
    ledger: AnswerLedger, event: str, data: Any, output: Any, *, answer: str | None = None
) -> None:
    """Tell ``ledger`` what a hook's output allowed, denied or replaced, whichever path
    produced it (the verdict, or the fail-closed error path). ``answer``: the text a
    Stop or SubagentStop judged (default: :func:`hook_answer`). Never raises."""
    try:
        if not isinstance(output, Mapping) or not isinstance(data, Mapping):
            return
        if event in ("Stop", "SubagentStop"):
            text = hook_answer(data) if answer is None else answer
            if not text:
                return
            if _denies(output):
                ledger.record_denial(text, _output_reason(output))
                last = data.get("last_assistant_message")
                if isinstance(last, str) and last.strip() and last.strip() != text:
                    # Whatever shows only the last block of a denied answer is denied too.
                    ledger.record_denial(last, _output_reason(output))
            else:
                ledger.record_allowed(text)
        elif event == "PreToolUse":
            _note_tool_call(ledger, data, output)
        elif event == "UserPromptSubmit" and _denies(output):
            ledger.record_prompt_block(str(data.get("session_id") or ""), _output_reason(output))
        elif event in ("PostToolUse", "PostToolUseFailure"):
            tool_use_id = data.get("tool_use_id")
            if not isinstance(tool_use_id, str) or not tool_use_id:
                return
            replaced, replacement = _tool_replacement(output)
            if _denies(output):
                ledger.record_tool_output(tool_use_id, _output_reason(output), None, stopped=True)
            elif replaced:
                ledger.record_tool_output(
                    tool_use_id, _output_reason(output), replacement, stopped=False
                )
    except Exception:
        _log.debug("could not note a hook output", exc_info=True)


def _note_tool_call(
    ledger: AnswerLedger, data: Mapping[str, Any], output: Mapping[str, Any]
) -> None:
    tool_use_id = data.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        return
    specific = output.get("hookSpecificOutput")
    specific = specific if isinstance(specific, Mapping) else {}
    if _denies(output) or specific.get("permissionDecision") == "deny":
        reason = specific.get("permissionDecisionReason")
        shown = {"reason": reason} if isinstance(reason, str) and reason else output
        ledger.record_tool_call(tool_use_id, "deny", _output_reason(shown))
    elif "updatedInput" in specific:
        ledger.record_tool_call(tool_use_id, "mask", specific["updatedInput"])
    else:
        ledger.record_tool_call(tool_use_id, "allow")


#: Judges a text nobody judged yet: the reason to withhold it, or None to deliver it.
Judge = Callable[[str], Awaitable["str | None"]]
#: Told when a held text is delivered without a verdict (fail-open): where, and the error.
UnjudgedReporter = Callable[[str, str], None]

STRUCTURED_OUTPUT_TOOL = "StructuredOutput"
_CHECK_FAILED = "could not be checked"


_recorder: tuple[GuardrailMetrics, UnjudgedRecorder] | None = None


def _default_recorder() -> UnjudgedRecorder:
    """The recorder on the global MeterProvider's instruments (made anew if it changed)."""
    global _recorder
    shared = metrics_for(None)
    if _recorder is None or _recorder[0] is not shared:
        _recorder = (shared, UnjudgedRecorder(shared))
    return _recorder[1]


def note_unjudged(span: Any, where: str, error: str) -> None:
    """Record that content reached the app unjudged (fail-open after an internal error)
    when no reporter was given: as :class:`~akto_otel.unjudged.UnjudgedRecorder` records
    a Stop call let through unjudged, on the global MeterProvider: a WARNING, one on
    ``akto.guardrail.unjudged{hook="Stop", fault=error}``, and on ``span`` (when given
    and recording) the unjudged and fault attributes. Never raises.
    """
    try:
        _log.debug("akto_otel delivered %s without a verdict: %s", where, error)
        _default_recorder().record("Stop", "", error, span)
    except Exception:
        _log.debug("could not record an unjudged delivery", exc_info=True)


def structured_text(value: Any) -> str:
    """A structured output as the one text judged and matched (canonical JSON)."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return str(value)


def hook_answer(data: Mapping[str, Any], live: str | None = None) -> str:
    """The answer a Stop or SubagentStop hook judges: the whole turn the app would
    assemble when ``live`` (what a holder saw of the turn) is it, else
    ``last_assistant_message``.

    The CLI hands Stop only the turn's last text block (nothing for a structured
    output) and writes the transcript after Stop; the held-answer path sees every
    block. ``live`` counts when it ends with that last block, or, with no text at all,
    when it is the turn's structured output. Never raises.
    """
    raw_last = data.get("last_assistant_message") if isinstance(data, Mapping) else None
    last = raw_last.strip() if isinstance(raw_last, str) else ""
    if live is None:
        return last
    whole = live.strip()
    if not last or whole.endswith(last):
        return whole
    return last


async def whole_answer(ledger: AnswerLedger, data: Mapping[str, Any], wait: float = 1.0) -> str:
    """:func:`hook_answer` with what the session's holder saw of the turn.

    The CLI emits a turn's blocks before it runs Stop, but the holder reads them as
    the app consumes the stream: wait (at most ``wait`` seconds) until it has seen
    the block Stop names. Without a holder, or past the wait, Stop judges the last
    block and the holder judges the whole turn itself. Never raises.
    """
    try:
        if not ledger.tracking or data.get("agent_id"):
            # Subagent blocks never reach the parent's stream: the parent and the app
            # get the last block only, which is what SubagentStop judges.
            return hook_answer(data)
        raw_last = data.get("last_assistant_message")
        last = raw_last.strip() if isinstance(raw_last, str) else ""
        if not last:
            # No text: a structured output's call came before its tool ran, so the
            # holder has it already (or there is none).
            return hook_answer(data, ledger.live_structured())
        deadline = time.monotonic() + wait
        while True:
            live = ledger.live_text()
            if live is not None and live.strip().endswith(last):
                return hook_answer(data, live)
            if time.monotonic() >= deadline:
                return hook_answer(data)
            await asyncio.sleep(0.005)
    except Exception:
        _log.debug("could not assemble the whole answer", exc_info=True)
        return hook_answer(data)


@dataclass(frozen=True)
class _Unit:
    """One piece of content judged as an answer: a turn's text, its thinking, or a
    structured output. ``key`` is the agent (``parent_tool_use_id``) it belongs to."""

    key: str | None
    kind: str
    text: str


@dataclass(frozen=True)
class Unjudged:
    """Held messages, the message that released them, and the units no hook judged."""

    messages: tuple[Any, ...]
    trailing: Any
    units: tuple[_Unit, ...]
    unjudged: tuple[_Unit, ...]
    #: Held on past this batch (a structured output waits for the result).
    kept: tuple[Any, ...] = ()

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(u.text for u in self.unjudged)


@dataclass
class _Turn:
    texts: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    #: The turn's tool calls (not StructuredOutput): ``(tool_use_id, input)``.
    tools: list[tuple[str, Any]] = field(default_factory=list)
    #: What the CLI reports of the subagent's calls (``TaskProgressMessage.description``).
    progress: list[str] = field(default_factory=list)
    dirty: bool = False


def _type_name(message: Any) -> str:
    return type(message).__name__


def _blocks(message: Any) -> list[Any]:
    content = getattr(message, "content", None)
    return content if isinstance(content, list) else []


def _texts(message: Any) -> list[str]:
    return [b.text for b in _blocks(message) if isinstance(getattr(b, "text", None), str)]


def _thinking(message: Any) -> list[str]:
    return [b.thinking for b in _blocks(message) if isinstance(getattr(b, "thinking", None), str)]


def _structured(message: Any) -> list[str]:
    return [
        structured_text(getattr(b, "input", None))
        for b in _blocks(message)
        if getattr(b, "name", None) == STRUCTURED_OUTPUT_TOOL and hasattr(b, "input")
    ]


def _tool_calls(message: Any) -> list[Any]:
    """The tool-call blocks of ``message`` whose input reaches the app (a
    ``StructuredOutput`` call is the answer itself, judged as one)."""
    return [
        b
        for b in _blocks(message)
        if isinstance(getattr(b, "id", None), str)
        and hasattr(b, "input")
        and getattr(b, "name", None) != STRUCTURED_OUTPUT_TOOL
    ]


def _withheld_input(reason: str) -> dict[str, Any]:
    return {"withheld": _withheld_text(reason, "tool input")}


_PROGRESS = "TaskProgressMessage"
#: Task messages whose ``description`` the CLI takes from a tool call's input.
_TASK_DESCRIBED = frozenset({"TaskStartedMessage", _PROGRESS})


def _is_held_kind(message: Any) -> bool:
    kind = _type_name(message)
    return (kind == "AssistantMessage" and bool(_blocks(message))) or kind == _PROGRESS


def _progress(message: Any) -> str:
    description = (
        getattr(message, "description", None) if _type_name(message) == _PROGRESS else None
    )
    return description if isinstance(description, str) else ""


def _described(message: Any, text: str) -> Any:
    """A task message whose ``description`` (from a withheld tool input) is ``text``."""
    data = dict(getattr(message, "data", {}) or {})
    if "description" in data:
        data["description"] = text
    return dataclasses.replace(message, description=text, data=data)


def _key(message: Any) -> str | None:
    """The agent ``message`` belongs to: a subagent's Agent call id, None for the main one."""
    attr = "tool_use_id" if _type_name(message) == _PROGRESS else "parent_tool_use_id"
    key = getattr(message, attr, None)
    return key if isinstance(key, str) and key else None


def _prompt_outcome(message: Any) -> bool:
    """A system message saying the CLI stopped because UserPromptSubmit blocked."""
    data = getattr(message, "data", None)
    if _type_name(message) != "SystemMessage" or not isinstance(data, Mapping):
        return False
    outcome = data.get("prompt_submit_outcome")
    return isinstance(outcome, Mapping) and "hook" in str(outcome.get("kind", ""))


def _as_error(result: Any, reason: str) -> Any:
    changes: dict[str, Any] = {
        "is_error": True,
        "subtype": GUARDRAIL_ERROR_SUBTYPE,
        "result": reason,
    }
    if any(f.name == "structured_output" for f in dataclasses.fields(result)):
        changes["structured_output"] = None
    return dataclasses.replace(result, **changes)


class Holder:
    """The decisions of :func:`hold_answers`, one message at a time, without I/O.

    Every assistant message with content (text, thinking, tool calls) and every
    partial ``StreamEvent`` is held until the next other message. Then each agent's
    turn is judged whole: its text blocks since the last tool result concatenated
    with no separator, its thinking, its ``StructuredOutput`` input. What a hook
    judged comes from the ledger; with ``judging``, the rest comes out as one
    :class:`Unjudged` batch for the caller to judge and hand to :meth:`settle`.
    """

    def __init__(self, ledger: AnswerLedger, *, hold: bool = True, judging: bool = False) -> None:
        self._ledger = ledger
        self._hold = hold
        self._judging = judging
        self._pending: list[Any] = []
        self._turns: dict[str | None, _Turn] = {}
        self._prompt_reason: str | None = None
        #: Why content was withheld by this holder's judging: the final result says so.
        self._withheld: str | None = None
        #: Why the main agent's latest turn was denied (None once a later one passes).
        self._turn_denial: str | None = None
        self._live_structured: str | None = None
        #: Tool calls whose input the app did not get (id: why), for what repeats it.
        self._withheld_inputs: dict[str, str] = {}
        self.dropped = 0

    def feed(self, message: Any) -> list[Any]:
        if _is_held_kind(message) or (self._hold and _type_name(message) == "StreamEvent"):
            self._note(message)
            if self._hold:
                self._pending.append(message)
                return []
            return [message]
        return self._release(message)

    def finish(self) -> list[Any]:
        return self._release(None)

    def drain(self) -> list[Any]:
        """What is held, taken out unjudged (after an internal error)."""
        pending, self._pending = self._pending, []
        return pending

    def _note(self, message: Any) -> None:
        if _type_name(message) == _PROGRESS:
            described = _progress(message)
            turn = self._turns.setdefault(_key(message), _Turn())
            turn.progress.append(described)
            turn.dirty = turn.dirty or bool(described)
            return
        if _type_name(message) != "AssistantMessage":
            return
        key = _key(message)
        turn = self._turns.setdefault(key, _Turn())
        texts, thinking = _texts(message), _thinking(message)
        calls = [(b.id, b.input) for b in _tool_calls(message)]
        turn.texts += texts
        turn.thinking += thinking
        turn.tools += calls
        turn.dirty = turn.dirty or bool(texts or thinking or calls)
        structured = _structured(message)
        if key is None:
            self._live_structured = structured[-1] if structured else self._live_structured
            self._ledger.set_live("".join(turn.texts), self._live_structured)

    def _units(self, structured: list[Any], trailing: Any) -> list[_Unit]:
        units: list[_Unit] = []
        for key, turn in self._turns.items():
            if not turn.dirty:
                continue
            turn.dirty = False
            # A turn's tool inputs reach the app too: judged with its text, in one check.
            said = ["".join(turn.texts), *self._shown_inputs(turn), *turn.progress]
            whole = "\n".join(part for part in said if part.strip())
            for kind, text in (("text", whole), ("thinking", "".join(turn.thinking))):
                if text.strip():
                    units.append(_Unit(key, kind, text))
        shown = [s for m in structured for s in _structured(m)]
        if _type_name(trailing) == "ResultMessage":
            value = getattr(trailing, "structured_output", None)
            if value is not None:
                shown.append(structured_text(value))
        units += [_Unit(None, "structured", s) for s in dict.fromkeys(shown)]
        return units

    def _shown_inputs(self, turn: _Turn) -> list[str]:
        """The inputs of ``turn``'s calls as the app would get them (a call PreToolUse
        denied is withheld whatever the judge says, so it is not judged)."""
        shown: list[str] = []
        for tool_use_id, value in turn.tools:
            verdict = self._ledger.tool_call(tool_use_id)
            if verdict is not None and verdict[0] == "deny":
                continue
            if verdict is not None and verdict[0] == "mask":
                value = verdict[1]
            shown.append(structured_text(value))
        return shown

    def _input_view(self, block: Any, denied: str | None) -> tuple[Any, str | None]:
        """What the app gets as ``block``'s input, and why it was withheld (None: it was
        not). ``denied``: why the turn carrying it was denied."""
        verdict = self._ledger.tool_call(block.id)
        if verdict is not None and verdict[0] == "deny":
            reason = str(verdict[1])
            return _withheld_input(reason), reason
        if denied is not None:
            return _withheld_input(denied), denied
        if verdict is not None and verdict[0] == "mask":
            return verdict[1], None
        return block.input, None

    def _with_inputs(self, message: Any, denied: str | None) -> Any:
        """``message`` with each tool call's input as the app may see it."""
        if _type_name(message) == _PROGRESS and denied is not None and _progress(message):
            return _described(message, _withheld_text(denied, "tool input"))
        calls = {id(b) for b in _tool_calls(message)}
        if not calls or _type_name(message) != "AssistantMessage":
            return message
        blocks: list[Any] = []
        for block in _blocks(message):
            if id(block) not in calls:
                blocks.append(block)
                continue
            shown, reason = self._input_view(block, denied)
            if reason is not None:
                self._withheld = self._withheld or reason
                if len(self._withheld_inputs) >= _MAX_PROMPT_BLOCKS:
                    self._withheld_inputs.pop(next(iter(self._withheld_inputs)))
                self._withheld_inputs[block.id] = reason
            same = shown is block.input
            blocks.append(block if same else dataclasses.replace(block, input=shown))
        if all(a is b for a, b in zip(blocks, _blocks(message), strict=True)):
            return message
        return dataclasses.replace(message, content=blocks)

    def _release(self, trailing: Any) -> list[Any]:
        pending = self._pending
        structured = [m for m in pending if _structured(m)]
        kept: list[Any] = []
        if structured and trailing is not None and _type_name(trailing) != "ResultMessage":
            # A structured output is the turn's answer: Stop judges it after its tool
            # result, so it is held until the result (it may be regenerated first).
            kept = structured
            pending = [m for m in pending if not _structured(m)]
            structured = []
        units = tuple(self._units(structured, trailing))
        unjudged = tuple(
            u
            for u in units
            if self._judging
            and self._ledger.denial_reason(u.text) is None
            and not self._ledger.was_judged_exactly(u.text)
        )
        batch = Unjudged(tuple(pending), trailing, units, unjudged, tuple(kept))
        if unjudged:
            return [batch]
        return self.settle(batch, {})

    def settle(self, batch: Unjudged, judged: Mapping[_Unit, str | None]) -> list[Any]:
        """Apply the hooks' and the judge's verdicts to ``batch``: what the app gets.

        A denial the judge made here is final (no hook asked the model again), so the
        result says so; a hook's denial was followed by a regeneration or ended the
        turn, which the turn's own verdict decides.
        """
        denied_turns: dict[str | None, str] = {}
        denied_structured: set[str] = set()
        denied_inputs: dict[str | None, str] = {}
        for unit in batch.units:
            if unit in judged:
                reason = judged[unit]
                if reason is None:
                    self._ledger.record_allowed(unit.text)
                    continue
                self._ledger.record_denial(unit.text, reason)
                self._withheld = self._withheld or reason
            else:
                reason = self._ledger.denial_reason(unit.text)
                if reason is None:
                    continue
            if unit.kind == "structured":
                denied_structured.add(unit.text)
            else:
                denied_turns.setdefault(unit.key, reason)
            if unit.kind == "text":
                # The turn's tool inputs were judged with its text: withheld with it.
                denied_inputs.setdefault(unit.key, reason)
        if any(u.key is None and u.kind == "text" for u in batch.units):
            self._turn_denial = denied_turns.get(None)
        out = [self._with_inputs(m, denied_inputs.get(_key(m))) for m in batch.messages]
        changed = any(a is not b for a, b in zip(out, batch.messages, strict=True))
        if denied_turns or denied_structured or changed:
            kept = [
                m
                for m in out
                if _type_name(m) != "StreamEvent"
                and not (_key(m) in denied_turns and (_texts(m) or _thinking(m)))
                and not denied_structured.intersection(_structured(m))
            ]
            self.dropped += len(out) - len(kept)
            out = kept
        if batch.trailing is not None:
            out.append(self._rewrite(batch.trailing))
        # Only now is the batch out of the holder: a failure before leaves it held.
        self._pending = list(batch.kept)
        return out

    def _rewrite(self, message: Any) -> Any:
        kind = _type_name(message)
        if _prompt_outcome(message):
            session_id = str(getattr(message, "data", {}).get("session_id") or "")
            self._prompt_reason = self._ledger.take_prompt_block(session_id)
            return message
        if kind == "UserMessage":
            key = _key(message)
            self._turns.pop(key, None)
            if key is None:
                self._ledger.set_live(None, self._live_structured)
            return self._rewrite_user(message)
        if kind == "ResultMessage":
            return self._rewrite_result(message)
        if kind in _TASK_DESCRIBED:
            reason = self._withheld_inputs.get(str(getattr(message, "tool_use_id", "")))
            if reason is not None:
                return _described(message, _withheld_text(reason, "tool input"))
        if kind == "TaskNotificationMessage":
            summary = getattr(message, "summary", None)
            reason = self._ledger.denial_reason(summary) if isinstance(summary, str) else None
            if reason is not None:
                shown = ANSWER_BLOCK_PREFIX + reason
                data = dict(getattr(message, "data", {}) or {})
                data["summary"] = shown
                return dataclasses.replace(message, summary=shown, data=data)
        return message

    def _rewrite_result(self, message: Any) -> Any:
        self._turns.clear()
        self._live_structured = None
        self._ledger.set_live(None, None)
        prompt_reason, self._prompt_reason = self._prompt_reason, None
        if prompt_reason is None and getattr(message, "num_turns", None) == 0:
            # No model call happened: a blocked prompt even if no notice preceded it.
            prompt_reason = self._ledger.take_prompt_block(
                str(getattr(message, "session_id", "") or "")
            )
        message = self._with_denials(message)
        if prompt_reason is not None:
            return _as_error(message, PROMPT_BLOCK_PREFIX + prompt_reason)
        withheld, self._withheld = self._withheld, None
        turn_denial, self._turn_denial = self._turn_denial, None
        reason = withheld or turn_denial
        shown = (getattr(message, "result", None), getattr(message, "structured_output", None))
        for value in shown:
            if reason is None and value is not None:
                text = value if isinstance(value, str) else structured_text(value)
                reason = self._ledger.denial_reason(text)
        if reason is not None:
            return _as_error(message, ANSWER_BLOCK_PREFIX + reason)
        return message

    def _with_denials(self, message: Any) -> Any:
        """The result with the input of each denied call (``permission_denials``) and of
        a deferred one as the app got it in the call's block: withheld when it was."""
        deferred = getattr(message, "deferred_tool_use", None)
        reason = self._withheld_inputs.get(str(getattr(deferred, "id", "")))
        if reason is not None and dataclasses.is_dataclass(deferred):
            # A call the app's own PreToolUse deferred: the run stops on it.
            shown_call = dataclasses.replace(deferred, input=_withheld_input(reason))  # type: ignore[type-var]
            message = dataclasses.replace(message, deferred_tool_use=shown_call)
        denials = getattr(message, "permission_denials", None)
        if not isinstance(denials, list) or not denials:
            return message
        shown: list[Any] = []
        for denial in denials:
            tool_use_id = denial.get("tool_use_id") if isinstance(denial, Mapping) else None
            verdict = self._ledger.tool_call(tool_use_id) if isinstance(tool_use_id, str) else None
            reason = self._withheld_inputs.get(str(tool_use_id))
            if reason is None and verdict is not None and verdict[0] == "deny":
                reason = str(verdict[1])
            if not isinstance(denial, Mapping):
                shown.append(denial)
            elif reason is not None:
                shown.append({**denial, "tool_input": _withheld_input(reason)})
            elif verdict is not None and verdict[0] == "mask":
                shown.append({**denial, "tool_input": verdict[1]})
            else:
                shown.append(denial)
        return dataclasses.replace(message, permission_denials=shown)

    def _rewrite_user(self, message: Any) -> Any:
        """A tool result the guard withheld or replaced, or that carries a denied
        (subagent) answer, in the form the model got (or the reason)."""
        content = getattr(message, "content", None)
        prompted = self._withheld_inputs.get(_key(message) or "")
        if prompted is not None and not any(_tool_result_id(b) for b in _blocks(message)):
            # A subagent's prompt: the input of the Agent call the app did not get.
            return dataclasses.replace(message, content=_withheld_text(prompted, "tool input"))
        if not isinstance(content, list):
            return message
        changed = False
        shown_result: Any = getattr(message, "tool_use_result", None)
        blocks: list[Any] = []
        for block in content:
            tool_use_id = getattr(block, "tool_use_id", None)
            if not isinstance(tool_use_id, str):
                blocks.append(block)
                continue
            verdict = self._ledger.tool_output(tool_use_id)
            if verdict is None:
                answer_reason = _denied_in(self._ledger, getattr(block, "content", None))
                if answer_reason is None:
                    blocks.append(block)
                    continue
                verdict = (answer_reason, None, False)
            reason, replacement, stopped = verdict
            if stopped:
                self._withheld = self._withheld or reason
            shown = replacement if replacement is not None else _withheld_text(reason)
            blocks.append(dataclasses.replace(block, content=_as_content(shown)))
            shown_result = shown
            changed = True
        if not changed:
            return message
        return dataclasses.replace(message, content=blocks, tool_use_result=shown_result)


def _withheld_text(reason: str, what: str = "tool output") -> str:
    return f"[{what} withheld: {PROMPT_BLOCK_PREFIX}{reason}]"


def _tool_result_id(block: Any) -> str | None:
    tool_use_id = getattr(block, "tool_use_id", None)
    return tool_use_id if isinstance(tool_use_id, str) else None


def _as_content(shown: Any) -> Any:
    if isinstance(shown, str):
        return shown
    if isinstance(shown, list):
        return shown
    if isinstance(shown, Mapping) and isinstance(shown.get("stdout"), str):
        stderr = shown.get("stderr")
        return shown["stdout"] + (f"\n{stderr}" if isinstance(stderr, str) and stderr else "")
    return structured_text(shown)


def _denied_in(ledger: AnswerLedger, content: Any) -> str | None:
    """The denial reason of an answer carried by a tool result's content, if any."""
    if isinstance(content, str):
        return ledger.denial_reason(content)
    if isinstance(content, list):
        for part in content:
            text = part.get("text") if isinstance(part, Mapping) else None
            if isinstance(text, str):
                reason = ledger.denial_reason(text)
                if reason is not None:
                    return reason
    return None


def _fallback(message: Any) -> list[Any]:
    """What passes when judging a message failed: nothing that carries an answer."""
    if _type_name(message) in ("AssistantMessage", "StreamEvent", "UserMessage"):
        return []
    if _type_name(message) == "ResultMessage":
        try:
            return [_as_error(message, ANSWER_BLOCK_PREFIX + _CHECK_FAILED)]
        except Exception:  # not the dataclass we know: better no result than its content
            _log.error("akto_otel withheld a result it could not mark as an error")
            return []
    return [message]


async def _judged(
    holder: Holder,
    batch: Unjudged,
    judge: Judge,
    fail_open: bool,
    on_unjudged: UnjudgedReporter | None,
) -> list[Any]:
    """The batch's messages, judged unit by unit; a judge that raises withholds
    (fail-closed) or delivers and reports the unit unjudged (fail-open)."""
    judged: dict[_Unit, str | None] = {}
    for unit in batch.unjudged:
        try:
            judged[unit] = await judge(unit.text)
        except Exception as exc:  # the judge must not fail open by accident
            _log.error("akto_otel could not judge a held %s: %s", unit.kind, type(exc).__name__)
            if fail_open:
                judged[unit] = None
                _report_unjudged(on_unjudged, f"held {unit.kind}", type(exc).__name__)
            else:
                judged[unit] = _CHECK_FAILED
    return holder.settle(batch, judged)


def _report_unjudged(on_unjudged: UnjudgedReporter | None, where: str, error: str) -> None:
    if on_unjudged is None:
        note_unjudged(None, where, error)
        return
    try:
        on_unjudged(where, error)
    except Exception:
        _log.debug("could not report an unjudged delivery", exc_info=True)


async def hold_answers(
    stream: AsyncIterator[Any],
    ledger: AnswerLedger,
    *,
    hold: bool = True,
    judge: Judge | None = None,
    fail_open: bool = False,
    on_unjudged: UnjudgedReporter | None = None,
) -> AsyncIterator[Any]:
    """``stream`` with denied answers withheld (see the module docstring).

    ``hold=False`` passes assistant messages through at once (they cannot be
    recalled then) but still turns a denied final result into an error. ``judge``
    judges what no hook judged: a turn's whole text (Stop judges the transcript's
    turn, but a text written before a tool call never reaches Stop), thinking, a
    structured output; without it they are delivered. An internal error while
    holding withholds the message (the result becomes an error) unless
    ``fail_open``: then it is delivered and reported to ``on_unjudged``.
    """
    holder = Holder(ledger, hold=hold, judging=judge is not None)
    ledger.tracking = True
    try:
        async for out in _held(stream, holder, judge, fail_open, on_unjudged):
            yield out
    finally:
        ledger.tracking = False
        ledger.set_live(None, None)


async def _held(
    stream: AsyncIterator[Any],
    holder: Holder,
    judge: Judge | None,
    fail_open: bool,
    on_unjudged: UnjudgedReporter | None,
) -> AsyncIterator[Any]:
    done = False
    while not done:
        try:
            message = await stream.__anext__()
        except StopAsyncIteration:
            done = True
            message = None
        try:
            released: list[Any] = []
            for out in holder.finish() if done else holder.feed(message):
                if not isinstance(out, Unjudged):
                    released.append(out)
                elif judge is None:
                    released += holder.settle(out, {})
                else:
                    released += await _judged(holder, out, judge, fail_open, on_unjudged)
        except Exception as exc:  # a message shape we do not know: never leak by accident
            _log.error("akto_otel could not judge a message for holding: %s", type(exc).__name__)
            held = holder.drain()
            if fail_open:
                _report_unjudged(on_unjudged, "held message", type(exc).__name__)
                released = held if done else [*held, message]
            else:
                holder.dropped += len(held)
                released = [] if done else _fallback(message)
        for out in released:
            yield out


def withheld_agent_output(
    ledger: AnswerLedger, tool_name: str, tool_response: Any
) -> dict[str, Any] | None:
    """PostToolUse output that replaces a denied subagent answer in the parent's context.

    The Agent (Task) tool's result carries the subagent's final text; when
    SubagentStop denied that text and gave up regenerating it, the parent model
    gets the block reason in the same shape instead (the CLI accepts
    ``updatedToolOutput`` only in the tool's own output shape). None: nothing to do.
    """
    if tool_name not in _AGENT_TOOLS or not isinstance(tool_response, Mapping):
        return None
    content = tool_response.get("content")
    if not isinstance(content, list):
        return None
    reason: str | None = None
    for part in content:
        text = part.get("text") if isinstance(part, Mapping) else None
        if isinstance(text, str):
            reason = reason or ledger.denial_reason(text)
    if reason is None:
        return None
    replaced = copy.deepcopy(dict(tool_response))
    replaced["content"] = [{"type": "text", "text": ANSWER_BLOCK_PREFIX + reason}]
    return {"hookSpecificOutput": {"hookEventName": "PostToolUse", "updatedToolOutput": replaced}}
