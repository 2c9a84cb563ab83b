"""``akto-otel serve`` as an HTTP server: the secret, the limits, the routes, the command."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from akto_otel.cli import main
from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.serve import (
    SECRET_HEADER,
    SERVED_EVENTS,
    HookServer,
    ServeError,
    cli_output,
    load_secret,
    read_secret,
)
from tests.conftest import SpanCapture
from tests.security.attack_kit import guard, rule

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-for-tests"
AUTH = {SECRET_HEADER: SECRET}


def _pre_tool_use(command: str, session_id: str = "sess-1") -> dict[str, Any]:
    return {
        "session_id": session_id,
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command},
        "tool_use_id": "toolu_1",
    }


@pytest.fixture
async def server(emulator: EmulatorServer, capture: SpanCapture) -> AsyncIterator[HookServer]:
    srv = HookServer(guard(emulator, capture, fail_mode="closed"), SECRET, max_body=64 * 1024)
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.close()


async def _post(
    srv: HookServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{srv.url}{path}", data=data, headers=headers or {}) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("given", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
async def test_a_request_without_the_secret_is_refused_and_not_judged(
    given: str | None, server: HookServer, emulator: EmulatorServer
) -> None:
    headers = {} if given is None else {SECRET_HEADER: given}
    status, _ = await _post(server, "/hook/PreToolUse", _pre_tool_use("rm -rf /"), headers)
    assert status == 401
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/health", headers=headers) as health,
    ):
        assert health.status == 401
    assert emulator.records == [], "an unauthenticated request reached Akto"
    assert server.sessions == 0


async def test_the_decision_is_the_sdk_callbacks_in_the_clis_json(
    server: HookServer, emulator: EmulatorServer, capture: SpanCapture
) -> None:
    g = guard(emulator, capture, fail_mode="closed")
    callback = g.hooks()["PreToolUse"][0].hooks[0]
    for command in ("rm -rf build", "ls"):
        status, answer = await _post(server, "/hook/PreToolUse", _pre_tool_use(command), AUTH)
        assert status == 200
        through_sdk = await callback(_pre_tool_use(command), "toolu_1", {})
        assert answer == cli_output(through_sdk)
    await g.aclose()


async def test_continue_false_reaches_the_cli_under_its_own_name() -> None:
    assert cli_output({"continue_": False, "stopReason": "x", "async_": True}) == {
        "continue": False,
        "stopReason": "x",
        "async": True,
    }


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/hook/PreToolUse", b"not json", 400),
        ("/hook/PreToolUse", b"[1, 2]", 400),
        ("/hook/Stop", _pre_tool_use("ls"), 400),  # the body names another event
        ("/hook/Pre-Tool", _pre_tool_use("ls"), 404),
        ("/hook/PreToolUse", {"pad": "x" * 70_000}, 413),
    ],
    ids=["not-json", "not-an-object", "event-mismatch", "bad-event", "too-large"],
)
async def test_a_malformed_request_is_refused_so_onfailure_block_applies(
    path: str, body: Any, status: int, server: HookServer
) -> None:
    got, _ = await _post(server, path, body, AUTH)
    assert got == status


async def test_a_traced_event_joins_the_session_and_session_end_closes_its_trace(
    server: HookServer, capture: SpanCapture
) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    start = {"session_id": "s9", "hook_event_name": "SessionStart", "source": "startup"}
    status, answer = await _post(
        server, "/hook/SessionStart", start, {**AUTH, "traceparent": parent}
    )
    assert (status, answer) == (200, {})
    await _post(server, "/hook/PreToolUse", _pre_tool_use("ls", "s9"), AUTH)
    assert server.sessions == 1
    await _post(server, "/hook/SessionEnd", {**start, "hook_event_name": "SessionEnd"}, AUTH)
    assert server.sessions == 0
    (root,) = capture.named("invoke_agent")
    assert format(root.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert root.parent is not None and format(root.parent.span_id, "016x") == "b7ad6b7169203331"
    assert (root.attributes or {}).get("gen_ai.conversation.id") == "s9"
    events = [s for s in capture.named("akto.hook_event")]
    assert {(s.attributes or {}).get("akto.hook") for s in events} == {"SessionStart", "SessionEnd"}
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in events)


async def test_health_answers_with_the_secret(server: HookServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/health", headers=AUTH) as response,
    ):
        health = await response.json()
    assert response.status == 200
    assert health["status"] == "ok" and health["fail_mode"] == "closed"
    assert "PreToolUse" in health["blocking_events"]


def test_the_secret_is_made_once_owner_only_and_refused_when_others_can_read_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cfg" / "hook-secret"
    first = load_secret(path)
    assert len(first) >= 32 and load_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(ServeError, match="chmod 600"):
        read_secret(path)


def test_claude_settings_wire_every_event_and_block_only_the_judging_ones_when_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "secret"
    for mode, blocking in (
        (
            "closed",
            {"UserPromptSubmit", "PreToolUse", "PreSkillShellCommand", "Stop", "SubagentStop"},
        ),
        ("open", set()),
    ):
        monkeypatch.setenv("AKTO_FAIL_MODE", mode)
        assert (
            main(["claude-settings", "--secret-file", str(secret_file), "--url", "http://h:1"]) == 0
        )
        hooks = json.loads(capsys.readouterr().out)["hooks"]
        assert set(hooks) == set(SERVED_EVENTS)
        blocked = set()
        for event, (entry,) in hooks.items():
            (hook,) = entry["hooks"]
            assert hook["url"] == f"http://h:1/hook/{event}"
            assert hook["headers"][SECRET_HEADER] == secret_file.read_text().strip()
            if hook.get("onFailure") == "block":
                blocked.add(event)
        assert blocking <= blocked and blocked <= blocking | {"PostToolUse", "PostToolUseFailure"}


def test_the_serve_command_listens_answers_and_stops_cleanly_on_sigterm(
    tmp_path: Path, emulator: EmulatorServer, sock_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "OTEL_"))}
    env.update(
        AKTO_DATA_INGESTION_URL=emulator.url,
        AKTO_FAIL_MODE="closed",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        PYTHONPATH=str(ROOT),
    )
    secret_file = tmp_path / "s" / "secret"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "akto_otel.cli",
            "serve",
            "--port",
            "0",
            "--secret-file",
            str(secret_file),
            "--socket",
            str(sock_dir / "hook.sock"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_soft_descriptor_limit,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        # Started with a soft limit of 256 (a bound of 128): raised to the hard limit.
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard >= 1024:
            assert f"at most {min(512, hard // 2)} connections" in line, line
        url = line.split("listening on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        import urllib.request

        secret = secret_file.read_text().strip()
        request = urllib.request.Request(
            f"{url}/hook/PreToolUse",
            data=json.dumps(_pre_tool_use("rm -rf build")).encode(),
            headers={SECRET_HEADER: secret, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert answer["hookSpecificOutput"]["permissionDecision"] == "deny"
        assert f"unix:{sock_dir / 'hook.sock'}" in line
        assert stat.S_IMODE((sock_dir / "hook.sock").stat().st_mode) == 0o600
        status, health = _unix_get(sock_dir / "hook.sock", "/health")  # no secret
        assert status == 200 and health["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert not (sock_dir / "hook.sock").exists(), "the socket outlived the server"


def _low_soft_descriptor_limit() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def _unix_get(path: Path, route: str) -> tuple[int, Any]:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(f"GET {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_the_unix_socket_needs_no_secret_and_the_port_still_does(
    server: HookServer, sock_dir: Path
) -> None:
    import asyncio

    await server.start_unix(sock_dir / "hook.sock")
    status, health = await asyncio.to_thread(_unix_get, sock_dir / "hook.sock", "/health")
    assert (status, health["status"]) == (200, "ok")
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/health") as response:
        assert response.status == 401


def test_the_socket_goes_only_in_a_private_directory_and_never_over_a_live_one(
    sock_dir: Path, emulator: EmulatorServer, capture: SpanCapture
) -> None:
    """The socket's directory must be this user's and writable by no one else (as
    the secret's); a stale socket is replaced, one a server answers on is not, nor
    anything that is not a socket."""
    import asyncio
    import socket

    async def start(path: Path) -> str:
        srv = HookServer(guard(emulator, capture), SECRET)
        try:
            await srv.start_unix(path)
            return "ok"
        except ServeError as exc:
            return str(exc)
        finally:
            await srv.close()

    shared = sock_dir / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)
    assert "writable by other users" in asyncio.run(start(shared / "hook.sock"))
    (sock_dir / "file.sock").write_text("")
    assert "not a socket" in asyncio.run(start(sock_dir / "file.sock"))
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock_dir / "stale.sock"))  # bound, never listening: a dead server's
    assert asyncio.run(start(sock_dir / "stale.sock")) == "ok"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(sock_dir / "live.sock"))
        live.listen()
        assert "another akto-otel serve" in asyncio.run(start(sock_dir / "live.sock"))
    made = sock_dir / "new" / "deeper" / "hook.sock"
    assert asyncio.run(start(made)) == "ok"
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    if os.geteuid() == 0:  # only root can give a directory away
        theirs = sock_dir / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        assert "owned by another user" in asyncio.run(start(theirs / "hook.sock"))


def test_claude_settings_for_the_command_transport_need_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from akto_otel.serve import FORWARDER

    monkeypatch.setenv("AKTO_FAIL_MODE", "closed")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert main(["claude-settings", "--transport", "command"]) == 0
    hooks = json.loads(capsys.readouterr().out)["hooks"]
    assert set(hooks) == set(SERVED_EVENTS)
    (hook,) = hooks["PreToolUse"][0]["hooks"]
    assert hook["type"] == "command" and hook["onFailure"] == "block"
    assert str(FORWARDER) in hook["command"]
    assert str(tmp_path / "run" / "akto-otel" / "hook.sock") in hook["command"]
    assert "--block" in hooks["UserPromptSubmit"][0]["hooks"][0]["command"]
    assert "--block" not in hooks["Notification"][0]["hooks"][0]["command"]
    assert not (tmp_path / "home" / ".config").exists(), "a secret was made for no use"


async def test_doctor_checks_the_settings_it_finds_and_the_running_server(
    server: HookServer, tmp_path: Path, emulator: EmulatorServer
) -> None:
    import asyncio
    import io

    from akto_otel.doctor import run_doctor
    from akto_otel.serve import blocking_events, claude_settings

    project = tmp_path / "project"
    (project / ".claude").mkdir(parents=True)
    settings = claude_settings(
        server.url,
        SECRET,
        blocking_events(server.guard.rules),
    )
    del settings["hooks"]["Stop"]
    settings["hooks"]["PreToolUse"][0]["hooks"][0].pop("onFailure")
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    env = {
        "HOME": str(tmp_path / "home"),
        "AKTO_DATA_INGESTION_URL": emulator.url,
        "AKTO_FAIL_MODE": "closed",
    }

    def report(environment: dict[str, str]) -> str:
        out = io.StringIO()
        run_doctor(environment, out, cwd=project)
        return (
            out.getvalue().split("Claude Code hooks (akto-otel serve):", 1)[1].split("\nAkto:")[0]
        )

    # The running server's fail mode counts, not the one doctor's environment says.
    found = await asyncio.to_thread(report, {**env, "AKTO_FAIL_MODE": "open"})
    assert "not sent: Stop" in found
    assert "without onFailure block in fail-closed mode: PreToolUse" in found
    assert "AKTO_FAIL_MODE=closed, 0 sessions" in found
    assert SECRET not in found
    await server.close()
    gone = await asyncio.to_thread(report, env)
    assert "is akto-otel serve running?" in gone


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_a_refused_judging_request_is_told_as_unjudged_in_fail_open(
    fail_mode: str, emulator: EmulatorServer, capture: SpanCapture
) -> None:
    """In fail-open mode the CLI goes on past a refused hook: the call ran unjudged
    and is counted as such; fail-closed relies on the CLI's onFailure block."""
    srv = HookServer(guard(emulator, capture, fail_mode=fail_mode), SECRET, max_body=1024)
    await srv.start("127.0.0.1", 0)
    try:
        status, _ = await _post(srv, "/hook/PreToolUse", _pre_tool_use("x" * 2048), AUTH)
        await _post(srv, "/hook/Notification", {"pad": "x" * 2048}, AUTH)
    finally:
        await srv.close()
    assert status == 413
    points = capture.metric_points("akto.guardrail.unjudged")
    counted = {
        (p.attributes.get("hook"), p.attributes.get("fault")): p.value for p in points if p.value
    }
    if fail_mode == "open":
        assert counted == {("PreToolUse", "request_too_large"): 1}, counted
    else:
        assert counted == {}


async def test_requests_past_the_concurrency_bound_are_refused_not_queued(
    capture: SpanCapture,
) -> None:
    """One judged at a time, four waiting: of eight at once, three are refused (503,
    which onFailure block turns into a block) and the rest are judged."""
    import asyncio

    with EmulatorServer(Policy((rule("rm-rf", "PreToolUse", r"rm -rf"),)), latency_s=0.5) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET, max_concurrency=1)
        await srv.start("127.0.0.1", 0)
        try:
            answers = await asyncio.gather(
                *(_post(srv, "/hook/PreToolUse", _pre_tool_use("rm -rf x"), AUTH) for _ in range(8))
            )
        finally:
            await srv.close()
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 5 + [503] * 3, statuses
    judged = [a for status, a in answers if status == 200]
    assert judged and all(a["hookSpecificOutput"]["permissionDecision"] == "deny" for a in judged)


