"""Outsider attacks on ``akto-otel serve``: what a request the CLI did not send can do.

A local user or a web page reaching 127.0.0.1 without the shared secret, and bodies
the CLI may send for a model's own tool input (nested deep), against the real
server and the emulator.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

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

SECRET = "outsider-test-secret"
AUTH = {SECRET_HEADER: SECRET}
RULES = (rule("rm-rf", "PreToolUse", r"rm -rf"),)


def _pre(command: str, event: str = "PreToolUse") -> dict[str, Any]:
    return {
        "session_id": "s1",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/tmp",
        "hook_event_name": event,
        "tool_name": "Bash",
        "tool_input": {"command": command},
        "tool_use_id": "toolu_1",
    }


async def _post(
    url: str, raw: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=raw, headers=headers) as response,
    ):
        return response.status, await response.text(), dict(response.headers)


def _unjudged(capture: SpanCapture) -> dict[tuple[Any, Any], Any]:
    return {
        (p.attributes.get("hook"), p.attributes.get("fault")): p.value
        for p in capture.metric_points("akto.guardrail.unjudged")
        if p.value
    }


async def test_a_tool_input_nested_too_deep_to_parse_is_refused_and_told_in_fail_open(
    capture: SpanCapture,
) -> None:
    """An MCP tool's arguments are the model's JSON: nested 5000 deep, the CLI sends
    them but Python's parser gives up (RecursionError). That was an uncounted 500, a
    call the CLI ran unjudged in fail-open mode without anyone told; it is a 400
    refusal, counted as unjudged like any refused judging request."""
    nest = 5000
    raw = (
        b'{"session_id":"s1","hook_event_name":"PreToolUse","tool_name":"mcp__x__y",'
        b'"tool_use_id":"t","tool_input":{"command":"rm -rf /","pad":'
        + b"[" * nest
        + b"]" * nest
        + b"}}"
    )
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="open"), SECRET)
        await srv.start("127.0.0.1", 0)
        try:
            status, _, _ = await _post(f"{srv.url}/hook/PreToolUse", raw, AUTH)
        finally:
            await srv.close()
    assert 400 <= status < 500, status
    assert _unjudged(capture) == {("PreToolUse", "bad_request"): 1}


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain", "Origin": "http://evil.example"},
        {"Content-Type": "text/plain", "Host": "evil.example:18091"},
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"},
    ],
    ids=["cross-origin-simple-post", "dns-rebinding-host", "form-post"],
)
async def test_a_web_page_cannot_drive_or_read_the_server(
    headers: dict[str, str], capture: SpanCapture
) -> None:
    """A browser's simple request (no custom header, so no secret) is refused and
    never judged; the preflight a page needs to add the secret header grants nothing."""
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        try:
            status, body, _ = await _post(
                f"{srv.url}/hook/PreToolUse", json.dumps(_pre("ls")).encode(), headers
            )
            health, _, _ = await _post(f"{srv.url}/health", b"", headers, method="GET")
            pre, _, allowed = await _post(
                f"{srv.url}/hook/PreToolUse",
                b"",
                {
                    "Origin": "http://evil.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": SECRET_HEADER,
                },
                method="OPTIONS",
            )
        finally:
            await srv.close()
        records = akto.records
    assert (status, health) == (401, 401)
    assert "permissionDecision" not in body
    assert pre >= 400
    assert not any(h.lower().startswith("access-control-allow") for h in allowed)
    assert records == []


@pytest.mark.parametrize(
    ("path", "named"),
    [("Notification", "PreToolUse"), ("PreToolUse", "Notification"), ("PreToolUse", 7)],
)
async def test_the_body_cannot_name_another_event_than_the_path(
    path: str, named: Any, capture: SpanCapture
) -> None:
    """A PreToolUse body sent to an observed event's URL (answered ``{}``) or the
    other way round is refused, never judged as the other event."""
    body = _pre("rm -rf /")
    body["hook_event_name"] = named
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        try:
            status, answer, _ = await _post(
                f"{srv.url}/hook/{path}", json.dumps(body).encode(), AUTH
            )
        finally:
            await srv.close()
    assert status == 400, answer


async def test_a_skill_shell_command_is_judged_as_a_tool_call(capture: SpanCapture) -> None:
    """PreSkillShellCommand (a skill's ``!`command```, which never reaches PreToolUse)
    is judged as a Bash PreToolUse and denied in the answer shape the CLI reads."""
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        try:
            status, answer, _ = await _post(
                f"{srv.url}/hook/PreSkillShellCommand",
                json.dumps(_pre("rm -rf /", event="PreSkillShellCommand")).encode(),
                AUTH,
            )
        finally:
            await srv.close()
        hooks = [r.hook for r in akto.records]
    assert status == 200
    assert json.loads(answer)["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert "PreToolUse" in hooks


_SERVER = """
import asyncio, logging, resource, sys
logging.disable(logging.CRITICAL)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from akto_otel.hooks import AktoGuardrails
from akto_otel.serve import HookServer
async def main():
    srv = HookServer(AktoGuardrails(fail_mode="open"), sys.argv[1])
    print(await srv.start("127.0.0.1", 0), flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_another_local_user_cannot_starve_the_server_without_the_secret() -> None:
    """The server under a 256-descriptor limit (the default soft limit is 1024: the
    same attack, four times the connections); 300 connections that send half a
    request line and wait; then the CLI's request, with the secret, must be answered."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    env = {k: v for k, v in env.items() if not k.startswith(("AKTO_", "OTEL_"))}
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    held: list[socket.socket] = []
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        port = int(url.rsplit(":", 1)[1])

        def hook() -> int:
            request = urllib.request.Request(
                f"{url}/hook/Notification",
                data=b'{"session_id": "s1"}',
                headers={**AUTH, "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=3) as response:
                    return int(response.status)
            except OSError:
                return 0

        assert hook() == 200
        for _ in range(300):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
                sock.sendall(b"POST /hook/PreToolUse HTTP/1.1\r\nHost: x\r\n")
                held.append(sock)
            except OSError:
                pass
        time.sleep(1)
        answered = hook()
    finally:
        for sock in held:
            sock.close()
        server.kill()
        server.wait()
    assert answered == 200, "the CLI's hook request went unanswered"


async def _raw_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
) -> int:
    """One keep-alive request on an open connection; the answer's status."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{SECRET_HEADER}: {SECRET}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in answer.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await asyncio.wait_for(reader.readexactly(length), 10)
    return int(answer.split(b" ", 2)[1])


async def _half_open(port: int, count: int) -> list[tuple[asyncio.StreamReader, Any]]:
    """``count`` connections that send half a request line and wait (slowloris)."""
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /hook/PreToolUse HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        held.append((reader, writer))
    return held


async def test_a_connection_that_never_finishes_its_request_is_closed_and_counted(
    capture: SpanCapture,
) -> None:
    """Without the secret, a connection gets 5 seconds (the default header timeout)
    to deliver a request, then is closed and counted (aiohttp alone waits forever);
    the CLI's kept-alive connection, which delivered one with the secret, stays open
    past that deadline."""
    notification = json.dumps({"session_id": "s1", "hook_event_name": "Notification"}).encode()
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        port = int(srv.url.rsplit(":", 1)[1])
        cli_reader, cli_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            first = await _raw_request(cli_reader, cli_writer, "/hook/Notification", notification)
            ((slow, slow_writer),) = await _half_open(port, 1)
            closed = await asyncio.wait_for(slow.read(), 30)  # b"": the server closed it
            slow_writer.close()
            second = await _raw_request(cli_reader, cli_writer, "/hook/Notification", notification)
        finally:
            cli_writer.close()
            await srv.close()
    assert (first, closed, second) == (200, b"", 200)
    assert dropped_connections(capture) == {"header_timeout": 1}


async def test_a_flood_of_connections_never_evicts_a_request_in_progress(
    capture: SpanCapture,
) -> None:
    """At the connection bound, new connections evict the oldest that never sent the
    secret: a request being judged (on a slow Akto) still gets its deny, and a new
    request is answered, while twenty slowloris connections arrive."""
    with EmulatorServer(Policy(RULES), latency_s=1.0) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET, max_connections=4)
        await srv.start("127.0.0.1", 0)
        port = int(srv.url.rsplit(":", 1)[1])
        held: list[tuple[asyncio.StreamReader, Any]] = []
        try:
            judged = asyncio.ensure_future(
                _post(f"{srv.url}/hook/PreToolUse", json.dumps(_pre("rm -rf /")).encode(), AUTH)
            )
            await asyncio.sleep(0.3)  # being judged, waiting on the slow Akto
            held = await _half_open(port, 20)
            fresh, _, _ = await _post(
                f"{srv.url}/hook/PreToolUse", json.dumps(_pre("ls")).encode(), AUTH
            )
            status, answer, _ = await judged
        finally:
            for _, writer in held:
                writer.close()
            await srv.close()
    assert (status, fresh) == (200, 200)
    assert json.loads(answer)["hookSpecificOutput"]["permissionDecision"] == "deny"
    dropped = dropped_connections(capture)
    assert set(dropped) == {"evicted"} and dropped["evicted"] >= 17, dropped


async def test_another_users_connections_are_refused_when_they_connect(
    capture: SpanCapture,
) -> None:
    """A loopback connection from a socket of another uid (looked up in the kernel's
    socket table) is closed at once, before it can hold anything, and counted; the
    server's own user is still answered. Run for real as uid 65534."""
    python = other_user_python()
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        port = srv.url.rsplit(":", 1)[1]
        try:
            attacker = await asyncio.create_subprocess_exec(
                python, "-I", "-S", "-c", HALF_REQUESTS, port, "20",
                user=OTHER_UID,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(attacker.communicate(), 60)
            mine, _, _ = await _post(
                f"{srv.url}/hook/PreToolUse", json.dumps(_pre("ls")).encode(), AUTH
            )
        finally:
            await srv.close()
    assert int(out) == 20, "another user's connection was held open"
    assert mine == 200
    assert dropped_connections(capture) == {"other_user": 20}


_OTHER_USER_WITH_SECRET = """
import socket, sys
port, secret = int(sys.argv[1]), sys.argv[2]
body = b'{"session_id": "s1", "hook_event_name": "Notification"}'
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
sock.sendall(
    b"POST /hook/Notification HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n"
    + b"X-Akto-Hook-Secret: " + secret.encode() + b"\\r\\n"
    + b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body
)
try:
    answer = sock.recv(64)
except OSError:  # reset: closed with the request unread
    answer = b""
print((answer.split(b" ") + [b"0", b"0"])[1].decode())
"""


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "allow-other-users"])
async def test_only_allow_other_users_lets_another_users_cli_in(
    allowed: bool, capture: SpanCapture
) -> None:
    """Another uid's CLI, even with the secret, is refused by default; a server run
    with ``other_users`` (``serve --allow-other-users``: one server for several
    users' CLIs) answers it."""
    python = other_user_python()
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture), SECRET, other_users=allowed)
        await srv.start("127.0.0.1", 0)
        try:
            attacker = await asyncio.create_subprocess_exec(
                python, "-I", "-S", "-c", _OTHER_USER_WITH_SECRET, srv.url.rsplit(":", 1)[1],
                SECRET, user=OTHER_UID, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(attacker.communicate(), 60)
        finally:
            await srv.close()
    assert out.decode().strip() == ("200" if allowed else "0")
    assert dropped_connections(capture) == ({} if allowed else {"other_user": 1})


def test_a_secret_another_user_planted_or_can_replace_is_refused(tmp_path: Path) -> None:
    """A secret file owned by someone else (its owner knows it and may change it;
    only root could read it anyway), or in a directory others may write (they can
    swap the file between ``serve`` and ``claude-settings``), is not used."""
    import os
    import stat

    from akto_otel.serve import ServeError, load_secret, read_secret

    path = tmp_path / "cfg" / "hook-secret"
    load_secret(path)
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(path, 65534, 65534)
        with pytest.raises(ServeError, match="owned by"):
            read_secret(path)
        os.chown(path, 0, 0)
    path.parent.chmod(0o777)
    with pytest.raises(ServeError, match="writable by other users"):
        read_secret(path)
    path.parent.chmod(0o1777)  # sticky (as /tmp): others still add files beside it
    with pytest.raises(ServeError, match="writable by other users"):
        read_secret(path)
    path.parent.chmod(0o755)
    assert read_secret(path) and stat.S_IMODE(path.parent.stat().st_mode) == 0o755


@pytest.mark.parametrize(
    "raw",
    [
        # The CLI (JSON.parse) and the server (json.loads) both keep a duplicated key's
        # last value: the command judged is the one that runs.
        b'{"session_id":"s1","hook_event_name":"PreToolUse","tool_name":"Bash",'
        b'"tool_input":{"command":"ls","command":"rm -rf /"}}',
        b'{"session_id":"s1","hook_event_name":"PreToolUse","tool_name":"Bash",'
        b'"tool_input":{"command":"ls"},"tool_input":{"command":"rm -rf /"}}',
        json.dumps(_pre("rm -rf / \ud800")).encode(),  # a lone surrogate (escaped)
        json.dumps(_pre("rm -rf /\u0000\u202e")).encode(),  # NUL, right-to-left override
    ],
    ids=["duplicate-command", "duplicate-tool_input", "lone-surrogate", "nul-rlo"],
)
@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_odd_json_is_judged_as_the_cli_reads_it(
    raw: bytes, fail_mode: str, capture: SpanCapture
) -> None:
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode=fail_mode), SECRET)
        await srv.start("127.0.0.1", 0)
        try:
            status, answer, _ = await _post(f"{srv.url}/hook/PreToolUse", raw, AUTH)
        finally:
            await srv.close()
    assert status == 200
    assert json.loads(answer)["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert _unjudged(capture) == {}


@pytest.mark.parametrize("raw", [b"[]", b'"PreToolUse"', b"null", b"7", b"", b"{"])
async def test_a_body_that_is_not_a_json_object_is_refused(
    raw: bytes, capture: SpanCapture
) -> None:
    with EmulatorServer(Policy(RULES)) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        try:
            status, _, _ = await _post(f"{srv.url}/hook/PreToolUse", raw, AUTH)
        finally:
            await srv.close()
    assert status == 400
