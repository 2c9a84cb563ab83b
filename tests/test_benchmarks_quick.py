"""The benchmark suite runs end to end in quick mode (no timing assertions here)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from akto_otel.config import Settings
from akto_otel.contract import WireContext, tool_request_record
from akto_otel.emulator import EmulatorServer, Policy, Rule
from akto_otel.guardrails import GuardrailClient
from benchmarks.clients import StreamGuardrailClient
from benchmarks.runner import FIGURES
from benchmarks.servers import ALLOWED_VERDICT_BODY, closed_port_url

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)


def test_quick_run_prints_every_figure(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for header, _ in FIGURES.values():
        assert f"=== {header} ===" in proc.stdout, f"missing figure {header!r}"
    assert "=== Targets ===" in proc.stdout
    assert "FAILED" not in proc.stdout
    document = json.loads(results.read_text())
    assert set(document["figures"]) == set(FIGURES)
    assert document["quick"] is True


def test_unknown_figure_is_rejected() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown figure" in proc.stderr


# The candidate client the benchmarks recommend must be correct, not only fast.


async def _one_shot_server(answers: list[bytes]) -> tuple[asyncio.Server, str]:
    """Answers the n-th request on a connection with answers[n], then closes it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for answer in answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


_ALLOW = ALLOWED_VERDICT_BODY.encode()
_KEEP_ALIVE_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(_ALLOW)
    + _ALLOW
)


async def test_stream_client_verdicts_match_the_package_client() -> None:
    rules = (
        Rule(name="rm", hooks=("PreToolUse",), target="request", pattern="rm -rf", reason="No"),
    )
    with EmulatorServer(Policy(rules)) as server:
        settings = Settings(ingestion_url=server.url)
        ctx = WireContext()
        stream, package = StreamGuardrailClient(settings), GuardrailClient(settings)
        for command, decision in (("ls", "allow"), ("rm -rf /", "deny")):
            record = tool_request_record(ctx, "Bash", {"command": command})
            got, want = await stream.check(record), await package.check(record)
            assert (got.decision, got.reason, got.error) == (want.decision, want.reason, None)
            assert got.decision == decision
        await stream.aclose()
        await package.aclose()


async def test_stream_client_retries_a_closed_keep_alive_connection() -> None:
    server, url = await _one_shot_server([_KEEP_ALIVE_ANSWER])  # closes after one answer
    client = StreamGuardrailClient(Settings(ingestion_url=url))
    record = tool_request_record(WireContext(), "Bash", {"command": "ls"})
    for _ in range(3):
        verdict = await client.check(record)
        assert verdict.error is None and verdict.decision == "allow"
    await client.aclose()
    server.close()


async def test_stream_client_reads_chunked_and_limits_size() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(_ALLOW)
        + _ALLOW
        + b"\r\n0\r\n\r\n"
    )
    server, url = await _one_shot_server([chunked, chunked])
    record = tool_request_record(WireContext(), "Bash", {"command": "ls"})
    client = StreamGuardrailClient(Settings(ingestion_url=url))
    assert (await client.check(record)).decision == "allow"
    small = StreamGuardrailClient(Settings(ingestion_url=url, max_response_bytes=16))
    assert (await small.check(record)).error == "response_too_large"
    await client.aclose()
    await small.aclose()
    server.close()


async def test_stream_client_failures_become_error_kinds() -> None:
    record = tool_request_record(WireContext(), "Bash", {"command": "ls"})
    refused = StreamGuardrailClient(Settings(ingestion_url=closed_port_url()))
    assert (await refused.check(record)).error == "connection_refused"
    with EmulatorServer(Policy(()), latency_s=1.0) as server:
        slow = StreamGuardrailClient(Settings(ingestion_url=server.url, timeout=0.1))
        verdict = await slow.check(record)
        assert verdict.error == "timeout" and verdict.allowed  # fails open by default
        await slow.aclose()
    await refused.aclose()
