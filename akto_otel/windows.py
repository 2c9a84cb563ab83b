"""Judge content of any size: whole when it fits, else in overlapping windows.

Akto's ``/api/http-proxy`` rejects a string longer than about 256 Ki characters,
counted after JSON escaping (``json.dumps`` with ``ensure_ascii``: a non-ASCII
character costs 6, an emoji 12). A guardrail call never carries a truncated
text: content that does not fit is cut into windows that each fit, overlapping
by at least ``overlap`` escaped characters, so a pattern no longer than the
overlap is always inside one window whole. The windows are judged concurrently
and the strictest verdict wins. Content past ``max_total`` is not judged at all:
the verdict is a deny (size is attacker-controlled).

Windows carry what the tool, the model or the app sees, never an encoding of it.
A tool's input or output is cut into the strings a JSON decoder reads from it
(the tool name, every key and value, in document order); each window record
carries a list of whole strings or overlapping pieces of one, so once Akto
decodes the record a TAB is a TAB and an ``é`` an ``é``. Any failure to plan
is a deny, whatever the fail mode, as is content past ``max_total``.

Usage::

    from akto_otel.windows import Limits, judge, plan_prompt

    plan = plan_prompt(wire, prompt, Limits.from_settings(settings))
    verdict = await judge(lambda r: client.check(r, request=True), plan)
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from akto_otel import contract
from akto_otel.contract import Verdict, WireContext

if TYPE_CHECKING:
    from akto_otel.config import Settings

__all__ = [
    "Limits",
    "Plan",
    "escaped_len",
    "judge",
    "plan_prompt",
    "plan_tool_call",
    "plan_tool_result",
    "plan_turn",
    "split",
    "strictest",
    "too_large",
    "unplanned",
]

_log = logging.getLogger("akto_otel.windows")

Record = dict[str, Any]
#: Stands in for a request side too large to send whole when only the response is judged.
_PLACEHOLDER: dict[str, Any] = {"x-akto-omitted": "too large; judged separately"}
_TOO_LARGE = "too_large"
_PLAN_FAILED = "plan_failed"
_STRICT_ENCODER = json.JSONEncoder(allow_nan=False)
#: A window record names its tool by at most this much of the name: the whole name
#: is judged as content, so an absurd name grows the content, not every record.
_LABEL_CHARS = contract.MAX_IDENTIFIER_CHARS
#: What one string costs inside a window's list beyond its escaped text: two quotes
#: and the ", " before it.
_ITEM_OVERHEAD = 4


#: ASCII characters a JSON string holds as they are (``json.dumps``, ``ensure_ascii``).
_AS_IS = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')
#: Characters with a two-character escape; every other control character takes six.
_SHORT_ESCAPES = b'"\\\n\r\t\b\f'


def escaped_len(text: str) -> int:
    """Characters ``text`` takes inside a JSON string encoded as the server sees it."""
    if text.isascii():
        # Counted without encoding (a megabyte is judged in windows by its length):
        # what is not as-is takes two characters, or six as \u00XX.
        escaped = text.encode("ascii").translate(None, _AS_IS)
        if not escaped:
            return len(text)
        return len(text) + len(escaped) + 4 * len(escaped.translate(None, _SHORT_ESCAPES))
    return len(json.dumps(text)) - 2


@dataclass(frozen=True)
class Limits:
    """How much one guardrail call carries, how windows overlap, what is too large."""

    payload: int = contract.PAYLOAD_LIMIT
    overlap: int = 16 * 1024
    max_total: int = 8 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(overlap=settings.judge_window_overlap, max_total=settings.judge_max_chars)


@dataclass(frozen=True)
class Plan:
    """The records one judgement sends: one whole record, or one per window."""

    records: tuple[Record, ...]
    size: int
    too_large: bool = False
    failed: bool = False

    @property
    def windowed(self) -> bool:
        return len(self.records) > 1


#: Chunk of the escaped-length index: a slice's length costs at most one chunk's encoding.
_CHUNK = 4096


class _EscapedIndex:
    """Escaped length of any slice of ``text`` without re-encoding the whole slice.

    JSON escaping is per character, so lengths add up over any cut: prefix sums
    per chunk, plus at most one partial chunk encoded per query.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.prefix = [0]
        for at in range(0, len(text), _CHUNK):
            self.prefix.append(self.prefix[-1] + escaped_len(text[at : at + _CHUNK]))

    def upto(self, end: int) -> int:
        """``escaped_len(text[:end])``."""
        whole, rest = divmod(end, _CHUNK)
        partial = escaped_len(self.text[end - rest : end]) if rest else 0
        return self.prefix[whole] + partial

    def between(self, start: int, end: int) -> int:
        """``escaped_len(text[start:end])``."""
        return self.upto(end) - self.upto(start)

    def last_at_most(self, limit: int, lo: int, hi: int) -> int:
        """The largest ``x`` in ``[lo, hi]`` with ``upto(x) <= limit``; ``lo`` if none is.

        ``upto`` grows with ``x`` (every character costs at least 1), so the whole
        chunks are searched in the prefix sums, and only inside one chunk does a
        slice get encoded.
        """
        chunk = bisect.bisect_right(self.prefix, limit) - 1
        if hi <= chunk * _CHUNK:
            return hi
        if self.upto(lo) > limit:
            return lo
        lo, hi = max(lo, chunk * _CHUNK), min(hi, (chunk + 1) * _CHUNK)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.upto(mid) <= limit:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _largest_fit(index: _EscapedIndex, start: int, budget: int) -> int:
    """The largest ``end`` with ``escaped_len(text[start:end]) <= budget`` (at least start+1)."""
    hi = min(len(index.text), start + budget)
    return index.last_at_most(index.upto(start) + budget, start + 1, hi)


