"""Shared pieces of the attacker suite: a guard on a real emulator, scripted verdicts.

``ScriptedPolicy`` is a real :class:`~akto_otel.emulator.Policy` served by the real
emulator over HTTP; it only answers chosen ``guardrailsResult`` objects for chosen
hooks (contradictory verdicts no sane rule produces), and defers to its rules
otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer, Policy, Rule
from akto_otel.testing import FakeAnthropic, offline_agent_env
from tests.conftest import SpanCapture

EMOJI = "\U0001f600"
#: ~87 KB of UTF-8, ~264 Ki characters once JSON-escaped: past the server's string limit.
PADDING = EMOJI * 22_000


def hook_of(record: Mapping[str, Any]) -> str:
    headers = record.get("requestHeaders")
    try:
        return str(json.loads(headers).get("x-claude-hook", "")) if isinstance(headers, str) else ""
    except ValueError:
        return ""


@dataclass(frozen=True)
class ScriptedPolicy(Policy):
    """Answer ``results[hook]`` for that hook's records; the rules for the rest."""

    results: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def evaluate(self, record: Mapping[str, Any], side: Any) -> dict[str, Any]:
        scripted = self.results.get(hook_of(record))
        if scripted is not None:
            return dict(scripted)
        return super().evaluate(record, side)


def rule(name: str, hook: str, pattern: str, **kw: Any) -> Rule:
    target = kw.pop(
        "target", "response" if hook in ("Stop", "SubagentStop", "PostToolUse") else "request"
    )
    return Rule(
        name=name,
        hooks=(hook,),
        target=target,
        pattern=pattern,
        reason=kw.pop("reason", name),
        **kw,
    )


def guard(akto: EmulatorServer, capture: SpanCapture, **kw: Any) -> AktoGuardrails:
    kw.setdefault("timeout", 10.0)
    kw.setdefault("export_retry_timeout", 1.0)
    kw.setdefault("export_shutdown_timeout", 1.0)
    return AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=akto.url,
        **kw,
    )


def options(fake: FakeAnthropic, home: Path, workdir: Path, **kw: Any) -> ClaudeAgentOptions:
    kw.setdefault("allowed_tools", ["Bash"])
    return ClaudeAgentOptions(env=offline_agent_env(fake, home), cwd=str(workdir), **kw)


def requests_text(fake: FakeAnthropic) -> str:
    return json.dumps(fake.conversation_requests)


def recording(
    opts: ClaudeAgentOptions, outputs: list[tuple[str, dict[str, Any]]]
) -> ClaudeAgentOptions:
    """``opts`` whose hook callbacks also note what they answered the SDK."""
    import dataclasses

    from claude_agent_sdk import HookMatcher

    def wrap(event: str, callback: Any) -> Any:
        async def noted(data: Any, tool_use_id: str | None, context: Any) -> Any:
            out = await callback(data, tool_use_id, context)
            outputs.append((event, out))
            return out

        return noted

    hooks = {
        event: [
            HookMatcher(
                matcher=m.matcher,
                hooks=[wrap(event, cb) for cb in m.hooks],
                timeout=m.timeout,
                on_failure=m.on_failure,  # the guard arms its fail-closed matchers
            )
            for m in matchers
        ]
        for event, matchers in (opts.hooks or {}).items()
    }
    return dataclasses.replace(opts, hooks=hooks)  # type: ignore[arg-type]


#: The uid another local user's processes run as in the attacks (``nobody``).
OTHER_UID = 65534


def other_user_python() -> str:
    """A Python interpreter uid :data:`OTHER_UID` may run (the attacks run stdlib
    scripts as that user); skips the test unless this process is root (only root
    can start a process as another user) and one exists."""
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root, to run the attacker as another uid (65534)")
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if not candidate:
            continue
        try:
            done = subprocess.run(
                [candidate, "-I", "-S", "-c", "pass"], user=OTHER_UID, capture_output=True
            )
        except OSError:
            continue
        if done.returncode == 0:
            return candidate
    pytest.skip("no Python interpreter that uid 65534 may run")


#: Run as :data:`OTHER_UID`: ``port count [source]``. Opens ``count`` connections to
#: 127.0.0.1:``port`` (bound to this host's address ``source`` when given), each
#: sending half a request line, and prints how many the server closed at once.
HALF_REQUESTS = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
source = sys.argv[3] if len(sys.argv) > 3 else ""
closed = 0
for _ in range(count):
    sock = socket.socket()
    sock.settimeout(5)
    if source:
        sock.bind((source, 0))
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


def dropped_connections(capture: SpanCapture) -> dict[str, Any]:
    """``akto.serve.connections.dropped`` by reason (the non-zero ones)."""
    return {
        str(p.attributes.get("reason")): p.value
        for p in capture.metric_points("akto.serve.connections.dropped")
        if p.value
    }
