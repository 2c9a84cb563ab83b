"""The guardrail client's error-kind and verdict mapping, pinned case by case.

test_guardrails.py drives every fault through real servers; mutation testing
(``nox -s mutation -- guardrails``, docs/reliability.md) showed the mapping's
edges left loose: the depth of the cause chain, the status classes and
Retry-After (a TLS failure is tests/test_tls.py's). Exceptions are built as the
libraries raise them and handed to the public :func:`error_kind`; everything that
needs a server gets a real one on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import aiohttp
import httpx
import pytest

from akto_otel.config import Settings
from akto_otel.contract import WireContext, prompt_record
from akto_otel.guardrails import ERROR_KINDS, GuardrailClient, error_kind
from tests.scripted_akto import ScriptedAkto

RECORD = prompt_record(WireContext(), "hello")


def _chained(inner: BaseException, depth: int, *, implicit: bool = False) -> BaseException:
    """``inner`` wrapped in ``depth`` RuntimeErrors, as ``raise ... from`` (or inside
    ``except``, ``implicit``) would chain them."""
    exc = inner
    for i in range(depth):
        outer = RuntimeError(f"wrapper {i}")
        if implicit:
            outer.__context__ = exc
        else:
            outer.__cause__ = exc
        exc = outer
    return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectTimeout("slow"), "timeout"),
        (asyncio.TimeoutError(), "timeout"),
        (ssl.SSLError(1, "bad handshake"), "tls_error"),
        (socket.gaierror(-2, "Name or service not known"), "dns_error"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (OSError(errno.ECONNREFUSED, "Multiple exceptions"), "connection_refused"),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "tls_error",
        ),
        (httpx.ConnectError("All connection attempts failed"), "connection_error"),
        (httpx.ReadError("peer closed"), "connection_error"),
        (aiohttp.InvalidURL("no-scheme"), "internal_error"),
        (aiohttp.ClientPayloadError("garbled"), "connection_error"),
        (OSError(errno.EPIPE, "broken pipe"), "connection_error"),
        (ValueError("ssl in the text of a non-network error"), "internal_error"),
        (RuntimeError("anything else"), "internal_error"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v,
)
def test_each_exception_maps_to_its_kind(exc: BaseException, kind: str) -> None:
    assert kind in ERROR_KINDS
    assert error_kind(exc) == kind


@pytest.mark.parametrize("implicit", [False, True])
def test_the_cause_chain_is_followed_eight_links_deep_and_no_further(implicit: bool) -> None:
    for inner, kind in [
        (socket.gaierror(-2, "unknown"), "dns_error"),
        (ssl.SSLError(1, "x"), "tls_error"),
        (ConnectionRefusedError(), "connection_refused"),
    ]:
        assert error_kind(_chained(inner, 1, implicit=implicit)) == kind
        assert error_kind(_chained(inner, 7, implicit=implicit)) == kind
        assert error_kind(_chained(inner, 8, implicit=implicit)) == "internal_error"


def test_an_explicit_cause_wins_over_the_context() -> None:
    exc = RuntimeError("outer")
    exc.__cause__ = socket.gaierror(-2, "unknown")
    exc.__context__ = ConnectionRefusedError()
    assert error_kind(exc) == "dns_error"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "http_4xx"),
        (401, "http_401"),
        (403, "http_403"),
        (404, "http_4xx"),
        (413, "http_413"),
        (422, "http_422"),
        (429, "http_429"),
        (499, "http_4xx"),
        (500, "http_5xx"),
        (503, "http_5xx"),
    ],
)
async def test_each_status_maps_to_its_kind(status: int, kind: str) -> None:
    with ScriptedAkto(script=[status]) as akto:
        client = GuardrailClient(Settings(ingestion_url=akto.url, timeout=10.0, fail_mode="closed"))
        verdict = await client.check(RECORD, request=True)
        await client.aclose()
    assert (verdict.error, verdict.decision, verdict.allowed) == (kind, "error", False)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), (None, None)],
)
async def test_retry_after_is_read_as_seconds_never_negative(
    header: str | None, seconds: float | None
) -> None:
    step = (429, {"Retry-After": header}) if header is not None else 429
    with ScriptedAkto(script=[step]) as akto:
        client = GuardrailClient(Settings(ingestion_url=akto.url, timeout=10.0))
        result = await client.post(f"{akto.url}/api/http-proxy", b"{}")
        await client.aclose()
    assert (result.status, result.error, result.retry_after) == (429, "http_429", seconds)
