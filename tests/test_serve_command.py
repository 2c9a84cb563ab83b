"""``akto-otel serve`` through its Unix socket and the CLI's command hooks.

``akto-otel claude-settings --transport command`` prints ``"type": "command"`` hooks
that run ``akto_otel/hook_forward.py`` (stdlib only) to post each event to the
server's Unix socket. Each test here runs the real ``claude`` bundled with
claude-agent-sdk in print mode with those settings, against the scripted model and
the emulator, as tests/test_serve_cli.py does for the HTTP hooks.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.serve import (
    FORWARDER,
    SERVED_EVENTS,
    HookServer,
    blocking_events,
    claude_command_settings,
)
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse
from tests.conftest import SpanCapture
from tests.security.attack_kit import guard
from tests.test_serve_cli import RM_RF, SECRET, _rm_rf, _session_id, run_cli

pytestmark = pytest.mark.timeout(240)


@asynccontextmanager
async def served_unix(
    akto: EmulatorServer, capture: SpanCapture, folder: Path, **kw: Any
) -> AsyncIterator[HookServer]:
    server = HookServer(guard(akto, capture, **kw), SECRET)
    await server.start_unix(folder / "hook.sock")
    try:
        yield server
    finally:
        await server.close()


def command_settings(
    server: HookServer, *, path: Path | None = None, timeout: int = 30
) -> dict[str, Any]:
    assert server.socket_path is not None
    return claude_command_settings(
        path or server.socket_path, blocking_events(server.guard.rules), timeout=timeout
    )


async def test_a_denied_rm_rf_does_not_run_and_an_allowed_command_does(
    capture: SpanCapture, home: Path, workdir: Path, sock_dir: Path
) -> None:
    target = workdir / "target"
    target.mkdir()
    steps = [
        ToolUse("Bash", {"command": f"touch {workdir}/ran"}),
        ToolUse("Bash", {"command": f"rm -rf {target}"}),
    ]
    with (
        EmulatorServer(Policy((RM_RF,))) as akto,
        FakeAnthropic(Scenario(None, [*steps, Text("done")])) as fake,
    ):
        async with served_unix(akto, capture, sock_dir, fail_mode="closed") as server:
            messages = await run_cli("tidy", command_settings(server), fake, home, workdir)
        judged = [r for r in akto.records if r.hook == "PreToolUse"]
    assert (workdir / "ran").exists(), "an allowed command was kept from running"
    assert target.exists(), "the denied rm -rf ran"
    assert len(judged) >= 2
    (root,) = [s for s in capture.named("invoke_agent") if s.parent is None]
    assert (root.attributes or {})["gen_ai.conversation.id"] == _session_id(messages)
    hooks = {(s.attributes or {}).get("akto.hook") for s in capture.spans}
    assert {"UserPromptSubmit", "PreToolUse", "Stop", "SessionEnd"} <= hooks


async def _stub(folder: Path, answer: bytes | None) -> asyncio.AbstractServer:
    """A Unix-socket server at ``folder/hook.sock`` that answers ``answer`` to every
    request, or never answers (None)."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
            await writer.drain()
            writer.close()

    path = folder / "hook.sock"
    old = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(handle, str(path))
    finally:
        os.umask(old)


