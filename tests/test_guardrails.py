"""The guardrail client against real local servers: the emulator and a faulty one."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from akto_otel.config import Settings
from akto_otel.contract import WireContext, prompt_record, tool_request_record
from akto_otel.guardrails import ERROR_KINDS, GuardrailClient
from tests.fault_server import FaultServer

TIMEOUT = 1.0
RECORD = prompt_record(WireContext(), "hello there")

FAULTS = [
    ("no_answer", "timeout"),
    ("slow_body", "timeout"),
    ("status_500", "http_5xx"),
    ("status_502", "http_5xx"),
    ("status_503", "http_5xx"),
    ("status_401_html", "http_401"),
    ("status_413", "http_413"),
    ("status_422", "http_422"),
    ("status_429", "http_429"),
    ("invalid_json", "invalid_json"),
    ("html_200", "invalid_json"),
    ("wrong_shape", "invalid_response"),
    ("reset", "connection_error"),
    ("reset_mid_body", "connection_error"),
    ("refuse_after_accept", "connection_error"),
    ("huge_body", "response_too_large"),
    ("huge_chunked", "response_too_large"),
]


def _settings(url: str, fail_mode: str = "open", **kw: object) -> Settings:
    return Settings.from_env({}, ingestion_url=url, timeout=TIMEOUT, fail_mode=fail_mode, **kw)


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
@pytest.mark.parametrize(("mode", "kind"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_every_fault_maps_to_the_fail_decision(mode: str, kind: str, fail_mode: str) -> None:
    with FaultServer(mode) as server:
        client = GuardrailClient(_settings(server.url, fail_mode))
        start = time.perf_counter()
        verdict = await client.check(RECORD, request=True)
        elapsed = time.perf_counter() - start
        await client.aclose()
    assert elapsed <= TIMEOUT + 0.5, f"{mode} took {elapsed:.2f}s"
    assert verdict.error == kind
    assert kind in ERROR_KINDS
    assert verdict.decision == "error"
    assert verdict.allowed is (fail_mode == "open")
    assert verdict.fail_open is (fail_mode == "open")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_connection_refused(fail_mode: str) -> None:
    client = GuardrailClient(_settings(f"http://127.0.0.1:{_closed_port()}", fail_mode))
    verdict = await client.check(RECORD)
    assert verdict.error == "connection_refused"
    assert verdict.allowed is (fail_mode == "open")


async def test_dns_failure_is_bounded_and_classified() -> None:
    client = GuardrailClient(_settings("http://akto-does-not-exist.invalid"))
    start = time.perf_counter()
    verdict = await client.check(RECORD)
    assert time.perf_counter() - start <= TIMEOUT + 0.5
    assert verdict.error in ("dns_error", "timeout")
    assert verdict.allowed


async def test_not_configured_follows_the_fail_mode() -> None:
    assert (await GuardrailClient(Settings.from_env({})).check(RECORD)).allowed
    closed = GuardrailClient(Settings.from_env({}, fail_mode="closed"))
    verdict = await closed.check(RECORD)
    assert verdict.error == "not_configured" and not verdict.allowed


async def test_allow_and_deny_from_a_plain_server() -> None:
    with FaultServer("allow") as allow, FaultServer("deny") as deny:
        ok = await GuardrailClient(_settings(allow.url)).check(RECORD)
        no = await GuardrailClient(_settings(deny.url)).check(RECORD)
    assert (ok.decision, ok.allowed, ok.error) == ("allow", True, None)
    assert (no.decision, no.allowed, no.reason) == ("deny", False, "no")
    assert ok.latency_s > 0


async def test_client_survives_event_loop_changes() -> None:
    """``asyncio.run`` per query gives a new loop each time; the client follows."""
    with FaultServer("allow") as server:
        client = GuardrailClient(_settings(server.url))
        assert (await client.check(RECORD)).decision == "allow"

        def in_new_loop() -> str:
            return asyncio.run(client.check(RECORD)).decision

        assert await asyncio.to_thread(in_new_loop) == "allow"


def test_repr_hides_the_token() -> None:
    client = GuardrailClient(_settings("http://127.0.0.1:1", token="hunter2-token"))
    assert "hunter2" not in repr(client)


async def test_tool_record_round_trip_to_fault_server_counts_requests() -> None:
    with FaultServer("allow") as server:
        client = GuardrailClient(_settings(server.url))
        for _ in range(3):
            await client.check(tool_request_record(WireContext(), "Bash", {"command": "ls"}))
        await client.aclose()
        assert server.requests == 3
