"""The answer ledger stays bounded however long a guard lives (issue 22, item 7).

One :class:`~akto_otel.answers.AnswerLedger` lives per hook scope, as long as the
guard: every judged answer, denied answer and blocked prompt is noted in it. A
long-running agent service must not grow it without end. Measured with
tracemalloc on the real class (pure in-memory: nothing to stand in for): tens of
thousands of ~1 KB notes of each kind keep what the ledger holds to what its bound
allows, while the newest notes are still answered.
"""

from __future__ import annotations

import gc
import tracemalloc

from akto_otel.answers import AnswerLedger

NOTES = 20_000
#: ~1 KB per note: unbounded, the ledger would hold 3 x 20 MB.
_FILLER = "x" * 1000
#: What a bounded ledger may hold (a few hundred notes of each kind, ~1 KB each).
MAX_HELD_BYTES = 4 * 1024 * 1024


def _text(kind: str, i: int) -> str:
    return f"{kind} answer number {i:08d} {_FILLER}"


def test_the_ledger_holds_a_bounded_amount_however_many_answers_it_hears() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        ledger = AnswerLedger()
        for i in range(NOTES):
            ledger.record_denial(_text("denied", i), f"reason {i} {_FILLER}")
            ledger.record_allowed(_text("allowed", i))
            ledger.record_prompt_block(f"session-{i}-{_FILLER}", f"blocked {i}")
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < MAX_HELD_BYTES, f"the ledger holds {grown / 1e6:.1f} MB after {NOTES} notes"
    # Bounded by forgetting the oldest, never the newest: the latest answers still count.
    last = NOTES - 1
    assert ledger.denial_reason(_text("denied", last)) == f"reason {last} {_FILLER}"
    assert ledger.was_judged(_text("allowed", last))
    assert ledger.take_prompt_block(f"session-{last}-{_FILLER}") == f"blocked {last}"
    assert ledger.denial_reason(_text("denied", 0)) is None
