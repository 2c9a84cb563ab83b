"""The exporter's retry, split and drop logic, pinned so that no mutant of it passes.

test_exporter.py delivers through the span processor; this module drives
:class:`RecordExporter` directly against a real scripted Akto on 127.0.0.1 and
pins what mutation testing (``nox -s mutation -- exporter``, docs/reliability.md)
showed loose: the exact counts, routes, keys and error kinds, where a batch is cut
and how Retry-After and the backoff are bounded.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from akto_otel.config import Settings
from akto_otel.contract import WireContext, encode_ingest_item, turn_record
from akto_otel.exporter import (
    ExportStats,
    PendingRecord,
    RecordExporter,
    _backoff,
    _chunks,
    _retry_after,
    encode_observed_item,
)
from tests.scripted_akto import ScriptedAkto

pytestmark = pytest.mark.timeout(60)
CTX = WireContext()


def _item(i: int, text: str = "q", **flags: bool) -> PendingRecord:
    return PendingRecord(turn_record(CTX, text, "a", time_ms=i), key=f"k{i}", **flags)


def _exporter(url: str, **kw: Any) -> tuple[RecordExporter, ExportStats]:
    kw.setdefault("export_retry_timeout", 10.0)
    settings = Settings.from_env({}, ingestion_url=url, timeout=5.0, **kw)
    stats = ExportStats()
    return RecordExporter(settings, stats), stats


def _counts(stats: ExportStats) -> tuple[dict[str, int], dict[str, int]]:
    return stats.snapshot(), dict(stats.failures)


def test_an_empty_batch_is_delivered_and_nothing_is_sent() -> None:
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export([]) is True
    assert akto.requests == [] and exporter.taken == 0
    assert stats.snapshot() == {"exported": 0, "failed": 0, "dropped": 0, "retried": 0}


def test_without_a_url_every_record_fails_as_not_configured() -> None:
    exporter, stats = _exporter("")
    assert exporter.export([_item(1), _item(2)]) is False
    assert exporter.taken == 2
    assert _counts(stats) == (
        {"exported": 0, "failed": 2, "dropped": 0, "retried": 0},
        {"not_configured": 2},
    )


def test_a_batch_goes_to_ingest_data_in_one_request_with_its_key_and_token() -> None:
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url, token="tok")
        assert exporter.export([_item(1), _item(2), _item(3)]) is True
    (request,) = akto.requests
    assert request["path"] == "/api/ingestData"
    assert request["headers"]["Authorization"] == "tok"
    assert request["headers"]["Idempotency-Key"] == hashlib.sha256(b"k1\nk2\nk3").hexdigest()
    assert [int(r["time"]) for r in request["records"]] == [1, 2, 3]
    assert exporter.taken == 3
    assert _counts(stats) == ({"exported": 3, "failed": 0, "dropped": 0, "retried": 0}, {})


def test_routes_proxy_delivery_and_observed_records() -> None:
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url, delivery="proxy")
        assert exporter.export([_item(1)]) is True
        observed, _ = _exporter(akto.url, observe_delivery="proxy")
        assert observed.export(
            [_item(2, guardrails=True), _item(3), _item(4, response_guardrails=True)]
        )
        batched, _ = _exporter(akto.url)
        assert batched.export([_item(5, guardrails=True)])
    paths = [r["path"].split("?")[0] for r in akto.requests]
    assert paths == [
        "/api/http-proxy",
        "/api/http-proxy",
        "/api/http-proxy",
        "/api/ingestData",
        "/api/ingestData",
    ]
    query = akto.requests[1]["path"].split("?")[1]
    assert "guardrails=true" in query and "ingest_data=true" in query
    assert "response_guardrails=true" in akto.requests[2]["path"]
    assert akto.requests[0]["headers"]["Idempotency-Key"] == hashlib.sha256(b"k1").hexdigest()
    assert akto.requests[4]["records"][0]["publishToGuardrails"] is True
    assert stats.snapshot()["exported"] == 1


def test_a_proxy_record_akto_refuses_is_counted_failed_with_its_kind() -> None:
    with ScriptedAkto(script=[422]) as akto:
        exporter, stats = _exporter(akto.url, delivery="proxy")
        assert exporter.export([_item(1), _item(2)]) is False
    assert _counts(stats) == (
        {"exported": 1, "failed": 1, "dropped": 0, "retried": 0},
        {"http_422": 1},
    )


def test_a_refused_batch_is_halved_until_the_bad_record_is_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = [_item(i, "OVERSIZED" if i == 4 else "q") for i in range(6)]
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export(items) is False
    sizes = [len(r["records"]) for r in akto.requests]
    assert sizes == [6, 3, 3, 1, 2, 1, 1]
    assert sorted(int(r["time"]) for r in akto.accepted) == [0, 1, 2, 3, 5]
    assert _counts(stats) == (
        {"exported": 5, "failed": 1, "dropped": 0, "retried": 0},
        {"http_413": 1},
    )
    assert [r.getMessage() for r in caplog.records if r.name == "akto_otel.exporter"] == [
        "dropping 1 record(s) Akto did not take: http_413"
    ]


def test_a_server_error_is_not_split_and_retries_keep_the_key() -> None:
    with ScriptedAkto(script=[500, 503]) as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export([_item(1), _item(2)]) is True
    assert [len(r["records"]) for r in akto.requests] == [2, 2, 2]
    assert len({r["headers"]["Idempotency-Key"] for r in akto.requests}) == 1
    assert _counts(stats) == ({"exported": 2, "failed": 0, "dropped": 0, "retried": 4}, {})


def test_the_retry_timeout_hands_back_with_the_record_held_never_failed() -> None:
    with ScriptedAkto(script=[503] * 50) as akto:
        exporter, stats = _exporter(akto.url, export_retry_timeout=0.0)
        assert exporter.export([_item(1)]) is False
        assert len(akto.requests) == 1 and exporter.held == 1
        assert _counts(stats) == ({"exported": 0, "failed": 0, "dropped": 0, "retried": 1}, {})
        exporter.shutdown()  # only shutdown gives up, with the last error's kind
    assert exporter.held == 0 and exporter.settled == 1
    assert _counts(stats) == (
        {"exported": 0, "failed": 1, "dropped": 0, "retried": 1},
        {"http_503": 1},
    )


def test_retry_after_is_waited_for_and_a_long_one_is_not_cut_short() -> None:
    with ScriptedAkto(script=[(429, {"Retry-After": "0"}), (429, {"Retry-After": "30"})]) as akto:
        exporter, stats = _exporter(akto.url, export_retry_timeout=5.0)
        started = time.monotonic()
        assert exporter.export([_item(1)]) is False
        assert time.monotonic() - started < 4.0, "a wait past the window hands back at once"
        assert exporter.export([]) is False  # the next turn still waits for Retry-After
        assert len(akto.requests) == 2 and exporter.held == 1
        exporter.shutdown()
    assert _counts(stats) == (
        {"exported": 0, "failed": 1, "dropped": 0, "retried": 2},
        {"http_429": 1},
    )


def test_after_the_shutdown_deadline_nothing_more_is_sent() -> None:
    with ScriptedAkto(script=[503] * 50) as akto:
        exporter, stats = _exporter(akto.url)
        exporter.begin_shutdown(time.monotonic() - 1)
        assert exporter.export([_item(1)]) is False
    assert akto.requests == []
    assert stats.failures == {"shutdown_timeout": 1}


def test_a_connection_failure_is_retried_then_counted_with_its_kind_at_shutdown() -> None:
    with ScriptedAkto() as akto:
        url = akto.url
    exporter, stats = _exporter(url, export_retry_timeout=0.3)
    assert exporter.export([_item(1)]) is False
    assert stats.snapshot()["retried"] >= 2 and exporter.held == 1
    exporter.shutdown()
    snap, failures = _counts(stats)
    assert failures == {"connection_refused": 1} and snap["failed"] == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("2", 2.0), ("0.5", 0.5), ("-1", 0.0), ("600", 60.0), ("soon", None)],
)
def test_retry_after_is_bounded(value: str | None, seconds: float | None) -> None:
    assert _retry_after(value) == seconds


def test_backoff_doubles_from_a_tenth_of_a_second_up_to_five() -> None:
    for attempt, bound in [(1, 0.1), (2, 0.2), (4, 0.8), (7, 5.0), (30, 5.0)]:
        samples = [_backoff(attempt) for _ in range(400)]
        assert samples and all(0 <= s <= bound for s in samples), attempt
        assert max(samples) > bound * 0.8, attempt  # full jitter reaches near the bound


def test_chunks_stay_under_the_byte_limit_and_keep_the_order() -> None:
    items = [_item(i) for i in range(5)] + [_item(5, guardrails=True)]
    encoded = [encode_ingest_item(i.record) for i in items[:5]] + [
        encode_observed_item(items[5].record)
    ]
    size = len(encoded[0])
    assert {len(e) for e in encoded[:5]} == {size}
    # Two items and their separator fit exactly; one byte less and each goes alone.
    tight = _chunks(items[:4], 2 * size + 2)
    assert [[item.key for item, _ in chunk] for chunk in tight] == [["k0", "k1"], ["k2", "k3"]]
    looser = _chunks(items[:3], 2 * size + 1)
    assert [[item.key for item, _ in chunk] for chunk in looser] == [["k0"], ["k1"], ["k2"]]
    assert [e for chunk in _chunks(items, 10**9) for _, e in chunk] == encoded
    assert _chunks([], 100) == []
    # One item larger than the limit still goes, alone.
    assert [[i.key for i, _ in c] for c in _chunks(items[:2], 1)] == [["k0"], ["k1"]]


@pytest.mark.parametrize("delivery", ["proxy", "batch"])
def test_a_300_is_not_a_delivery_and_is_not_split(delivery: str) -> None:
    with ScriptedAkto(script=[300]) as akto:
        exporter, stats = _exporter(akto.url, delivery=delivery)
        assert exporter.export([_item(1)] if delivery == "proxy" else [_item(1), _item(2)]) is False
    assert len(akto.requests) == 1
    failed = 1 if delivery == "proxy" else 2
    assert _counts(stats) == (
        {"exported": 0, "failed": failed, "dropped": 0, "retried": 0},
        {"http_300": failed},
    )


def test_a_400_on_a_batch_is_split_like_any_refusal() -> None:
    with ScriptedAkto(script=[400]) as akto:
        exporter, stats = _exporter(akto.url)
        assert exporter.export([_item(1), _item(2)]) is True
    assert [len(r["records"]) for r in akto.requests] == [2, 1, 1]
    assert _counts(stats) == ({"exported": 2, "failed": 0, "dropped": 0, "retried": 0}, {})


def test_a_server_error_that_outlasts_the_retries_is_not_split() -> None:
    with ScriptedAkto(script=[500] * 50) as akto:
        exporter, stats = _exporter(akto.url, export_retry_timeout=0.0)
        assert exporter.export([_item(1), _item(2)]) is False
        exporter.shutdown()
    assert [len(r["records"]) for r in akto.requests] == [2]
    assert stats.failures == {"http_500": 2}


def test_taken_counts_every_batch_and_each_export_reports_its_duration() -> None:
    durations: list[float] = []
    with ScriptedAkto() as akto:
        exporter, stats = _exporter(akto.url)
        stats.duration_listeners.append(durations.append)
        assert exporter.export([_item(1), _item(2)])
        before = time.perf_counter()
        assert exporter.export([_item(3)])
        elapsed = time.perf_counter() - before
    assert exporter.taken == 3
    assert len(durations) == 2 and 0 <= durations[1] <= elapsed
