"""Judge content of any size: whole when it fits, else in overlapping windows.

Akto's ``/api/http-proxy`` rejects a string longer than about 256 Ki characters,
counted after JSON escaping (``json.dumps`` with ``ensure_ascii``: a non-ASCII
character costs 6, an emoji 12). A guardrail call never carries a truncated
text: content that does not fit is cut into windows that each fit, overlapping
by at least ``overlap`` escaped characters, so a pattern no longer than the
overlap is always inside one window whole. The windows are judged concurrently
and the strictest verdict wins. Content past ``max_total`` is not judged at all:
the verdict is a deny (size is attacker-controlled).

Usage::

    from akto_otel.windows import Limits, judge, plan_prompt

    plan = plan_prompt(wire, prompt, Limits.from_settings(settings))
    verdict = await judge(lambda r: client.check(r, request=True), plan)
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import Awaitable, Callable, Sequence
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
]

Record = dict[str, Any]
#: Stands in for a request side too large to send whole when only the response is judged.
_PLACEHOLDER: dict[str, Any] = {"x-akto-omitted": "too large; judged separately"}
_TOO_LARGE = "too_large"


def escaped_len(text: str) -> int:
    """Characters ``text`` takes inside a JSON string encoded as the server sees it."""
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
    if budget < max(12, 2 * overlap + 1):
        raise ValueError(f"window budget {budget} too small for overlap {overlap}")
    index = _EscapedIndex(text)
    if index.upto(len(text)) <= budget:
        return [text]
    windows: list[str] = []
    start = 0
    while True:
        end = _largest_fit(index, start, budget)
        windows.append(text[start:end])
        if end >= len(text):
            return windows
        start = _overlap_start(index, start, end, overlap)


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


def plan_prompt(wire: WireContext, prompt: str, limits: Limits) -> Plan:
    """A UserPromptSubmit judgement (request side)."""
    text = prompt.strip()
    whole = contract.prompt_record(wire, text) if contract.fits_payload({"body": text}) else None
    return _plan(
        lambda: text, whole, lambda w: contract.prompt_record(wire, w), "requestPayload", limits
    )


def plan_tool_call(wire: WireContext, tool_name: str, tool_input: Any, limits: Limits) -> Plan:
    """A PreToolUse judgement; windows cut the input's JSON text, whatever its shape."""
    whole = None
    if contract.fits_payload(contract.tool_request_value(tool_name, tool_input)):
        whole = contract.tool_request_record(wire, tool_name, tool_input)
    return _plan(
        lambda: contract.dumps(tool_input),
        whole,
        lambda w: contract.tool_request_record(wire, tool_name, w),
        "requestPayload",
        limits,
    )


def plan_tool_result(
    wire: WireContext, tool_name: str, tool_input: Any, tool_response: Any, limits: Limits
) -> Plan:
    """A PostToolUse judgement (response side); the input rides along when it fits."""
    request, response = contract.tool_result_values(tool_name, tool_input, tool_response)
    request_input = tool_input if contract.fits_payload(request) else _PLACEHOLDER
    whole = None
    if contract.fits_payload(response):
        whole = contract.tool_result_record(wire, tool_name, request_input, tool_response)
    return _plan(
        lambda: contract.dumps(tool_response),
        whole,
        lambda w: contract.tool_result_record(wire, tool_name, request_input, w),
        "responsePayload",
        limits,
    )


def plan_turn(wire: WireContext, prompt: str, answer: str, hook: str, limits: Limits) -> Plan:
    """A Stop/SubagentStop judgement of ``answer`` (response side)."""
    request = prompt if contract.fits_payload({"body": prompt}) else ""
    whole = None
    if contract.fits_payload({"body": answer}):
        whole = contract.turn_record(wire, request, answer, hook=hook)
    return _plan(
        lambda: answer,
        whole,
        lambda w: contract.turn_record(wire, request, w, hook=hook),
        "responsePayload",
        limits,
    )


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


async def judge(
    check: Callable[[Record], Awaitable[Verdict]], plan: Plan, limits: Limits
) -> Verdict:
    """Judge every record of ``plan`` concurrently; the strictest verdict wins."""
    if plan.too_large or not plan.records:
        return too_large(plan.size, limits)
    if len(plan.records) == 1:
        # The common case: awaited inline, without the task gather() would wrap it in.
        return await check(plan.records[0])
    verdicts = await asyncio.gather(*(check(record) for record in plan.records))
    return strictest(verdicts)
