"""Async client for Akto's guardrail endpoint (``/api/http-proxy``), on aiohttp.

One ``aiohttp.ClientSession`` per event loop (keep-alive, a connector limit,
explicit timeouts), created lazily on the loop that first needs it and closed
when that loop shuts down (``asyncio.run``) or by :meth:`GuardrailClient.aclose`.
TLS is verified (a custom CA bundle comes from ``AKTO_SSL_CERT_PATH``); the proxy is
the one urllib would pick (``HTTPS_PROXY``/``NO_PROXY``), ``.netrc`` is ignored;
the ``Authorization`` header follows :mod:`akto_otel.credentials` (the token, or
basic auth from the URL's ``user:password@``, never both). The answer's size limit is enforced
while reading. Every call returns a :class:`~akto_otel.contract.Verdict`: a failure
of any kind becomes the configured fail decision (open by default) carrying a
low-cardinality error kind, never an exception.

The exporter's background worker is synchronous and stays on httpx;
:func:`error_kind` therefore classifies both libraries' exceptions.

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
import errno
import logging
import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import certifi
import httpx
from multidict import CIMultiDictProxy
from yarl import URL

from akto_otel.config import Settings
from akto_otel.contract import (
    AKTO_FAIL_OPEN_REASON,
    Verdict,
    VerdictFault,
    encode_record,
    health_check_url,
    http_proxy_url,
    read_verdict,
)
from akto_otel.credentials import akto_auth
from akto_otel.redaction import Redactor, redact_url

__all__ = [
    "ERROR_KINDS",
    "GuardrailClient",
    "PostResult",
    "environment_proxy",
    "error_kind",
    "tls_context",
]

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
    "akto_error",
    "akto_fail_open",
    "response_too_large",
    "internal_error",
)

#: Connections kept to Akto per event loop (the hooks of one agent rarely need more).
CONNECTOR_LIMIT = 100
_KEEPALIVE_S = 30.0
_READ_CHUNK = 64 * 1024


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


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url``, as urllib (the reference connector) reads it.

    ``HTTPS_PROXY``/``HTTP_PROXY`` by the URL's scheme (lower-case names win),
    ``NO_PROXY`` hosts bypass it (and, on macOS and Windows, the system settings
    urllib reads too); ``None`` for a direct connection. Read once per client.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname):
        return None
    return proxy


def _connector_ssl(settings: Settings) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl`` argument: ``False`` there means *unverified*, so never pass it."""
    context = tls_context(settings)
    return context if isinstance(context, ssl.SSLContext) else True


_T = TypeVar("_T")


async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
    """Await with a deadline; ``asyncio.timeout`` (3.11+) costs a third of ``wait_for``."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def _os_kind(exc: BaseException) -> str | None:
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, socket.gaierror):
        return "dns_error"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    # Happy eyeballs folds several refused addresses into one plain OSError.
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return "connection_refused"
    return None


def error_kind(exc: BaseException) -> str:
    """Map an exception from a request (aiohttp or httpx) to one of :data:`ERROR_KINDS`."""
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, _ResponseTooLarge):
        return "response_too_large"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls_error"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns_error"
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 8:
        kind = _os_kind(cause)
        if kind is not None:
            return kind
        cause = cause.__cause__ or cause.__context__
        seen += 1
    if isinstance(exc, httpx.ConnectError) and "ssl" in str(exc).lower():
        return "tls_error"
    if isinstance(exc, aiohttp.InvalidURL):
        return "internal_error"
    if isinstance(exc, aiohttp.ClientError):  # e.g. a garbled answer: as httpx's protocol errors
        return "connection_error"
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


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` (declared or counted)."""
    declared = response.content_length
    if declared is not None:
        if declared > limit:
            raise _ResponseTooLarge
        return await response.read()  # the parser stops at the declared length
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _ResponseTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _make_session(settings: Settings, limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=limit, keepalive_timeout=_KEEPALIVE_S, ssl=_connector_ssl(settings)
    )
    return aiohttp.ClientSession(
        connector=connector,
        # One deadline per call, from post()'s asyncio.timeout: aiohttp's own timers
        # (total, connect, per-read) would cost ~20 µs CPU a call for the same bound.
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
        # Not asking for compression leaves no decompression step for a bomb to use.
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
        trust_env=False,
        # Akto sets no cookies worth keeping; none are stored or sent back.
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
        read_bufsize=_READ_CHUNK,
    )


#: Every open session with its loop and closer, so that a session outlives a client
#: dropped before its loop ends (it is then closed at the loop's shutdown, not by GC
#: on a dead loop). Entries leave when closed, or when found on a closed loop.
_OPEN: dict[
    aiohttp.ClientSession, tuple[asyncio.AbstractEventLoop, AsyncGenerator[None, None]]
] = {}


