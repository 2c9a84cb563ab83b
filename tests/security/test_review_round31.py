"""Review round 31: attacks on ``akto-otel serve``'s connection guard and the hook
path's remembered values, run for real (another uid, real sockets, the emulator)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.serve import SECRET_HEADER, HookServer
from tests.conftest import SpanCapture
from tests.security.attack_kit import (
    HALF_REQUESTS,
    OTHER_UID,
    dropped_connections,
    guard,
    other_user_python,
    rule,
)
from tests.standin_http import StandInServer

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
                python, "-I", "-S", "-c", HALF_REQUESTS, port, "5", source,
                user=OTHER_UID,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(attacker.communicate(), 60)
        finally:
            await srv.close()
    assert int(out) == 5, "another user's connection was held open"
    assert dropped_connections(capture) == {"other_user": 5}


class _DeepAnswer(StandInServer):
    """An Akto (or anything on its address) answering every call with JSON nested
    deeper than the decoder's recursion limit."""

    def __init__(self, depth: int) -> None:
        self.body = b"[" * depth + b"]" * depth
        super().__init__()

    def answer(self, path: str, body: bytes) -> bytes | None:
        return self.body if "http-proxy" in path else b'{"success": true}'


def _pre(command: str) -> dict[str, Any]:
    return {
        "session_id": "s1",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command},
        "tool_use_id": "toolu_1",
    }


@pytest.mark.parametrize("depth", [1000, 5000], ids=["remembered-size", "larger"])
async def test_an_answer_nested_too_deep_is_a_fault_not_a_crash(
    depth: int, capture: SpanCapture
) -> None:
    """Akto's answer (or whatever answers on its address) is JSON nested too deep to
    decode: the verdict is the fail mode's (a deny, failing closed) and the check
    never raises (RecursionError is not a ValueError)."""
    with _DeepAnswer(depth) as akto:
        aktog = AktoGuardrails(
            tracer_provider=capture.provider,
            meter_provider=capture.meter_provider,
            ingestion_url=akto.url,
            fail_mode="closed",
            timeout=10.0,
            export_retry_timeout=1.0,
            export_shutdown_timeout=1.0,
        )
        srv = HookServer(aktog, SECRET)
        await srv.start("127.0.0.1", 0)
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{srv.url}/hook/PreToolUse",
                    data=json.dumps(_pre("ls")).encode(),
                    headers=AUTH,
                ) as response,
            ):
                status, answer = response.status, await response.text()
        finally:
            await srv.close()
    assert status == 200, answer
    assert json.loads(answer)["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_an_answer_cut_short_is_a_failure_not_a_hook_output(sock_dir: Path) -> None:
    """The server dies mid-answer (killed, out of memory): 200 and a Content-Length,
    then the connection closes with part of the body sent, which can end in ``}``
    (a nested object's end). The forwarder printed it with exit 0; the CLI reads
    stdout that is not JSON as plain text, no decision, and the tool runs unjudged.
    Failing closed, it must block (exit 2)."""
    import subprocess
    import threading

    from akto_otel.serve import FORWARDER

    full = b'{"hookSpecificOutput": {"hookEventName": "PreToolUse"}, "decision": "block"}'
    cut = full[: full.index(b"}") + 1]  # ends in "}", not a whole JSON object
    path = sock_dir / "h.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(full)}\r\n\r\n".encode()
            conn.sendall(head + cut)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(FORWARDER), "--socket", str(path),
             "--event", "PreToolUse", "--timeout", "10", "--block"],
            input=json.dumps(_pre("rm -rf /")).encode(),
            capture_output=True,
            timeout=30,
        )  # fmt: skip
    finally:
        thread.join(10)
        listener.close()
    assert (done.returncode, done.stdout) == (2, b"")
