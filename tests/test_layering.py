"""The package's layering: no import cycles, and hook handlers that need no SDK object."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer
from tests.conftest import SpanCapture

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "akto_otel"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's top-level modules ``path`` imports anywhere (module level,
    functions, ``TYPE_CHECKING``): a lazy import is still an arrow."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "akto_otel":
                names = [alias.name for alias in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            head = parts[1] if parts[0] == "akto_otel" and len(parts) > 1 else parts[0]
            if head in modules:
                found.add(head)
    found.discard(path.stem)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_modules_import_each_other_without_a_cycle() -> None:
    files = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert {"hooks", "hook_tools", "verdict", "processor", "exporter", "otlp_logs"} <= set(files)
    graph = {name: _imports(path, set(files)) for name, path in files.items()}
    assert "exporter" in graph["processor"]  # the walk sees imports
    assert _cycles(graph) == []


def test_the_old_processor_path_is_gone_and_the_public_one_stays() -> None:
    import akto_otel
    import akto_otel.exporter
    import akto_otel.processor

    assert akto_otel.AktoSpanProcessor is akto_otel.processor.AktoSpanProcessor
    assert not hasattr(akto_otel.exporter, "AktoSpanProcessor")


_FRONT_DOOR = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.modules["claude_agent_sdk"] = None  # any import of the SDK now fails
    from akto_otel import AktoGuardrails
    from akto_otel.hook_dispatch import dispatch
    from akto_otel.hook_scope import HookScope
    from akto_otel.unjudged import StartupProbe

    url, inputs = sys.argv[1], json.loads(sys.argv[2])
    guard = AktoGuardrails(ingestion_url=url, timeout=3.0)
    scope = HookScope(
        guard.verdicts, guard.rules, StartupProbe(guard.client, guard.settings), guard.tracer
    )

    async def main():
        try:
            return [await dispatch(scope, d["hook_event_name"], d) for d in inputs]
        finally:
            await guard.aclose()

    print(json.dumps(asyncio.run(main())))
    """
)


def _cli_input(command: str, tool_use_id: str) -> dict[str, object]:
    """A PreToolUse hook input as the CLI sends it on stdin (or POSTs it)."""
    return {
        "session_id": "sess-1",
        "transcript_path": "/tmp/transcript.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command},
        "tool_use_id": tool_use_id,
    }


@pytest.mark.timeout(120)
async def test_a_handler_answers_the_hooks_json_without_the_sdk_as_the_callback_does(
    emulator: EmulatorServer, capture: SpanCapture
) -> None:
    """The handlers run on the hook's JSON alone (a second front door needs no SDK
    object): in a process that cannot import the SDK, the same input gets the same
    answer as the SDK callback gives it, a deny for the destructive command."""
    inputs = [_cli_input("rm -rf build", "toolu_1"), _cli_input("ls", "toolu_2")]
    result = subprocess.run(
        [sys.executable, "-c", _FRONT_DOOR, emulator.url, json.dumps(inputs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    without_sdk = json.loads(result.stdout.strip().splitlines()[-1])

    guard = AktoGuardrails(tracer_provider=capture.provider, ingestion_url=emulator.url)
    callback = guard.hooks()["PreToolUse"][0].hooks[0]
    through_sdk = [await callback(d, str(d["tool_use_id"]), {}) for d in inputs]
    await guard.aclose()

    assert without_sdk == through_sdk
    denied, allowed = without_sdk
    assert denied["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert allowed.get("hookSpecificOutput", {}).get("permissionDecision") != "deny"