def _overlap_start(index: _EscapedIndex, start: int, end: int, overlap: int) -> int:
    """The largest ``s`` in (start, end) with ``escaped_len(text[s:end]) >= overlap``."""
    lo, hi = start + 1, end - 1
    if hi < lo or index.between(lo, end) < overlap:
        return lo
    return index.last_at_most(index.upto(end) - overlap, lo, hi)


def split(text: str, budget: int, overlap: int) -> list[str]:
    """Windows of ``text``, each at most ``budget`` escaped characters.

    Consecutive windows share at least ``overlap`` escaped characters, so every
    substring of at most ``overlap`` escaped characters lies whole in one window.
    Needs ``budget > 2 * overlap`` (and at least 12, one escaped emoji).
    """
    return [text[a:b] for a, b in _bounds(_EscapedIndex(text), budget, overlap)]


def _bounds(
    index: _EscapedIndex, budget: int, overlap: int, first: int = 0
) -> list[tuple[int, int]]:
    """The ``(start, end)`` of each window :func:`split` cuts from ``index.text``;
    the first window at most ``first`` escaped characters when that is given."""
    if min(budget, first or budget) < max(12, 2 * overlap + 1):
        raise ValueError(f"window budget {budget} too small for overlap {overlap}")
    text = index.text
    bounds: list[tuple[int, int]] = []
    start = 0
    limit = first or budget
    while True:
        end = _largest_fit(index, start, limit)
        bounds.append((start, end))
        if end >= len(text):
            return bounds
        start = _overlap_start(index, start, end, overlap)
        limit = budget


