"""Property-based fuzzing of every hook callback with arbitrary input.

No exception escapes, nothing hangs, and every record Akto receives is valid JSON
under the server's limits. ``AKTO_FUZZ_EXAMPLES`` sets the examples per hook
(default 300 in the default run; `AKTO_FUZZ_EXAMPLES=20000` for a long run).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from akto_otel import AktoGuardrails
from akto_otel.contract import MAX_PROXY_STRING_CHARS
from akto_otel.emulator import EmulatorServer
from akto_otel.hooks import HOOK_EVENTS

EXAMPLES = int(os.environ.get("AKTO_FUZZ_EXAMPLES", "300"))
KEYS = [
    "session_id",
    "prompt_id",
    "prompt",
    "tool_name",
    "tool_input",
    "tool_response",
    "tool_use_id",
    "agent_id",
    "agent_type",
    "last_assistant_message",
    "stop_hook_active",
    "error",
    "is_interrupt",
    "duration_ms",
    "hook_event_name",
    "trigger",
    "message",
    "notification_type",
    "transcript_path",
    "cwd",
]


class Custom:
    def __repr__(self) -> str:
        return "<Custom>"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=5),
    st.binary(max_size=20),
    st.sampled_from(["", "Bash", "mcp__srv__tool", "mcp__", "rm -rf /", "SECRET-TOKEN"]),
    st.builds(lambda n: "x" * n, st.sampled_from([0, 1, 1000, 70_000, 270_000])),
    st.just(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)),
    st.builds(Custom),
    st.builds(Unprintable),
    st.frozensets(st.integers(), max_size=3),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=20,
)
inputs = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=len(KEYS)),
    values,
)


class _Harness:
    def __init__(self) -> None:
        self.akto = EmulatorServer()
        self.akto.start()
        self.reader = InMemoryMetricReader()
        self.guard = AktoGuardrails(
            tracer_provider=TracerProvider(),
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            ingestion_url=self.akto.url,
            timeout=2.0,
            max_stop_regenerations=1,
        )
        self.loop = asyncio.new_event_loop()
        self.callbacks = {e: m[0].hooks[0] for e, m in self.guard.hooks().items()}

    def close(self) -> None:
        self.loop.run_until_complete(self.guard.client.aclose())
        self.loop.close()
        self.guard.shutdown()
        self.akto.stop()


@pytest.fixture(scope="module")
def harness() -> Iterator[_Harness]:
    h = _Harness()
    yield h
    h.close()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("event", HOOK_EVENTS)
def test_no_input_breaks_a_hook(harness: _Harness, event: str) -> None:
    callback = harness.callbacks[event]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(data=inputs, tool_use_id=st.one_of(st.none(), st.text(max_size=8), st.integers()))
    def run(data: Any, tool_use_id: Any) -> None:
        out = harness.loop.run_until_complete(
            asyncio.wait_for(callback(data, tool_use_id, {"signal": None}), timeout=10)
        )
        assert isinstance(out, dict)

    run()
    harness.guard.force_flush()
    for received in harness.akto.records:
        json.dumps(received.record)
        for key in ("requestPayload", "responsePayload"):
            value = received.record[key]
            assert isinstance(value, str) and len(value) <= MAX_PROXY_STRING_CHARS
            json.loads(value)
    snapshot = harness.guard.processor.stats.snapshot()
    assert snapshot["failed"] == 0 and snapshot["dropped"] == 0
    # Every guardrail call got an answer: no error verdicts (Akto took every record).
    data = harness.reader.get_metrics_data()
    assert data is not None
    errors = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "akto.guardrail.decisions"
        for p in m.data.data_points
        if p.attributes.get("decision") == "error"
    ]
    assert errors == [], [dict(p.attributes) for p in errors]
