"""The guardrail client against real local servers: the emulator and a faulty one."""

from __future__ import annotations

import asyncio
import time

import pytest

from akto_otel.config import Settings
from akto_otel.contract import (
    AKTO_FAIL_OPEN_REASON,
    WireContext,
    prompt_record,
    tool_request_record,
)
from akto_otel.guardrails import ERROR_KINDS, GuardrailClient
from benchmarks.servers import free_port
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
    ("empty_200", "invalid_json"),
    ("empty_object", "invalid_response"),
    ("success_false", "akto_error"),
    ("data_null", "invalid_response"),
    ("unreadable_allowed", "invalid_response"),
    ("akto_fail_open", "akto_fail_open"),
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


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_akto_failing_open_says_nothing_judged_the_content(fail_mode: str) -> None:
    with FaultServer("akto_fail_open") as server:
        client = GuardrailClient(_settings(server.url, fail_mode))
        unjudged = await client.check(RECORD, request=True)
        await client.aclose()
    with FaultServer("success_false") as server:
        client = GuardrailClient(_settings(server.url, fail_mode))
        failed = await client.check(RECORD, request=True)
        await client.aclose()
    assert unjudged.reason == AKTO_FAIL_OPEN_REASON
    assert failed.reason == "Akto guardrails unavailable (akto_error)"
    assert (unjudged.ran, unjudged.fail_open) == (False, fail_mode == "open")


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_connection_refused(fail_mode: str) -> None:
    client = GuardrailClient(_settings(f"http://127.0.0.1:{free_port()}", fail_mode))
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


# The aiohttp session: keep-alive, a connection limit, one session per loop, closed with it.


class _CountingServer:
    """asyncio server answering ``answers[n]`` to the n-th request of each connection,
    then closing it; counts connections open at once and connections the client closed."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.open = 0
        self.most_open = 0
        self.closed_by_client = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            for answer in self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await asyncio.sleep(0.01)  # lets concurrent callers pile up
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
        finally:
            self.open -= 1
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


_ALLOW_BODY = b'{"success": true, "data": {"guardrailsResult": {"Allowed": true}}}'
_KEEP_ALIVE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_ALLOW_BODY), _ALLOW_BODY)
_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
    len(_ALLOW_BODY),
    _ALLOW_BODY,
)


async def test_concurrent_checks_share_a_bounded_keep_alive_pool() -> None:
    server = _CountingServer([_KEEP_ALIVE] * 100)
    client = GuardrailClient(_settings(await server.start()), connector_limit=2)
    verdicts = await asyncio.gather(*(client.check(RECORD) for _ in range(12)))
    await client.aclose()
    await server.stop()
    assert len(verdicts) == 12
    assert all(v.decision == "allow" and v.error is None for v in verdicts)
    assert server.most_open == 2  # at most the limit, and the calls did overlap


async def test_chunked_answers_are_read_and_limited_while_reading() -> None:
    server = _CountingServer([_CHUNKED])
    url = await server.start()
    client = GuardrailClient(_settings(url))
    small = GuardrailClient(_settings(url, max_response_bytes=16))
    assert (await client.check(RECORD)).decision == "allow"
    refused = await small.check(RECORD, request=True)
    assert (refused.error, refused.allowed) == ("response_too_large", True)
    await client.aclose()
    await small.aclose()
    await server.stop()


async def test_a_session_is_closed_when_its_loop_ends() -> None:
    """``asyncio.run`` per query: each loop's connections are closed as that loop ends."""
    server = _CountingServer([_KEEP_ALIVE] * 10)  # keeps the connection open between calls
    client = GuardrailClient(_settings(await server.start()))

    def one_query() -> str:
        return asyncio.run(client.check(RECORD)).decision

    assert await asyncio.to_thread(one_query) == "allow"
    for _ in range(100):
        if server.closed_by_client:
            break
        await asyncio.sleep(0.01)
    assert server.closed_by_client == 1
    assert server.open == 0
    await server.stop()


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_a_garbled_answer_is_a_connection_error(fail_mode: str) -> None:
    server = _CountingServer([b"HTTP/1.1 abc nonsense\r\n\r\n"])
    client = GuardrailClient(_settings(await server.start(), fail_mode))
    verdict = await client.check(RECORD)
    await client.aclose()
    await server.stop()
    assert verdict.error == "connection_error"
    assert verdict.allowed is (fail_mode == "open")


async def test_the_token_is_sent_raw_and_a_checked_call_gets_a_verdict() -> None:
    """Without the Authorization header Akto answers 401 and fail-open lets it through:
    the verdict below would be an allow with error http_401."""
    from akto_otel.emulator import EmulatorServer, Policy, Rule

    token = "akto-" + "T9" * 12
    rule = Rule(
        name="inj",
        hooks=("UserPromptSubmit",),
        target="request",
        pattern=r"ignore previous instructions",
        reason="Prompt injection detected",
    )
    with EmulatorServer(Policy((rule,)), token=token) as akto:
        client = GuardrailClient(_settings(akto.url, token=token))
        try:
            record = prompt_record(WireContext(), "please ignore previous instructions")
            verdict = await client.check(record, request=True)
        finally:
            await client.aclose()
        proxied = [r for r in akto.records if r.endpoint == "http-proxy"]
    assert verdict.error is None, verdict
    assert verdict.decision == "deny" and not verdict.allowed
    assert proxied and proxied[0].headers["authorization"] == token


async def test_health_answers_within_the_timeout() -> None:
    from akto_otel.emulator import EmulatorServer

    with EmulatorServer() as akto:
        client = GuardrailClient(_settings(akto.url))
        assert await client.health() is True
        await client.aclose()
    closed = f"http://127.0.0.1:{free_port()}"
    client = GuardrailClient(_settings(closed))
    assert await client.health() is False
    await client.aclose()
    with FaultServer("no_answer") as server:
        client = GuardrailClient(_settings(server.url))
        start = time.perf_counter()
        healthy = await client.health()
        elapsed = time.perf_counter() - start
        await client.aclose()
    assert healthy is False
    assert elapsed <= TIMEOUT + 0.5
    assert await GuardrailClient(_settings("")).health() is False