def _plan(
    content: Callable[[], str],
    whole: Record | None,
    window_record: Callable[[str], Record],
    field: str,
    limits: Limits,
) -> Plan:
    if whole is not None:
        return Plan((whole,), len(whole[field]))
    text = content()
    size = escaped_len(text)
    if size > limits.max_total:
        return Plan((), size, too_large=True)
    overhead = len(window_record("")[field])
    budget = limits.payload - overhead
    overlap = min(limits.overlap, max(0, (budget - 1) // 2))
    return Plan(tuple(window_record(w) for w in split(text, budget, overlap)), size)


@dataclass(frozen=True)
class _Piece:
    """One string a decoder reads from the content, with its escaped length."""

    text: str
    cost: int
    index: _EscapedIndex | None


class _TooLarge(Exception):
    """The content passed ``max_total`` while it was being read."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _scalar_text(value: Any) -> str:
    """A non-container value as a decoder reads it: a string, or a scalar's JSON text."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _key_text(key: Any) -> str:
    """A non-string key as ``json.dumps`` writes it (and any other key as its ``str``)."""
    if key is None or isinstance(key, (bool, int, float)):
        return _scalar_text(key)
    return str(key)


def _children(value: Any) -> list[Any]:
    """What a container holds, in document order: each key before its value."""
    if isinstance(value, Mapping):
        items: list[Any] = []
        for key, item in value.items():
            items.append(key if isinstance(key, str) else _key_text(key))
            items.append(item)
        return items
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return list(value)


def _strings(value: Any, long: int, max_total: int) -> tuple[list[_Piece], int]:
    """Every string a JSON decoder reads from ``value`` (keys, values, scalars as
    their JSON text), in document order, and the content's size.

    The size is the escaped length of each string plus its two quotes, and two
    for each container: at most the length of the value's JSON text, counted as
    the server counts. Reading stops as soon as the size passes ``max_total``
    (raising :class:`_TooLarge`), so the cost is bounded whatever the shape or
    depth; a container met twice (a cycle) is read once.
    """
    pieces: list[_Piece] = []
    size = 0
    seen: set[int] = set()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (Mapping, list, tuple, set, frozenset)):
            if id(item) not in seen:
                seen.add(id(item))
                size += 2
                stack.extend(reversed(_children(item)))
            continue
        text = _scalar_text(item)
        if size + len(text) + 2 > max_total:  # escaping only adds: too large already
            raise _TooLarge(size + len(text) + 2)
        index = _EscapedIndex(text) if len(text) > long else None
        cost = index.upto(len(text)) if index is not None else escaped_len(text)
        size += cost + 2
        if size > max_total:
            raise _TooLarge(size)
        if text:
            pieces.append(_Piece(text, cost, index))
    return pieces, size


def _pack(pieces: Sequence[_Piece], capacity: int, overlap: int) -> list[list[str]]:
    """The strings of each window, each window at most ``capacity`` escaped
    characters of items (see ``_ITEM_OVERHEAD``): whole strings in order while they
    fit; a string longer than a window cut into overlapping pieces, the first
    filling what is left of the current window."""
    budget = capacity - _ITEM_OVERHEAD
    smallest = max(12, 2 * overlap + 1)
    windows: list[list[str]] = []
    current: list[str] = []
    room = capacity
    for piece in pieces:
        if piece.cost + _ITEM_OVERHEAD <= room:
            current.append(piece.text)
            room -= piece.cost + _ITEM_OVERHEAD
            continue
        if piece.cost <= budget or room - _ITEM_OVERHEAD < smallest:
            windows.append(current)
            current, room = [], capacity
        if piece.cost <= budget:
            current.append(piece.text)
            room -= piece.cost + _ITEM_OVERHEAD
            continue
        index = piece.index or _EscapedIndex(piece.text)
        for a, b in _bounds(index, budget, overlap, room - _ITEM_OVERHEAD):
            cost = index.between(a, b) + _ITEM_OVERHEAD
            if cost > room:
                windows.append(current)
                current, room = [], capacity
            current.append(piece.text[a:b])
            room -= cost
    windows.append(current)
    return [w for w in windows if w] or [[]]


def _plan_values(
    content: Any,
    window_value: Callable[[list[str]], Any],
    base: Record,
    field: str,
    limits: Limits,
) -> Plan:
    """Windows over the decoded strings of ``content``: each a copy of ``base`` whose
    ``field`` encodes ``window_value(strings)``."""
    overhead = len(contract.dumps(window_value([])))
    capacity = limits.payload - overhead
    budget = capacity - _ITEM_OVERHEAD
    overlap = min(limits.overlap, max(0, (budget - 1) // 2))
    try:
        pieces, size = _strings(content, budget, limits.max_total)
    except _TooLarge as exc:
        return Plan((), exc.size, too_large=True)
    records: list[Record] = []
    for strings in _pack(pieces, capacity, overlap):
        payload = contract.dumps(window_value(strings))
        if len(payload) > limits.payload:
            raise ValueError("a window record does not fit the payload limit")
        records.append({**base, field: payload})
    return Plan(tuple(records), size)


def _text_at_least(value: Any, depth: int = 3) -> int:
    """A lower bound of the length of ``value``'s JSON text, cheap whatever its size:
    the strings of its first ``depth`` levels, the first 64 items of each container."""
    if isinstance(value, str):
        return len(value)
    total = 0
    if depth > 0 and isinstance(value, dict):
        for count, (key, item) in enumerate(value.items()):
            if count == 64:
                break
            total += len(key) if isinstance(key, str) else 0
            total += _text_at_least(item, depth - 1)
    elif depth > 0 and isinstance(value, (list, tuple)):
        for item in value[:64]:
            total += _text_at_least(item, depth - 1)
    return total


def _whole_text(value: Any, limits: Limits) -> str | None:
    """``value`` as plain JSON when that is short enough for one record, else None.

    Content that cannot fit by its first strings alone is not encoded to find out
    (a megabyte takes milliseconds).

    A value plain JSON cannot encode (too deep, NaN, bytes, objects) would reach a
    whole record only through :func:`contract.dumps`'s stand-ins ("[max depth]"),
    which hide content: it is windowed over what a decoder reads instead.
    """
    if _text_at_least(value) > limits.payload:
        return None
    try:
        text = _STRICT_ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return text if len(text) <= limits.payload else None


def _failed(what: str, exc: Exception) -> Plan:
    _log.error("akto_otel could not plan the judgement of %s: %s", what, type(exc).__name__)
    return Plan((), 0, failed=True)


def plan_prompt(wire: WireContext, prompt: str, limits: Limits) -> Plan:
    """A UserPromptSubmit judgement (request side)."""
    try:
        text = prompt.strip()
        whole = None
        if contract.fits_payload({"body": text}):
            whole = contract.prompt_record(wire, text)
        return _plan(
            lambda: text, whole, lambda w: contract.prompt_record(wire, w), "requestPayload", limits
        )
    except Exception as exc:
        return _failed("a prompt", exc)


def plan_tool_call(wire: WireContext, tool_name: str, tool_input: Any, limits: Limits) -> Plan:
    """A PreToolUse judgement; windows cut the tool name and every key and value of
    the input, as the tool reads them."""
    try:
        text = _whole_text(contract.tool_request_value(tool_name, tool_input), limits)
        if text is not None:
            whole = contract.tool_request_record(wire, tool_name, None)
            return Plan(({**whole, "requestPayload": text},), len(text))
        label = tool_name[:_LABEL_CHARS]
        return _plan_values(
            [tool_name, tool_input],
            lambda w: contract.tool_request_value(label, w),
            contract.tool_request_record(wire, label, None),
            "requestPayload",
            limits,
        )
    except Exception as exc:
        return _failed("a tool call", exc)


def plan_tool_result(
    wire: WireContext, tool_name: str, tool_input: Any, tool_response: Any, limits: Limits
) -> Plan:
    """A PostToolUse judgement (response side); the input rides along when it fits."""
    try:
        request, response = contract.tool_result_values(tool_name, tool_input, tool_response)
        request_input = tool_input if contract.fits_payload(request) else _PLACEHOLDER
        text = _whole_text(response, limits)
        if text is not None:
            whole = contract.tool_result_record(wire, tool_name, request_input, None)
            return Plan(({**whole, "responsePayload": text},), len(text))
        label = tool_name[:_LABEL_CHARS]
        return _plan_values(
            tool_response,
            lambda w: contract.tool_result_values(label, request_input, w)[1],
            contract.tool_result_record(wire, label, request_input, None),
            "responsePayload",
            limits,
        )
    except Exception as exc:
        return _failed("a tool result", exc)


def _decoded_json(text: str) -> Any:
    """``text`` decoded when it is a JSON object or array (a structured answer), else None."""
    if text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, (dict, list)) else None


def plan_turn(wire: WireContext, prompt: str, answer: str, hook: str, limits: Limits) -> Plan:
    """A Stop/SubagentStop judgement of ``answer`` (response side).

    An answer that is JSON (a structured output, judged as its canonical JSON text) is
    also judged over its decoded strings, as the app reads them: in the JSON text a
    newline inside a value is a backslash and an ``n``.
    """
    try:
        request = prompt if contract.fits_payload({"body": prompt}) else ""
        whole = None
        if contract.fits_payload({"body": answer}):
            whole = contract.turn_record(wire, request, answer, hook=hook)
        plan = _plan(
            lambda: answer,
            whole,
            lambda w: contract.turn_record(wire, request, w, hook=hook),
            "responsePayload",
            limits,
        )
        decoded = _decoded_json(answer) if plan.records else None
        if decoded is None:
            return plan
        values = _plan_values(
            decoded,
            lambda w: {"body": w},
            contract.turn_record(wire, request, "", hook=hook),
            "responsePayload",
            limits,
        )
        if not values.records:
            return values
        return Plan(plan.records + values.records, plan.size)
    except Exception as exc:
        return _failed("an answer", exc)


def _rank(verdict: Verdict) -> int:
    if verdict.decision == "error":
        return 1 if verdict.allowed else 6
    return {"allow": 0, "alert": 2, "warn": 3, "modify": 4, "ask": 5}.get(verdict.decision, 7)


def strictest(verdicts: Sequence[Verdict]) -> Verdict:
    """The verdict that weighs most; a mask among several windows cannot be applied: deny."""
    if not verdicts:
        raise ValueError("no verdicts")
    if len(verdicts) == 1:
        return verdicts[0]
    worst = max(verdicts, key=_rank)
    latency = max(v.latency_s for v in verdicts)
    if len(verdicts) > 1 and worst.decision == "modify":
        worst = replace(
            worst,
            decision="deny",
            allowed=False,
            reason="Akto masking verdict on part of a long content cannot be applied",
        )
    if worst.allowed and not worst.fail_open:
        # A window let through without a verdict (fail-open) stays unjudged, and loud,
        # next to a warn or alert on another window.
        unjudged = next((v for v in verdicts if v.allowed and v.fail_open), None)
        if unjudged is not None:
            worst = replace(worst, fail_open=True, error=unjudged.error or "fail_open")
    return replace(worst, latency_s=latency)


def too_large(size: int, limits: Limits) -> Verdict:
    """The verdict on content past ``max_total``: a deny whatever the fail mode."""
    return Verdict(
        decision="deny",
        allowed=False,
        reason=f"content too large to judge ({size} > {limits.max_total} characters)",
        error=_TOO_LARGE,
        ran=False,
    )


def unplanned() -> Verdict:
    """The verdict when the content could not be cut for judging: a deny whatever
    the fail mode (the content, not Akto, is at fault)."""
    return Verdict(
        decision="deny",
        allowed=False,
        reason="content could not be prepared for judging",
        error=_PLAN_FAILED,
        ran=False,
    )


async def judge(
    check: Callable[[Record], Awaitable[Verdict]], plan: Plan, limits: Limits
) -> Verdict:
    """Judge every record of ``plan`` concurrently; the strictest verdict wins."""
    if plan.failed:
        return unplanned()
    if plan.too_large or not plan.records:
        return too_large(plan.size, limits)
    if len(plan.records) == 1:
        # The common case: awaited inline, without the task gather() would wrap it in.
        return await check(plan.records[0])
    verdicts = await asyncio.gather(*(check(record) for record in plan.records))
    return strictest(verdicts)
