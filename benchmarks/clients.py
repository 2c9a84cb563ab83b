"""HTTP clients that compete on the guardrail call.

* :class:`FloorClient`: the floor. Keep-alive HTTP/1.1 on raw asyncio streams,
  posting pre-encoded bytes, reading the answer by ``Content-Length``; nothing else.
* :class:`StreamGuardrailClient`: a :class:`~akto_otel.guardrails.GuardrailClient`
  whose ``post`` speaks HTTP/1.1 on asyncio streams instead of httpx (same ``check``,
  same verdicts, timeouts, response-size limit, error kinds, TLS context). The
  candidate for the package's hot path.
* :class:`RawStreamTransport`: the same wire code as an ``httpx.AsyncBaseTransport``,
  to separate httpx's client layer from its transport (httpcore + anyio + h11).
* :class:`AiohttpGuardrailClient`: ``GuardrailClient`` whose ``post`` uses aiohttp
  directly (needs ``pip install aiohttp``).
* :func:`aiohttp_transport`: httpx over aiohttp (needs ``pip install httpx-aiohttp``).
* :func:`http2_transport`: httpx's HTTP/2 (prior knowledge on cleartext; needs ``h2``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from akto_otel.config import Settings
from akto_otel.guardrails import GuardrailClient, PostResult, error_kind, tls_context

__all__ = [
    "AiohttpGuardrailClient",
    "FloorClient",
    "RawStreamTransport",
    "StreamGuardrailClient",
    "aiohttp_transport",
    "have_aiohttp",
    "have_h2",
    "have_httpx_aiohttp",
    "http2_transport",
]

_log = logging.getLogger("benchmarks.clients")


def have_aiohttp() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def have_httpx_aiohttp() -> bool:
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def have_h2() -> bool:
    try:
        import h2  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the floor


class FloorClient:
    """Minimal keep-alive HTTP/1.1 POSTs on asyncio streams (one connection per caller)."""

    def __init__(self, url: str, body: bytes, *, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def post(self) -> bytes:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._all.append(writer)
        writer.write(self._request)
        head = await reader.readuntil(b"\r\n\r\n")
        at = head.find(b"Content-Length: ") + 16
        body = await reader.readexactly(int(head[at : head.find(b"\r\n", at)]))
        self._idle.append((reader, writer))
        return body

    async def aclose(self) -> None:
        for writer in self._all:
            writer.close()
        self._all.clear()
        self._idle.clear()


# --------------------------------------------------------------------------- stream wire code


class _TooLarge(Exception):
    pass


class _StaleConnection(Exception):
    """A reused keep-alive connection closed before any byte of the answer came."""


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False
    idle_since: float = 0.0


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Pool:
    """Idle keep-alive connections to one origin, at most ``max_connections`` in use."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[_Conn]:
        async with self._slots:
            conn = self._take_idle()
            if conn is None:
                conn = await self._open()
            ok = False
            try:
                yield conn
                ok = True
            finally:
                if ok and len(self._idle) < self.max_idle and not conn.writer.is_closing():
                    conn.reused = True
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)
                else:
                    conn.writer.close()

    async def fresh(self) -> _Conn:
        """A new connection (for the one retry after a stale keep-alive connection)."""
        return await self._open()

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if (
                now - conn.idle_since < self.keepalive_expiry
                and not conn.writer.is_closing()
                and not conn.reader.at_eof()
            ):
                return conn
            conn.writer.close()
        return None

    async def _open(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self.ssl,
            server_hostname=self.host if self.ssl is not None else None,
            limit=256 * 1024,
        )
        return _Conn(reader, writer)

    def close(self) -> None:
        for conn in self._idle:
            conn.writer.close()
        self._idle.clear()