async def test_a_server_bug_is_a_500_and_an_unjudged_call_in_fail_open(
    emulator: EmulatorServer, capture: SpanCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = HookServer(guard(emulator, capture, fail_mode="open"), SECRET)

    async def broken(*args: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(srv, "_answer", broken)
    await srv.start("127.0.0.1", 0)
    try:
        status, _ = await _post(srv, "/hook/UserPromptSubmit", {"prompt": "hi"}, AUTH)
    finally:
        await srv.close()
    assert status == 500
    counted = {
        (p.attributes.get("hook"), p.attributes.get("fault")): p.value
        for p in capture.metric_points("akto.guardrail.unjudged")
        if p.value
    }
    assert counted == {("UserPromptSubmit", "internal_error"): 1}


async def test_close_lets_a_request_in_flight_finish_with_its_verdict(capture: SpanCapture) -> None:
    import asyncio

    with EmulatorServer(Policy((rule("rm-rf", "PreToolUse", r"rm -rf"),)), latency_s=1.0) as akto:
        srv = HookServer(guard(akto, capture, fail_mode="closed"), SECRET)
        await srv.start("127.0.0.1", 0)
        pending = asyncio.ensure_future(
            _post(srv, "/hook/PreToolUse", _pre_tool_use("rm -rf x"), AUTH)
        )
        await asyncio.sleep(0.3)  # judging, waiting on the slow Akto
        await srv.close()
        status, answer = await pending
    assert status == 200
    assert answer["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert capture.one("execute_tool Bash").end_time is not None


async def test_doctor_checks_the_socket_and_warns_of_a_port_another_user_holds(
    server: HookServer, tmp_path: Path, emulator: EmulatorServer, sock_dir: Path
) -> None:
    """Command hooks: doctor asks the socket's /health (and checks its directory);
    HTTP hooks to a loopback port that a process of another uid listens on (a
    squatter): a warning, run for real as uid 65534."""
    import asyncio
    import io

    from akto_otel.doctor import run_doctor
    from akto_otel.serve import blocking_events, claude_command_settings, claude_settings

    await server.start_unix(sock_dir / "hook.sock")
    project = tmp_path / "project"
    (project / ".claude").mkdir(parents=True)
    blocking = blocking_events(server.guard.rules)
    settings = claude_command_settings(sock_dir / "hook.sock", blocking)
    (project / ".claude" / "settings.json").write_text(json.dumps(settings))
    env = {"HOME": str(tmp_path / "home"), "AKTO_DATA_INGESTION_URL": emulator.url}

    def report() -> str:
        out = io.StringIO()
        run_doctor(env, out, cwd=project)
        return (
            out.getvalue().split("Claude Code hooks (akto-otel serve):", 1)[1].split("\nAkto:")[0]
        )

    found = await asyncio.to_thread(report)
    assert f"unix:{sock_dir / 'hook.sock'} /health: akto-otel serve" in found, found
    assert "not sent" not in found and "without onFailure" not in found, found

    from tests.security.attack_kit import OTHER_UID, other_user_python

    python = other_user_python()
    squatter = subprocess.Popen(
        [
            python, "-I", "-S", "-c",
            "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen();"
            " print(s.getsockname()[1], flush=True); time.sleep(60)",
        ],
        user=OTHER_UID,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert squatter.stdout is not None
        port = int(squatter.stdout.readline())
        squatted = claude_settings(f"http://127.0.0.1:{port}", SECRET, blocking)
        (project / ".claude" / "settings.json").write_text(json.dumps(squatted))
        found = await asyncio.to_thread(report)
    finally:
        squatter.kill()
        squatter.wait()
    assert f"port {port} is held by a process of another user (uid {OTHER_UID})" in found, found