@pytest.mark.parametrize("fault", ["down", "hung", "error", "not-json"])
async def test_fail_closed_blocks_the_judging_events_when_the_server_cannot_answer(
    fault: str, capture: SpanCapture, home: Path, workdir: Path, sock_dir: Path
) -> None:
    """The forwarder exits 2 when the socket is missing, the server hangs past its
    timeout, or answers an error or something that is not a hook output: the CLI
    blocks the prompt, the model is never asked, nothing runs."""
    target, scenario = _rm_rf(workdir)
    stub = None
    if fault == "hung":
        stub = await _stub(sock_dir, None)
    elif fault == "error":
        stub = await _stub(
            sock_dir, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}"
        )
    elif fault == "not-json":
        stub = await _stub(sock_dir, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    with EmulatorServer(Policy((RM_RF,))) as akto, FakeAnthropic(scenario) as fake:
        g = guard(akto, capture, fail_mode="closed")
        settings = claude_command_settings(
            sock_dir / "hook.sock", blocking_events(g.rules), timeout=2
        )
        await g.aclose()
        try:
            await run_cli("clean up", settings, fake, home, workdir)
        finally:
            if stub is not None:
                stub.close()
    assert fake.conversation_requests == [], "the prompt went through an unanswered guard"
    assert target.exists()


async def test_fail_closed_blocks_a_tool_call_when_only_its_hook_is_down(
    capture: SpanCapture, home: Path, workdir: Path, sock_dir: Path
) -> None:
    target, scenario = _rm_rf(workdir)
    with EmulatorServer(Policy(())) as akto, FakeAnthropic(scenario) as fake:
        async with served_unix(akto, capture, sock_dir, fail_mode="closed") as server:
            settings = command_settings(server, path=sock_dir / "gone.sock")
            settings["hooks"] = {"PreToolUse": settings["hooks"]["PreToolUse"]}
            await run_cli("clean up", settings, fake, home, workdir)
    assert target.exists(), "the tool ran with its guard down"
    assert len(fake.conversation_requests) == 2, "the turn did not reach the tool call"


async def test_a_failed_stop_hook_ends_the_turn_instead_of_asking_again(
    capture: SpanCapture, home: Path, workdir: Path, sock_dir: Path
) -> None:
    """Exit 2 on Stop means "keep writing": with the server down, that would ask the
    model again after every answer. The forwarder answers ``continue: false``."""
    with EmulatorServer(Policy(())) as akto, FakeAnthropic(Scenario(None, [Text("done")])) as fake:
        async with served_unix(akto, capture, sock_dir, fail_mode="closed") as server:
            settings = command_settings(server, path=sock_dir / "gone.sock")
            settings["hooks"] = {"Stop": settings["hooks"]["Stop"]}
            await run_cli("answer", settings, fake, home, workdir)
    assert len(fake.conversation_requests) == 1


async def test_fail_open_goes_on_when_the_server_is_down(
    capture: SpanCapture, home: Path, workdir: Path, sock_dir: Path
) -> None:
    target, scenario = _rm_rf(workdir)
    with EmulatorServer(Policy((RM_RF,))) as akto, FakeAnthropic(scenario) as fake:
        async with served_unix(akto, capture, sock_dir, fail_mode="open") as server:
            settings = command_settings(server, path=sock_dir / "gone.sock")
            assert not any(
                h["hooks"][0].get("onFailure")
                for entries in settings["hooks"].values()
                for h in entries
            )
            await run_cli("clean up", settings, fake, home, workdir)
    assert len(fake.conversation_requests) == 2
    assert not target.exists(), "fail-open: the unguarded call goes ahead, as documented"


def test_the_command_settings_run_the_forwarder_without_the_package(sock_dir: Path) -> None:
    """Every event runs the stdlib-only forwarder by path, isolated (-I -S); the
    blocking events add --block and onFailure block; no secret is in them."""
    settings = claude_command_settings(
        sock_dir / "hook.sock", ["PreToolUse", "Stop"], timeout=7, python="/py"
    )
    assert set(settings["hooks"]) == set(SERVED_EVENTS)
    for event, (entry,) in settings["hooks"].items():
        (hook,) = entry["hooks"]
        argv = shlex.split(hook["command"])
        assert argv[:4] == ["/py", "-I", "-S", str(FORWARDER)]
        assert argv[argv.index("--event") + 1] == event
        assert argv[argv.index("--socket") + 1] == str(sock_dir / "hook.sock")
        assert hook["timeout"] > 7
        assert (
            ("--block" in argv)
            == (hook.get("onFailure") == "block")
            == (event in ("PreToolUse", "Stop"))
        )
    imports = set()
    for node in ast.walk(ast.parse(FORWARDER.read_text())):
        if isinstance(node, ast.Import):
            imports |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module.split(".")[0])
    assert imports and imports <= set(sys.stdlib_module_names) | {"__future__"}, imports


@pytest.mark.parametrize("block", [True, False])
def test_the_forwarder_fails_by_its_mode_when_no_server_is_there(
    block: bool, sock_dir: Path
) -> None:
    """Fail-closed (--block): exit 2, or ``continue: false`` on Stop; fail-open: exit 1
    (a hook error the CLI reports and goes past)."""
    base = [sys.executable, "-I", "-S", str(FORWARDER), "--socket", str(sock_dir / "x.sock")]
    flag = ["--block"] if block else []
    pre = subprocess.run(
        [*base, "--event", "PreToolUse", *flag], input=b"{}", capture_output=True, timeout=30
    )
    stop = subprocess.run(
        [*base, "--event", "Stop", *flag], input=b"{}", capture_output=True, timeout=30
    )
    assert pre.returncode == (2 if block else 1)
    assert pre.stdout == b"" and pre.stderr
    if block:
        assert stop.returncode == 0 and json.loads(stop.stdout)["continue"] is False
    else:
        assert stop.returncode == 1 and stop.stdout == b""


async def test_a_failed_post_tool_use_hook_keeps_the_unjudged_output_from_the_model(
    capture: SpanCapture, home: Path, workdir: Path, sock_dir: Path
) -> None:
    """Fail-closed with output guardrails: a tool's output the guard could not judge
    (server down) must not reach the model. Exit 2 there only shows the reason to
    the model next to the output; the forwarder ends the turn (``continue: false``)."""
    from tests.security.attack_kit import requests_text

    scenario = Scenario(
        None, [ToolUse("Bash", {"command": "printf 'PRIVATE-%s' KEY-123"}), Text("ok")]
    )
    with EmulatorServer(Policy(())) as akto, FakeAnthropic(scenario) as fake:
        async with served_unix(
            akto, capture, sock_dir, fail_mode="closed", tool_response_guardrails=True
        ) as server:
            settings = command_settings(server, path=sock_dir / "gone.sock")
            (hook,) = settings["hooks"]["PostToolUse"][0]["hooks"]
            assert hook.get("onFailure") == "block"
            settings["hooks"] = {"PostToolUse": settings["hooks"]["PostToolUse"]}
            await run_cli("print it", settings, fake, home, workdir)
        everything = requests_text(fake)
    assert fake.conversation_requests, "the model was never asked"
    assert "PRIVATE-KEY-123" not in everything, "an unjudged tool output reached the model"
