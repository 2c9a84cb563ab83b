"""Connection bookkeeping in front of ``akto-otel serve``'s aiohttp server.

aiohttp reads a request's headers with no deadline: a connection that sends half a
request line and waits holds a file descriptor for as long as it likes, and enough
of them (no secret needed) leave none for the CLI. :class:`ConnectionGuard` wraps
the aiohttp protocol factory (``AppRunner.server``) in a plain
:class:`asyncio.Protocol` that

- refuses, at once, a peer whose socket on this host belongs to another user (Linux:
  :func:`akto_otel.peers.tcp_peer_uid`; unless ``other_users``), and on the Unix
  socket any peer whose ``SO_PEERCRED`` uid is not the server's;
- closes a connection that has not delivered an authenticated request within
  ``header_timeout`` seconds of being accepted;
- keeps at most ``max_connections`` open: at the bound, a new connection evicts the
  oldest one that never delivered an authenticated request (then the oldest idle
  keep-alive one); one with a request in progress is never evicted, and when all
  are, the new one is closed.

Each drop is counted by ``on_drop(reason)`` (:data:`DROP_REASONS`).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from akto_otel import peers

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DROP_REASONS",
    "ConnectionGuard",
    "connection_bound",
]

#: Seconds a new connection has to deliver a request with the secret.
DEFAULT_HEADER_TIMEOUT = 5.0
#: Open connections at most (further bounded by half the descriptor limit).
DEFAULT_MAX_CONNECTIONS = 512
#: Why a connection was closed by the guard: ``header_timeout`` (no authenticated
#: request in time), ``evicted`` (the oldest unauthenticated one, for a new one at
#: the bound), ``full`` (the bound reached with every connection busy),
#: ``other_user`` (a peer socket owned by another uid).
DROP_REASONS = ("header_timeout", "evicted", "full", "other_user")


def connection_bound(limit: int = DEFAULT_MAX_CONNECTIONS) -> int:
    """``limit``, or half the soft descriptor limit when that is lower (the other
    half for the process: Akto, the exporters, files): accept never runs out."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return limit
    if soft == resource.RLIM_INFINITY:
        return limit
    return min(limit, max(8, soft // 2))


class _Conn:
    __slots__ = ("busy", "inner", "timer", "transport", "unix")

    def __init__(self, transport: asyncio.BaseTransport, unix: bool) -> None:
        self.transport = transport
        self.inner: asyncio.Protocol | None = None
        self.unix = unix
        self.busy = 0
        self.timer: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """Connections of one server: admit, trust, evict, expire (see the module)."""

    def __init__(
        self,
        factory: Callable[[], Any],
        on_drop: Callable[[str], None],
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        other_users: bool = False,
    ) -> None:
        self._factory = factory
        self._other_users = other_users
        self._on_drop = on_drop
        self.max_connections = max_connections
        self._header_timeout = header_timeout
        #: Never delivered an authenticated request, oldest first.
        self._untrusted: OrderedDict[asyncio.BaseTransport, _Conn] = OrderedDict()
        #: Delivered one and idle now (keep-alive), least recently used first.
        self._idle: OrderedDict[asyncio.BaseTransport, _Conn] = OrderedDict()
        self._busy: dict[asyncio.BaseTransport, _Conn] = {}
        self._uid = os.geteuid() if hasattr(os, "geteuid") else None

    @property
    def open(self) -> int:
        return len(self._untrusted) + len(self._idle) + len(self._busy)

    def protocol(self, *, unix: bool) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server``: TCP, or the Unix socket
        (whose peers are proven by ``SO_PEERCRED`` and need no secret)."""
        return lambda: _Guarded(self, unix)

    def is_unix(self, transport: Any) -> bool:
        """Whether ``transport`` is a Unix-socket connection (of this user: others
        are refused when they connect)."""
        conn = self._find(transport)
        return conn is not None and conn.unix

    # -------------------------------------------------------------- the middleware

    def begin(self, transport: Any) -> None:
        """An authenticated request started on ``transport``: it is never evicted
        while the request lasts, nor expired after."""
        conn = self._find(transport)
        if conn is None:
            return
        self._untrusted.pop(conn.transport, None)
        self._idle.pop(conn.transport, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.busy += 1
        self._busy[conn.transport] = conn

    def end(self, transport: Any) -> None:
        conn = self._busy.get(transport)
        if conn is None:
            return
        conn.busy -= 1
        if conn.busy <= 0:
            conn.busy = 0
            del self._busy[transport]
            self._idle[transport] = conn

    # -------------------------------------------------------------- the protocol

    def _find(self, transport: Any) -> _Conn | None:
        return (
            self._busy.get(transport) or self._idle.get(transport) or self._untrusted.get(transport)
        )

    def _admit(self, transport: asyncio.BaseTransport, unix: bool) -> _Conn | None:
        check = unix or not self._other_users
        if (
            check
            and self._uid is not None
            and self._peer_uid(transport, unix)
            not in (
                None,
                self._uid,
            )
        ):
            self._drop_new(transport, "other_user")
            return None
        while self.open >= self.max_connections:
            victims = self._untrusted or self._idle
            if not victims:
                self._drop_new(transport, "full")
                return None
            _, victim = next(iter(victims.items()))
            self._close(victim, "evicted")
        conn = _Conn(transport, unix)
        if unix:
            self._idle[transport] = conn
        else:
            self._untrusted[transport] = conn
            loop = asyncio.get_running_loop()
            conn.timer = loop.call_later(self._header_timeout, self._expire, conn)
        return conn

    def _peer_uid(self, transport: asyncio.BaseTransport, unix: bool) -> int | None:
        try:
            return self._lookup_peer_uid(transport, unix)
        except Exception:  # never let a lookup's own bug leave a connection half made
            return -1 if unix else None

    def _lookup_peer_uid(self, transport: asyncio.BaseTransport, unix: bool) -> int | None:
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        if unix:
            # A peer the kernel cannot name is refused on the secret-less socket.
            uid = peers.unix_peer_uid(sock)
            return -1 if uid is None else uid
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if not peer or not local:
            return None
        # Looked up whatever the peer's address: a local process may bind its socket
        # to one of this host's other addresses and still reach 127.0.0.1. A peer on
        # another host has no socket here, and the lookup answers None.
        return peers.tcp_peer_uid((str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])))

    def _expire(self, conn: _Conn) -> None:
        conn.timer = None
        if conn.transport in self._untrusted:
            self._close(conn, "header_timeout")

    def _drop_new(self, transport: asyncio.BaseTransport, reason: str) -> None:
        transport.abort()  # type: ignore[attr-defined]
        self._on_drop(reason)

    def _close(self, conn: _Conn, reason: str) -> None:
        self._forget(conn)
        conn.transport.abort()  # type: ignore[attr-defined]
        self._on_drop(reason)

    def _forget(self, conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._untrusted.pop(conn.transport, None)
        self._idle.pop(conn.transport, None)
        self._busy.pop(conn.transport, None)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's bookkeeping."""

    def __init__(self, guard: ConnectionGuard, unix: bool) -> None:
        self._guard = guard
        self._unix = unix
        self._conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._guard._admit(transport, self._unix)
        if self._conn is None:
            return
        inner: asyncio.Protocol = self._guard._factory()
        self._conn.inner = inner
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._conn is not None and self._conn.inner is not None:
            self._conn.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._conn is not None and self._conn.inner is not None:
            return self._conn.inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._conn is not None and self._conn.inner is not None:
            self._conn.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._conn is not None and self._conn.inner is not None:
            self._conn.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._guard._forget(conn)
        if conn.inner is not None:
            conn.inner.connection_lost(exc)