async def _close_at_loop_shutdown(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Parked async generator: the loop's ``shutdown_asyncgens`` closes it, and the session.

    ``asyncio.run`` (and pytest-asyncio) call ``shutdown_asyncgens`` while the loop
    still runs, which is the last moment the session's connections can be closed
    on their own loop.
    """
    try:
        yield
    finally:
        _OPEN.pop(session, None)
        await session.close()


async def _open_session(
    settings: Settings, limit: int
) -> tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]:
    loop = asyncio.get_running_loop()
    for old, (old_loop, _) in list(_OPEN.items()):  # a snapshot: other threads add entries
        if old_loop.is_closed():
            _OPEN.pop(old, None)
    session = _make_session(settings, limit)
    closer = _close_at_loop_shutdown(session)
    _OPEN[session] = (loop, closer)
    await closer.__anext__()  # registers it with the loop; does not suspend
    return session, closer


async def _finish(closer: AsyncGenerator[None, None]) -> None:
    await closer.aclose()


class GuardrailClient:
    """Talks to Akto's ``/api/http-proxy`` on one pooled session per event loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        redactor: Redactor | None = None,
        connector_limit: int = CONNECTOR_LIMIT,
    ) -> None:
        self._settings = settings
        self._redactor = redactor or Redactor(settings.redact_patterns)
        self._limit = connector_limit
        # loop -> (session, its shutdown generator); entries of closed loops are pruned.
        self._sessions: dict[
            asyncio.AbstractEventLoop,
            tuple[aiohttp.ClientSession, AsyncGenerator[None, None]],
        ] = {}
        self._urls: dict[tuple[bool, bool, bool], URL] = {}
        self._proxy = environment_proxy(settings.ingestion_url)
        # One rule for every client (akto_otel.credentials): the URL dialled carries no
        # user:password@, the Authorization header carries the token or basic auth.
        self._auth = akto_auth(settings.ingestion_url, settings.token)
        self._headers = {"Content-Type": "application/json", **self._auth.headers}

    def __repr__(self) -> str:
        url = redact_url(self._settings.ingestion_url) or "<not configured>"
        return f"GuardrailClient(url={url!r}, timeout={self._settings.timeout})"

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def configured(self) -> bool:
        return bool(self._settings.ingestion_url)

    async def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        entry = self._sessions.get(loop)
        if entry is not None and not entry[0].closed:
            return entry[0]
        for old in list(self._sessions):  # a snapshot: other threads' loops add entries
            if old.is_closed():
                self._sessions.pop(old, None)
        entry = self._sessions[loop] = await _open_session(self._settings, self._limit)
        return entry[0]

    def _proxy_url(self, request: bool, response: bool, ingest: bool) -> URL:
        key = (request, response, ingest)
        url = self._urls.get(key)
        if url is None:
            settings = self._settings
            text = http_proxy_url(
                self._auth.base_url,
                settings.connector,
                guardrails=request,
                response_guardrails=response,
                ingest_data=ingest,
            )
            url = self._urls[key] = URL(text)
        return url

    async def aclose(self) -> None:
        """Close this loop's session now; sessions of other running loops on theirs."""
        current = asyncio.get_running_loop()
        sessions, self._sessions = self._sessions, {}
        for loop, (_, closer) in sessions.items():
            try:
                if loop is current:
                    await closer.aclose()
                elif not loop.is_closed():
                    asyncio.run_coroutine_threadsafe(_finish(closer), loop)
            except Exception as exc:  # closing must never fail the caller
                _log.debug("closing the guardrail client failed: %s", error_kind(exc))

    async def post(self, url: str | URL, body: bytes) -> PostResult:
        """POST ``body``; return the status and body, or the error kind. Never raises."""
        start = time.perf_counter()
        if self._settings.log_payloads and _log.isEnabledFor(logging.DEBUG):
            preview = body[:1000].decode("utf-8", errors="replace")
            _log.debug("request payload: %s", self._redactor.redact_or_none(preview) or "[dropped]")
        try:
            return await _within(self._settings.timeout, self._post(url, body, start))
        except Exception as exc:
            kind = error_kind(exc)
            shown = redact_url(str(url).split("?", 1)[0])
            _log.warning("POST %s failed: %s", shown, kind)
            return PostResult(status=None, error=kind, latency_s=time.perf_counter() - start)

    async def _post(self, url: str | URL, body: bytes, start: float) -> PostResult:
        entry = self._sessions.get(asyncio.get_running_loop())
        session = entry[0] if entry is not None and not entry[0].closed else await self._session()
        async with session.post(
            url, data=body, headers=self._headers, allow_redirects=False, proxy=self._proxy
        ) as response:
            status = response.status
            headers: CIMultiDictProxy[str] = response.headers
            try:
                data = await _read_bounded(response, self._settings.max_response_bytes)
            except _ResponseTooLarge:
                response.close()  # drop the connection rather than drain the rest
                raise
        return PostResult(
            status=status,
            body=data,
            error=None if 200 <= status < 300 else _status_kind(status),
            retry_after=_retry_after(headers),
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
            url = self._proxy_url(request, response, ingest)
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
            return read_verdict(result.body)
        except VerdictFault as fault:
            reason = AKTO_FAIL_OPEN_REASON if fault.kind == "akto_fail_open" else ""
            return Verdict.failure(fault.kind, fail_closed=fail_closed, reason=reason)
        except ValueError:  # not JSON (UnicodeDecodeError is one too)
            return Verdict.failure("invalid_json", fail_closed=fail_closed)

    async def health(self) -> bool:
        """True when ``/healthCheck`` answers 2xx within the timeout."""
        if not self._settings.ingestion_url:
            return False
        try:
            session = await self._session()
            url = health_check_url(self._auth.base_url)
            async with session.get(
                url,
                headers=self._auth.headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
            ) as response:
                return 200 <= response.status < 300
        except Exception:
            return False
