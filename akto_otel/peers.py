"""Who is on the other end of ``akto-otel serve``'s sockets (Linux), and private directories.

A loopback TCP connection names no user; the kernel knows which uid owns the
client's socket. :func:`tcp_peer_uid` asks it (``NETLINK_SOCK_DIAG``: one exact
lookup, whatever the number of sockets on the machine), :func:`tcp_listener_uids`
reads ``/proc/net/tcp{,6}`` for who holds a listening port (``akto-otel doctor``),
and :func:`unix_peer_uid` reads ``SO_PEERCRED`` on a Unix socket.
:func:`private_directory` is the check a directory must pass to hold the hook
socket: a directory, not a link, owned by this user, writable by no one else.

Every lookup answers ``None`` where it cannot tell (another OS, no netlink, the
socket already gone): callers decide what an unknown peer may do.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import struct
from pathlib import Path

__all__ = [
    "is_loopback",
    "private_directory",
    "tcp_listener_uids",
    "tcp_peer_uid",
    "unix_peer_uid",
]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF
_LISTEN = "0A"
_HEADER = struct.Struct("=IHHII")
_UCRED = struct.Struct("=iII")


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def _packed(host: str) -> tuple[int, bytes]:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.version == 4:
        return socket.AF_INET, address.packed + bytes(12)
    return socket.AF_INET6, address.packed


def tcp_peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The uid owning the TCP socket at ``peer`` connected to ``local`` (both on this
    host), or None when the kernel cannot be asked or does not know it."""
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        family, source = _packed(peer[0])
        _, destination = _packed(local[0])
    except ValueError:
        return None
    # inet_diag_req_v2 + inet_diag_sockid: the peer's socket is the one whose own
    # address is ``peer`` and whose remote address is ``local``.
    sockid = (
        struct.pack("!HH", peer[1], local[1])
        + source
        + destination
        + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    )
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    message = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as link:
            link.settimeout(1.0)
            link.send(message + request)
            answer = link.recv(65536)
    except OSError:
        return None
    if len(answer) < _HEADER.size:
        return None
    _, kind, _, _, _ = _HEADER.unpack_from(answer)
    if kind != _SOCK_DIAG_BY_FAMILY:
        return None  # NLMSG_ERROR: no such socket (gone already) or no diag module
    # inet_diag_msg: family, state, timer, retrans (4), sockid (48), expires, rqueue,
    # wqueue (12), then uid.
    offset = _HEADER.size + 4 + 48 + 12
    if len(answer) < offset + 4:
        return None
    return int(struct.unpack_from("=I", answer, offset)[0])


def tcp_listener_uids(port: int, proc: Path = Path("/proc/net")) -> set[int]:
    """The uids of the sockets listening on TCP ``port`` (any address), from
    ``/proc/net/tcp`` and ``tcp6``; empty where there is no such file."""
    owners: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != _LISTEN:
                continue
            try:
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    owners.add(int(fields[7]))
            except (IndexError, ValueError):
                continue
    return owners


def unix_peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))
    except OSError:
        return None
    return int(uid)


def private_directory(path: Path) -> str:
    """Why ``path`` may not hold the hook socket (empty when it may): it must be a
    directory (not a symbolic link) owned by this user that no one else can write."""
    try:
        info = path.lstat()
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path}: not a directory"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"{path}: owned by another user (uid {info.st_uid}); delete it"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path}: writable by other users; run: chmod 700 {path}"
    return ""
