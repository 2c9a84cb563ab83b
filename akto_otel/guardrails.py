"""Async client for Akto's guardrail endpoint (``/api/http-proxy``).

One pooled ``httpx.AsyncClient``, created lazily on the running event loop and
closed by :meth:`GuardrailClient.aclose`. TLS is verified (a custom CA bundle comes
from ``SSL_CERT_PATH``); the token goes in the ``Authorization`` header and nowhere
else. Every call returns a :class:`~akto_otel.contract.Verdict`: a failure of any kind
becomes the configured fail decision (open by default) carrying a low-cardinality
error kind, never an exception.

Usage::

    from akto_otel.config import Settings
    from akto_otel.contract import WireContext, prompt_record
    from akto_otel.guardrails import GuardrailClient

    client = GuardrailClient(Settings.from_env())
    verdict = await client.check(prompt_record(WireContext(), "hi"), request=True)
    await client.aclose()
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import certifi
import httpx

from akto_otel.config import Settings
from akto_otel.contract import (
    Verdict,
    encode_record,
    health_check_url,
    http_proxy_url,
    parse_verdict,
)
from akto_otel.redaction import Redactor, redact_url

__all__ = ["ERROR_KINDS", "GuardrailClient", "PostResult", "error_kind", "tls_context"]

_log = logging.getLogger("akto_otel.guardrails")

#: Every error kind a verdict or a delivery can carry (the ``error.type`` values).
ERROR_KINDS = (
    "not_configured",
    "timeout",
    "connection_refused",
    "dns_error",
    "tls_error",
    "connection_error",
    "http_401",
    "http_403",
    "http_413",
    "http_422",
    "http_429",
    "http_4xx",
    "http_5xx",
    "invalid_json",
    "invalid_response",
    "response_too_large",
    "internal_error",
)


class _ResponseTooLarge(Exception):
    pass


_TLS_CONTEXTS: dict[str, ssl.SSLContext] = {}


def tls_context(settings: Settings) -> ssl.SSLContext | bool:
    """The verifying TLS context for Akto's URL, built once per CA bundle.

    A plain ``http://`` URL never does a TLS handshake (redirects are not
    followed), so no CA bundle is loaded for it: that load costs ~90 ms per client.
    """
    if not settings.ingestion_url.startswith("https://"):
        return False
    key = settings.ssl_cert_path
    context = _TLS_CONTEXTS.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=key or certifi.where())
        _TLS_CONTEXTS[key] = context
    return context


_warmed = False
_T = TypeVar("_T")


async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
    """Await with a deadline; ``asyncio.timeout`` (3.11+) costs a third of ``wait_for``."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def _warm_up() -> None:
    """Import what httpx loads lazily on its first client (~80-140 ms here).

    Done when a client is built, at app start, instead of inside the agent's
    first guarded hook.
    """
    global _warmed
    if not _warmed:
        httpx.AsyncHTTPTransport(verify=False)
        _warmed = True


def error_kind(exc: BaseException) -> str:
    """Map an exception from a request to one of :data:`ERROR_KINDS`."""
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, _ResponseTooLarge):
        return "response_too_large"
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 8:
        if isinstance(cause, ssl.SSLError):
            return "tls_error"
        if isinstance(cause, socket.gaierror):
            return "dns_error"
        if isinstance(cause, ConnectionRefusedError):
            return "connection_refused"
        cause = cause.__cause__ or cause.__context__
        seen += 1
    if isinstance(exc, httpx.ConnectError) and "ssl" in str(exc).lower():
        return "tls_error"
    if isinstance(exc, (httpx.TransportError, OSError)):
        return "connection_error"
    return "internal_error"


def _status_kind(status: int) -> str:
    if status in (401, 403, 413, 422, 429):
        return f"http_{status}"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"


