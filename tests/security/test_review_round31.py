"""Review round 31: attacks on ``akto-otel serve``'s connection guard and the hook
path's remembered values, run for real (another uid, real sockets, the emulator)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.serve import SECRET_HEADER, HookServer
from tests.conftest import SpanCapture
from tests.security.attack_kit import OTHER_UID, guard, other_user_python, rule

SECRET = "round31-secret"
AUTH = {SECRET_HEADER: SECRET}
RULES = (rule("rm-rf", "PreToolUse", r"rm -rf"),)


def _local_non_loopback() -> str:
    """An address of this host that is not loopback (the one a default route uses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return ""
        address = str(probe.getsockname()[0])
    return "" if address.startswith("127.") else address


def _dropped(capture: SpanCapture) -> dict[str, Any]:
    return {
        str(p.attributes.get("reason")): p.value
        for p in capture.metric_points("akto.serve.connections.dropped")
        if p.value
    }


_FROM_ANOTHER_SOURCE = """
import socket, sys
port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
closed = 0
for _ in range(count):
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))  # this host's own non-loopback address
    sock.connect(("127.0.0.1", port))
    try:
        sock.sendall(b"POST /hook/PreToolUse HTTP/1.1\\r\\nHost: x\\r\\n")
        closed += sock.recv(1) == b""
    except ConnectionError:
        closed += 1
    except OSError:
        pass
    sock.close()
print(closed)
"""


async def test_another_user_cannot_pass_the_uid_check_from_a_non_loopback_source(
    capture: SpanCapture,
) -> None:
    """Another uid binds its socket to this host's own non-loopback address and
    connects to 127.0.0.1: the peer address is then not loopback, and the guard let
    it in unchecked (the uid lookup only ran for loopback peers), so the other-user
    refusal was a matter of the source address the attacker chose. Any peer socket
    the kernel knows on this host is looked up now."""
    source = _local_non_loopback()
    if not source:
        pytest.skip("no non-loopback IPv4 address on this host")
    python = other_user_python()
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        port = srv.url.rsplit(":", 1)[1]
        try:
            attacker = await asyncio.create_subprocess_exec(
                python, "-I", "-S", "-c", _FROM_ANOTHER_SOURCE, port, "5", source,
                user=OTHER_UID,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(attacker.communicate(), 60)
        finally:
            await srv.close()
    assert int(out) == 5, "another user's connection was held open"
    assert _dropped(capture) == {"other_user": 5}
