"""Held answers: an assistant text reaches the app only after Stop has judged it.

The CLI emits an assistant message, then runs the Stop hook (in this process),
and only then emits the next message. So when a stream wrapper receives the
message that follows a held assistant text, the Stop handler has already told
the :class:`AnswerLedger` whether it denied that text. :func:`hold_answers`
wraps a Claude Agent SDK message stream and applies the ledger:

- an assistant message with text, and the partial ``StreamEvent`` s around it,
  are held until the next other message; a text Stop or SubagentStop denied is
  dropped with every partial event held beside it; a held text no Stop saw (one
  written before a tool call) goes to ``judge`` (the guard's response guardrail)
  and is dropped if it denies;
- a ``ResultMessage`` whose ``result`` is a denied answer (the regeneration
  bound was reached) becomes an error: ``is_error=True``,
  ``subtype="error_guardrail"``, ``result`` = the block reason;
- a ``ResultMessage`` after a blocked prompt becomes the same kind of error
  carrying Akto's reason;
- a subagent's task notification whose summary is a denied answer gets the
  reason instead (:func:`withheld_agent_output` does the same for the
  parent model's view of the Agent tool's result).

The hooks tell the ledger through :func:`note_hook_output` (every denying Stop,
SubagentStop or UserPromptSubmit output, whichever path produced it). The
ledger matches by content (the text Stop judged), not by arrival time, so a
slow consumer that reads messages long after the CLI produced them is handled
the same way. Usage::

    ledger = AnswerLedger()
    ledger.record_denial("leaked SECRET", "Secret in response")   # from the Stop handler
    async for message in hold_answers(query(prompt=..., options=...), ledger, judge=judge):
        ...
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GUARDRAIL_ERROR_SUBTYPE",
    "AnswerLedger",
    "Holder",
    "Judge",
    "Unjudged",
    "hold_answers",
    "note_hook_output",
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


def note_hook_output(ledger: AnswerLedger, event: str, data: Any, output: Any) -> None:
    """Tell ``ledger`` what a hook's output allowed or denied, whichever path produced
    it (the verdict, or the fail-closed error path). Never raises."""
    try:
        if not isinstance(output, Mapping) or not isinstance(data, Mapping):
            return
        if event in ("Stop", "SubagentStop"):
            text = data.get("last_assistant_message")
            if not isinstance(text, str):
                return
            if _denies(output):
                ledger.record_denial(text, _output_reason(output))
            else:
                ledger.record_allowed(text)
        elif event == "UserPromptSubmit" and _denies(output):
            ledger.record_prompt_block(str(data.get("session_id") or ""), _output_reason(output))
    except Exception:
        _log.debug("could not note a hook output", exc_info=True)


#: Judges a text nobody judged yet: the reason to withhold it, or None to deliver it.
Judge = Callable[[str], Awaitable["str | None"]]


@dataclass(frozen=True)
class Unjudged:
    """Held messages whose text no Stop hook judged (e.g. written before a tool call)."""

    messages: tuple[Any, ...]
    texts: tuple[str, ...]


def _type_name(message: Any) -> str:
    return type(message).__name__


def _texts(message: Any) -> list[str]:
    content = getattr(message, "content", None)
    if not isinstance(content, list):
        return []
    return [b.text for b in content if isinstance(getattr(b, "text", None), str)]


def _is_held_kind(message: Any) -> bool:
    return _type_name(message) == "AssistantMessage" and bool(_texts(message))


def _prompt_outcome(message: Any) -> bool:
    """A system message saying the CLI stopped because UserPromptSubmit blocked."""
    data = getattr(message, "data", None)
    if _type_name(message) != "SystemMessage" or not isinstance(data, Mapping):
        return False
    outcome = data.get("prompt_submit_outcome")
    return isinstance(outcome, Mapping) and "hook" in str(outcome.get("kind", ""))


def _as_error(result: Any, reason: str) -> Any:
    return dataclasses.replace(
        result, is_error=True, subtype=GUARDRAIL_ERROR_SUBTYPE, result=reason
    )


class Holder:
    """The decisions of :func:`hold_answers`, one message at a time, without I/O.

    ``feed`` returns the messages to hand to the app now; ``finish`` those still
    held when the stream ends. With ``judging``, held texts that no Stop judged come
    out as one :class:`Unjudged` batch for the caller to judge.
    """

    def __init__(self, ledger: AnswerLedger, *, hold: bool = True, judging: bool = False) -> None:
        self._ledger = ledger
        self._hold = hold
        self._judging = judging
        self._pending: list[Any] = []
        self._prompt_reason: str | None = None
        self.dropped = 0

    def feed(self, message: Any) -> list[Any]:
        if self._hold and (_type_name(message) == "StreamEvent" or _is_held_kind(message)):
            self._pending.append(message)
            return []
        out = self._resolve()
        out.append(self._rewrite(message))
        return out

    def finish(self) -> list[Any]:
        return self._resolve()

    def _resolve(self) -> list[Any]:
        """Release what is pending; a denied answer is dropped, and with it every
        partial event pending (their deltas may spell it out)."""
        pending, self._pending = self._pending, []
        denied = {
            id(m)
            for m in pending
            if any(self._ledger.denial_reason(t) is not None for t in _texts(m))
        }
        if not denied:
            if self._judging:
                unjudged = tuple(
                    t for m in pending for t in _texts(m) if not self._ledger.was_judged(t)
                )
                if unjudged:
                    return [Unjudged(tuple(pending), unjudged)]
            return pending
        self.dropped += len(denied)
        return [m for m in pending if id(m) not in denied and _type_name(m) != "StreamEvent"]

    def _rewrite(self, message: Any) -> Any:
        kind = _type_name(message)
        if _prompt_outcome(message):
            session_id = str(getattr(message, "data", {}).get("session_id") or "")
            self._prompt_reason = self._ledger.take_prompt_block(session_id)
            return message
        if kind == "ResultMessage":
            prompt_reason, self._prompt_reason = self._prompt_reason, None
            if prompt_reason is None and getattr(message, "num_turns", None) == 0:
                # No model call happened: a blocked prompt even if no notice preceded it.
                prompt_reason = self._ledger.take_prompt_block(
                    str(getattr(message, "session_id", "") or "")
                )
            if prompt_reason is not None:
                return _as_error(message, PROMPT_BLOCK_PREFIX + prompt_reason)
            result = getattr(message, "result", None)
            reason = self._ledger.denial_reason(result) if isinstance(result, str) else None
            if reason is not None:
                return _as_error(message, ANSWER_BLOCK_PREFIX + reason)
            return message
        if kind == "TaskNotificationMessage":
            summary = getattr(message, "summary", None)
            reason = self._ledger.denial_reason(summary) if isinstance(summary, str) else None
            if reason is not None:
                shown = ANSWER_BLOCK_PREFIX + reason
                data = dict(getattr(message, "data", {}) or {})
                data["summary"] = shown
                return dataclasses.replace(message, summary=shown, data=data)
        return message


def _fallback(message: Any) -> list[Any]:
    """What passes when judging a message failed: nothing that carries an answer."""
    if _is_held_kind(message):
        return []
    if _type_name(message) == "ResultMessage":
        return [_as_error(message, ANSWER_BLOCK_PREFIX + "could not be checked")]
    return [message]


async def _judged(batch: Unjudged, judge: Judge, ledger: AnswerLedger) -> list[Any]:
    """The batch's messages if ``judge`` lets its texts through; without them if not."""
    try:
        reason = await judge("\n\n".join(batch.texts))
    except Exception as exc:  # the judge must not fail open by accident
        _log.error("akto_otel could not judge a held text: %s", type(exc).__name__)
        reason = "could not be checked"
    if reason is None:
        for text in batch.texts:
            ledger.record_allowed(text)
        return list(batch.messages)
    for text in batch.texts:
        ledger.record_denial(text, reason)
    return [m for m in batch.messages if not _texts(m) and _type_name(m) != "StreamEvent"]


async def hold_answers(
    stream: AsyncIterator[Any],
    ledger: AnswerLedger,
    *,
    hold: bool = True,
    judge: Judge | None = None,
) -> AsyncIterator[Any]:
    """``stream`` with denied answers withheld (see the module docstring).

    ``hold=False`` passes assistant texts through at once (they cannot be
    recalled then) but still turns a denied final result into an error. ``judge``
    judges held texts that no Stop hook saw (a text the model wrote before a tool
    call: Stop only receives the turn's last one); without it they are delivered.
    """
    holder = Holder(ledger, hold=hold, judging=judge is not None)
    async for message in stream:
        try:
            released = holder.feed(message)
        except Exception as exc:  # a message shape we do not know: never leak a text
            _log.error("akto_otel could not judge a message for holding: %s", type(exc).__name__)
            released = _fallback(message)
        for out in released:
            if isinstance(out, Unjudged) and judge is not None:
                for judged in await _judged(out, judge, ledger):
                    yield judged
            else:
                yield out
    for out in holder.finish():
        if isinstance(out, Unjudged) and judge is not None:
            for judged in await _judged(out, judge, ledger):
                yield judged
        else:
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
