"""A session's denied subagent answers stay bounded, and none of them reaches the parent.

:class:`~akto_otel.spans.DeniedAnswers` keeps the subagent answers SubagentStop denied
past the regeneration bound, which the parent's tool outputs are matched against
(by containment). A flood of denials must not grow it without end, and bounding it
must not let a denied answer through: the newest is always matched, and once an old
one was evicted every output counts as carrying one (fail-closed). Measured with
tracemalloc on the real class, matched with the hooks' real matcher.
"""

from __future__ import annotations

import gc
import tracemalloc

from opentelemetry.trace import INVALID_SPAN

from akto_otel.hook_tools import _carries_denied_answer
from akto_otel.spans import DeniedAnswers, SessionState

FLOOD = 20_000
_FILLER = "y" * 1000
#: What the bounded set may hold: MAX_ANSWERS answers of ~1 KB, and some slack.
MAX_HELD_BYTES = 2 * 1024 * 1024


def _answer(i: int) -> str:
    return f"denied subagent answer {i:08d} {_FILLER}"


def _handback(answer: str) -> dict[str, object]:
    """The Agent tool's result as the parent would get it."""
    return {"content": [{"type": "text", "text": f"[Subagent hand-back]\n  {answer}"}]}


def _state() -> SessionState:
    return SessionState(session_id="s", span=INVALID_SPAN, owns_span=False)


def test_a_flood_of_denials_stays_bounded_and_the_newest_is_still_withheld() -> None:
    state = _state()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(FLOOD):
            state.denied_answers.add(_answer(i))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert held < MAX_HELD_BYTES, f"{held} bytes held after {FLOOD} denials"
    assert len(state.denied_answers) == DeniedAnswers.MAX_ANSWERS
    assert _carries_denied_answer(state, _handback(_answer(FLOOD - 1)))
    # Evicted long ago, still never let through: the set is saturated, fail-closed.
    assert _carries_denied_answer(state, _handback(_answer(0)))


def test_below_the_bound_only_denied_answers_are_withheld() -> None:
    state = _state()
    assert not state.denied_answers
    for i in range(DeniedAnswers.MAX_ANSWERS):
        state.denied_answers.add(_answer(i))
    assert state.denied_answers and not state.denied_answers.saturated
    assert _carries_denied_answer(state, _handback(_answer(0)))
    assert _carries_denied_answer(state, _answer(7))  # a plain-text output
    assert not _carries_denied_answer(state, _handback("an answer nobody denied"))
    state.denied_answers.add(_answer(0))  # known already: nothing evicted
    assert not state.denied_answers.saturated
    state.denied_answers.add(_answer(DeniedAnswers.MAX_ANSWERS))
    assert state.denied_answers.saturated
    assert _carries_denied_answer(state, _handback("an answer nobody denied"))


def test_the_bound_counts_characters_too_and_keeps_the_newest_whatever_its_size() -> None:
    answers = DeniedAnswers()
    huge = "z" * (DeniedAnswers.MAX_CHARS + 1)
    answers.add("an earlier denied answer")
    answers.add(huge)
    assert len(answers) == 1 and huge in answers and answers.saturated
    assert "" in list(answers) and huge in list(answers)