@dataclass(frozen=True)
class PostResult:
    """The outcome of one POST: a status code, or an error kind when none came back."""

    status: int | None
    body: bytes = b""
    error: str | None = None
    retry_after: float | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class GuardrailClient:
    """Talks to Akto's ``/api/http-proxy`` on one pooled connection set."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._settings = settings
        self._redactor = redactor or Redactor(settings.redact_patterns)
        self._transport = transport
        self._limits = limits or httpx.Limits(
            max_connections=100, max_keepalive_connections=32, keepalive_expiry=30.0
        )
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        _warm_up()
        self._headers = {"Content-Type": "application/json"}
        if settings.token:
            self._headers["Authorization"] = settings.token

    def __repr__(self) -> str:
        url = redact_url(self._settings.ingestion_url) or "<not configured>"
        return f"GuardrailClient(url={url!r}, timeout={self._settings.timeout})"

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def configured(self) -> bool:
        return bool(self._settings.ingestion_url)

    def _verify(self) -> ssl.SSLContext | bool:
        return tls_context(self._settings)

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop or self._http.is_closed:
            # A client is bound to the loop it was first used on; an app that runs
            # several loops in turn (asyncio.run per query) gets one per loop.
            t = self._settings.timeout
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(t, connect=t, read=t, write=t, pool=t),
                limits=self._limits,
                verify=self._verify(),
                transport=self._transport,
                trust_env=False,
                follow_redirects=False,
            )
            self._loop = loop
        return self._http

    async def aclose(self) -> None:
        """Close the pooled connections (on the loop they belong to)."""
        http, self._http = self._http, None
        if http is None or http.is_closed:
            return
        try:
            if self._loop is asyncio.get_running_loop():
                await http.aclose()
        except Exception as exc:  # closing must never fail the caller
            _log.debug("closing the guardrail client failed: %s", error_kind(exc))

    async def post(self, url: str, body: bytes) -> PostResult:
        """POST ``body``; return the status and body, or the error kind. Never raises."""
        start = time.perf_counter()
        if self._settings.log_payloads and _log.isEnabledFor(logging.DEBUG):
            preview = body[:1000].decode("utf-8", errors="replace")
            _log.debug("request payload: %s", self._redactor.redact_or_none(preview) or "[dropped]")
        try:
            return await _within(self._settings.timeout, self._post(url, body, start))
        except Exception as exc:
            kind = error_kind(exc)
            shown = redact_url(url.split("?", 1)[0])
            _log.warning("POST %s failed: %s", shown, kind)
            return PostResult(status=None, error=kind, latency_s=time.perf_counter() - start)

    async def _post(self, url: str, body: bytes, start: float) -> PostResult:
        client = self._client()
        request = client.build_request("POST", url, content=body, headers=self._headers)
        response = await client.send(request, stream=True)
        try:
            limit = self._settings.max_response_bytes
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _ResponseTooLarge
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > limit:
                    raise _ResponseTooLarge
                chunks.append(chunk)
        finally:
            await response.aclose()
        status = response.status_code
        return PostResult(
            status=status,
            body=b"".join(chunks),
            error=None if 200 <= status < 300 else _status_kind(status),
            retry_after=_retry_after(response.headers),
            latency_s=time.perf_counter() - start,
        )

    async def check(
        self,
        record: Mapping[str, Any],
        *,
        request: bool = True,
        response: bool = False,
        ingest: bool = False,
    ) -> Verdict:
        """Ask Akto for a verdict on ``record``. Never raises.

        ``request``/``response`` choose the guardrail sides (``guardrails`` and
        ``response_guardrails`` flags); ``ingest`` also stores the record.
        """
        settings = self._settings
        fail_closed = settings.fail_mode == "closed"
        if not settings.ingestion_url:
            return Verdict.failure("not_configured", fail_closed=fail_closed)
        start = time.perf_counter()
        try:
            url = http_proxy_url(
                settings.ingestion_url,
                settings.connector,
                guardrails=request,
                response_guardrails=response,
                ingest_data=ingest,
            )
            result = await self.post(url, encode_record(record))
        except Exception as exc:  # e.g. a record that cannot be encoded
            return Verdict.failure(error_kind(exc), fail_closed=fail_closed).with_latency(
                time.perf_counter() - start
            )
        verdict = self._verdict(result, fail_closed)
        return verdict.with_latency(result.latency_s)

    @staticmethod
    def _verdict(result: PostResult, fail_closed: bool) -> Verdict:
        if result.error is not None:
            return Verdict.failure(result.error, fail_closed=fail_closed)
        try:
            body = json.loads(result.body)
        except (ValueError, UnicodeDecodeError):
            return Verdict.failure("invalid_json", fail_closed=fail_closed)
        try:
            return parse_verdict(body)
        except ValueError:
            return Verdict.failure("invalid_response", fail_closed=fail_closed)

    async def health(self) -> bool:
        """True when ``/healthCheck`` answers 2xx within the timeout."""
        if not self._settings.ingestion_url:
            return False
        try:
            client = self._client()
            response = await asyncio.wait_for(
                client.get(health_check_url(self._settings.ingestion_url)),
                self._settings.timeout,
            )
        except Exception:
            return False
        return 200 <= response.status_code < 300