async def _read_answer(conn: _Conn, max_body: int) -> _Answer:
    reader = conn.reader
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if conn.reused and not exc.partial:
            raise _StaleConnection from exc
        raise
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
        raise ValueError("malformed status line")
    status = int(status_line[9:12])
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    keep_alive = status_line.startswith(b"HTTP/1.1")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        headers.append((name, value))
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = b"close" not in value.lower() and (
                keep_alive or b"keep-alive" in value.lower()
            )
    if chunked:
        parts: list[bytes] = []
        size = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            chunk = int(size_line.split(b";", 1)[0].strip(), 16)
            if chunk == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                break
            size += chunk
            if size > max_body:
                raise _TooLarge
            parts.append(await reader.readexactly(chunk))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif length is not None:
        if length > max_body:
            raise _TooLarge
        body = await reader.readexactly(length) if length else b""
    else:
        body = await reader.read(max_body + 1)
        while len(body) <= max_body:
            more = await reader.read(max_body + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > max_body:
            raise _TooLarge
        keep_alive = False
    if not keep_alive:
        conn.writer.close()
    return _Answer(status, headers, body, keep_alive)


async def _exchange(pool: _Pool, request: bytes, max_body: int) -> _Answer:
    """Send one request and read its answer; retry once on a stale keep-alive connection."""
    async with pool.connection() as conn:
        try:
            conn.writer.write(request)
            return await _read_answer(conn, max_body)
        except (_StaleConnection, ConnectionResetError, BrokenPipeError):
            if not conn.reused:
                raise
            conn.writer.close()
        fresh = await pool.fresh()  # it takes the stale one's place in the pool
        conn.reader, conn.writer, conn.reused = fresh.reader, fresh.writer, False
        conn.writer.write(request)
        return await _read_answer(conn, max_body)


def _pool_key(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, target


# --------------------------------------------------------------------------- client variants


class StreamGuardrailClient(GuardrailClient):
    """``GuardrailClient`` with ``post`` on asyncio streams: no httpx on the hot path.

    Same contract as the package's client: ``check`` is inherited unchanged; ``post``
    never raises, bounds the whole exchange by ``settings.timeout``, enforces
    ``max_response_bytes``, keeps connections alive (at most ``max_connections`` in
    use, ``max_idle`` kept, ``keepalive_expiry`` seconds), verifies TLS with the
    package's context and retries once when a kept-alive connection turns out closed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_connections: int = 100,
        max_idle: int = 100,
        keepalive_expiry: float = 30.0,
    ) -> None:
        super().__init__(settings)
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._prefix: dict[str, tuple[_Pool, bytes]] = {}
        self._extra = "".join(f"{k}: {v}\r\n" for k, v in self._headers.items())

    def _route(self, url: str) -> tuple[_Pool, bytes]:
        loop = asyncio.get_running_loop()
        if self._pool_loop is not loop:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
            self._prefix.clear()
            self._pool_loop = loop
        cached = self._prefix.get(url)
        if cached is not None:
            return cached
        scheme, host, port, target = _pool_key(url)
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        existing = self._pools.get((host, port))
        if existing is not None:
            pool = existing
        else:
            verify = tls_context(self.settings) if scheme == "https" else False
            context = verify if isinstance(verify, ssl.SSLContext) else None
            if scheme == "https" and context is None:
                context = ssl.create_default_context()
            pool = _Pool(
                host,
                port,
                context,
                max_connections=self._max_connections,
                max_idle=self._max_idle,
                keepalive_expiry=self._expiry,
            )
            self._pools[(host, port)] = pool
        default_port = 443 if scheme == "https" else 80
        authority = host if port == default_port else f"{host}:{port}"
        prefix = (f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n{self._extra}").encode("latin-1")
        self._prefix[url] = (pool, prefix)
        return pool, prefix

    async def post(self, url: str, body: bytes) -> PostResult:
        start = time.perf_counter()
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(self.settings.timeout):
                    answer = await self._send(url, body)
            else:
                answer = await asyncio.wait_for(self._send(url, body), self.settings.timeout)
        except Exception as exc:
            kind = _stream_error_kind(exc)
            _log.warning("POST %s failed: %s", url.split("?", 1)[0], kind)
            return PostResult(status=None, error=kind, latency_s=time.perf_counter() - start)
        status = answer.status
        retry_after: float | None = None
        value = answer.header(b"retry-after")
        if value is not None:
            with contextlib.suppress(ValueError):
                retry_after = max(0.0, float(value))
        return PostResult(
            status=status,
            body=answer.body,
            error=None if 200 <= status < 300 else _status_kind(status),
            retry_after=retry_after,
            latency_s=time.perf_counter() - start,
        )

    async def _send(self, url: str, body: bytes) -> _Answer:
        pool, prefix = self._route(url)
        request = prefix + b"Content-Length: %d\r\n\r\n" % len(body) + body
        return await _exchange(pool, request, self.settings.max_response_bytes)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._prefix.clear()
        await super().aclose()


def _status_kind(status: int) -> str:
    if status in (401, 403, 413, 422, 429):
        return f"http_{status}"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"


def _stream_error_kind(exc: BaseException) -> str:
    if isinstance(exc, _TooLarge):
        return "response_too_large"
    if isinstance(exc, (asyncio.IncompleteReadError, _StaleConnection)):
        return "connection_error"
    if isinstance(exc, (asyncio.LimitOverrunError, ValueError)) and not isinstance(
        exc, UnicodeError
    ):
        return "invalid_response"
    return error_kind(exc)


class AiohttpGuardrailClient(GuardrailClient):
    """``GuardrailClient`` with ``post`` on an ``aiohttp.ClientSession`` (one per loop)."""

    def __init__(self, settings: Settings, *, limit: int = 100) -> None:
        super().__init__(settings)
        self._limit = limit
        self._session: Any = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _aiohttp(self) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop:
            verify = tls_context(self.settings)
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                ssl=verify if isinstance(verify, ssl.SSLContext) else False,
                keepalive_timeout=30.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                auto_decompress=False,
            )
            self._session_loop = loop
        return self._session

    async def post(self, url: str, body: bytes) -> PostResult:
        start = time.perf_counter()
        limit = self.settings.max_response_bytes
        try:
            session = self._aiohttp()
            async with session.post(url, data=body, headers=self._headers) as response:
                declared = response.content_length
                if declared is not None and declared > limit:
                    raise _TooLarge
                data = await response.content.read(limit + 1)
                if len(data) > limit:
                    raise _TooLarge
                status = int(response.status)
        except Exception as exc:
            kind = _stream_error_kind(exc) if not _is_aiohttp_error(exc) else _aiohttp_kind(exc)
            _log.warning("POST %s failed: %s", url.split("?", 1)[0], kind)
            return PostResult(status=None, error=kind, latency_s=time.perf_counter() - start)
        return PostResult(
            status=status,
            body=data,
            error=None if 200 <= status < 300 else _status_kind(status),
            latency_s=time.perf_counter() - start,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._session_loop is asyncio.get_running_loop():
            await session.close()
        await super().aclose()


def _is_aiohttp_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith("aiohttp")


def _aiohttp_kind(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return error_kind(exc.os_error)
    return "connection_error"


# --------------------------------------------------------------------------- httpx transports


class RawStreamTransport(httpx.AsyncBaseTransport):
    """An httpx transport on the same asyncio-stream wire code (HTTP/1.1 only)."""

    def __init__(self, *, max_connections: int = 100, max_idle: int = 100) -> None:
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._pools: dict[tuple[str, int], _Pool] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.host, url.port or (443 if url.scheme == "https" else 80))
        pool = self._pools.get(key)
        if pool is None:
            context = ssl.create_default_context() if url.scheme == "https" else None
            pool = _Pool(
                key[0],
                key[1],
                context,
                max_connections=self._max_connections,
                max_idle=self._max_idle,
                keepalive_expiry=30.0,
            )
            self._pools[key] = pool
        body = await request.aread()
        head = [request.method.encode() + b" " + url.raw_path + b" HTTP/1.1"]
        head += [k + b": " + v for k, v in request.headers.raw]
        wire = b"\r\n".join(head) + b"\r\n\r\n" + body
        answer = await _exchange(pool, wire, 64 * 1024 * 1024)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(answer.body),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def aiohttp_transport(limit: int = 100) -> httpx.AsyncBaseTransport:
    """httpx over aiohttp (``httpx-aiohttp``); build it on the loop that will use it."""
    from httpx_aiohttp import AiohttpTransport

    transport: httpx.AsyncBaseTransport = AiohttpTransport(
        verify=False, trust_env=False, limits=httpx.Limits(max_connections=limit)
    )
    return transport


def http2_transport(limits: httpx.Limits | None = None) -> httpx.AsyncBaseTransport:
    """httpx's HTTP/2 transport, prior knowledge (works on a cleartext h2c port)."""
    return httpx.AsyncHTTPTransport(
        http1=False,
        http2=True,
        verify=False,
        trust_env=False,
        limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=32),
    )
