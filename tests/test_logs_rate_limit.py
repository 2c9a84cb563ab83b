"""Logs that inform without flooding: repeated events are one line per interval with a count.

Queue-full drops used to write nothing at all, and every failed guardrail call one
WARNING (40,000 lines a minute with Akto down). Now the first of a kind is told at
once, the rest are counted, and the next line says how many since when.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.contract import WireContext, turn_record
from akto_otel.logs import RateLimitedLog, RateLimitFilter
from akto_otel.processor import AktoSpanProcessor
from benchmarks.servers import free_port

pytestmark = pytest.mark.timeout(120)
_COUNT = re.compile(r"dropped (\d+) Akto record\(s\) since \S+Z: the delivery queue is full")


class _Clock:
    """A clock the test moves: intervals of a minute without waiting for one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_the_first_is_told_at_once_then_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    log = RateLimitedLog(logging.getLogger("t.rate"), interval=60.0, clock=clock)
    caplog.set_level(logging.INFO, logger="t.rate")
    for _ in range(500):
        log.log(logging.WARNING, "k", "%(count)d lost since %(since)s: %(why)s", why="full")
        clock.now += 0.1  # 50 s in all: one interval not yet over
    log.log(logging.WARNING, "other", "%(count)d other", 3)
    assert [m.split(" since")[0] for m in _lines(caplog, "t.rate")] == ["1 lost", "3 other"]
    clock.now += 11
    log.log(logging.WARNING, "k", "%(count)d lost since %(since)s: %(why)s", why="full")
    assert _lines(caplog, "t.rate")[-1].startswith("500 lost since 20")
    assert _lines(caplog, "t.rate")[-1].endswith("Z: full")
    log.log(logging.WARNING, "k", "%(count)d lost since %(since)s: %(why)s", 7, why="full")
    log.flush()  # at shutdown: what is held back is told
    assert _lines(caplog, "t.rate")[-1].startswith("7 lost")
    log.flush()
    assert len(_lines(caplog, "t.rate")) == 4


def test_the_filter_holds_back_twins_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    logger = logging.getLogger("t.filter")
    logger.addFilter(RateLimitFilter(interval=60.0, clock=clock))
    caplog.set_level(logging.INFO, logger="t.filter")
    for kind in ["timeout"] * 300 + ["connection_refused"] * 2:
        logger.warning("POST %s failed: %s", "http://akto/api/http-proxy", kind)
    clock.now += 61
    logger.warning("POST %s failed: %s", "http://akto/api/http-proxy", "timeout")
    lines = _lines(caplog, "t.filter")
    assert lines[:2] == [
        "POST http://akto/api/http-proxy failed: timeout",
        "POST http://akto/api/http-proxy failed: connection_refused",
    ]
    assert re.fullmatch(r"POST \S+ failed: timeout \(300 times since \S+Z\)", lines[2])
    assert len(lines) == 3


def test_queue_full_drops_are_a_summary_with_count_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="akto_otel")
    settings = Settings.from_env(
        {},
        ingestion_url=_dead_url(),
        timeout=1.0,
        export_retry_timeout=0.2,
        export_shutdown_timeout=0.5,
    )
    processor = AktoSpanProcessor(settings, max_queue_size=5, schedule_delay_millis=50)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for i in range(1000):
        span = provider.get_tracer("t").start_span("hook")
        processor.attach(span, turn_record(WireContext(), "q", "a", time_ms=i), kind="turn")
        span.end()
    during = _lines(caplog, "akto_otel.processor")
    provider.shutdown()
    told = [int(m.group(1)) for m in map(_COUNT.search, _lines(caplog, "akto_otel.processor")) if m]
    dropped = processor.stats.failures["queue_full"]
    assert dropped >= 990
    assert len(during) == 1, "one line at the first drop, not one per drop"
    assert "AKTO_EXPORT_QUEUE_SIZE=5" in during[0]
    assert sum(told) == dropped and len(told) == 2  # the rest told at shutdown


async def test_a_failing_guardrail_call_is_one_line_per_kind_not_one_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="akto_otel")
    guard = AktoGuardrails(
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(),
        ingestion_url=_dead_url(),
        timeout=1.0,
        export_retry_timeout=0.2,
        export_shutdown_timeout=0.5,
    )
    callback = guard.hooks()["PreToolUse"][0].hooks[0]
    data: dict[str, Any] = {
        "hook_event_name": "PreToolUse",
        "session_id": "s-1",
        "tool_name": "Bash",
        "tool_input": {"command": "ls"},
    }
    for n in range(200):
        await callback({**data, "tool_use_id": f"toolu_{n}"}, f"toolu_{n}", {"signal": None})
    guard.shutdown()
    # The session-start probe's own POST (to /api/ingestData) is a line of its own.
    failures = [
        m for m in _lines(caplog, "akto_otel.guardrails") if "failed" in m and "http-proxy" in m
    ]
    assert len(failures) == 1, failures[:3]
    # The 200 calls allowed without a verdict: the first at once, the next with its
    # count, the rest told together at shutdown.
    unjudged = [r for r in caplog.records if getattr(r, "akto_unjudged", False)]
    assert 1 <= len(unjudged) <= 3, [r.getMessage() for r in unjudged]
    assert failures[0].endswith("connection_refused")
