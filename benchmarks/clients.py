"""The clients the package is compared with (all keep their per-call work honest).

* :class:`FloorClient`: minimal keep-alive HTTP/1.1 POSTs on asyncio streams, the
  floor no HTTP client gets under.
* :class:`StdlibClient`: a plain stdlib reference, ``urllib`` with one opener built
  once, run in a thread (``asyncio.to_thread``); urllib closes the connection after
  every call.
* :class:`AiohttpClient`: a bare ``aiohttp.ClientSession.post`` (what the package's
  client adds on top of aiohttp is the difference to it).
"""

from __future__ import annotations

import asyncio
import urllib.request
from urllib.parse import urlsplit

import aiohttp

__all__ = ["AiohttpClient", "FloorClient", "StdlibClient"]


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


class StdlibClient:
    """``urllib`` with a cached opener in a worker thread: the plain stdlib way."""

    def __init__(self, url: str, body: bytes, timeout: float = 5.0) -> None:
        self._opener = urllib.request.build_opener()
        self._url = url
        self._body = body
        self._timeout = timeout

    def _post(self) -> bytes:
        request = urllib.request.Request(
            self._url, data=self._body, headers={"Content-Type": "application/json"}
        )
        with self._opener.open(request, timeout=self._timeout) as response:
            answer: bytes = response.read()
        return answer

    async def post(self) -> bytes:
        return await asyncio.to_thread(self._post)

    async def aclose(self) -> None:
        self._opener.close()


class AiohttpClient:
    """One ``aiohttp.ClientSession`` (keep-alive), ``post`` and ``read``: nothing else."""

    def __init__(self, url: str, body: bytes) -> None:
        self._url = url
        self._body = body
        self._session: aiohttp.ClientSession | None = None

    async def post(self) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Content-Type": "application/json"})
        async with self._session.post(self._url, data=self._body) as response:
            return await response.read()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
