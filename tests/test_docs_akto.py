"""docs/akto.md: the sample record is what the guard really sends.

The README's offline session (the scripted model asks for ``rm -rf build``, the
emulator's default policy denies it) runs in-process; the emulator's
``/_emulator/records`` entry of that tool call must match the doc's sample in every
field but the ids, the time and the transport headers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from claude_agent_sdk import ClaudeAgentOptions

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer, default_policy
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env
from tests.conftest import SpanCapture
from tests.test_docs import doc_block

pytestmark = pytest.mark.timeout(120)

#: Values that differ per run: the SDK's session and prompt ids, the time.
_PER_RUN_HEADERS = ("x-akto-installer-akto_session_id", "x-akto-installer-akto_message_id")


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    record = dict(entry["record"])
    headers = json.loads(record.pop("requestHeaders"))
    for name in _PER_RUN_HEADERS:
        assert headers.pop(name), name
    assert record.pop("time").isdigit()
    return {
        "endpoint": entry["endpoint"],
        "flags": entry["flags"],
        "content-type": entry["headers"]["content-type"],
        "record": record,
        "requestHeaders": headers,
        "verdict": entry["verdict"],
    }


async def test_the_sample_record_is_what_a_denied_tool_call_sends(
    capture: SpanCapture, tmp_path: Path
) -> None:
    sample = json.loads(doc_block("akto-sample-record").code)
    scenario = Scenario(steps=[ToolUse("Bash", {"command": "rm -rf build"}), Text("Done.")])
    (tmp_path / "build").mkdir()
    with EmulatorServer(default_policy()) as akto, FakeAnthropic(scenario) as fake:
        guard = AktoGuardrails(tracer_provider=capture.provider, ingestion_url=akto.url)
        options = ClaudeAgentOptions(
            allowed_tools=["Bash"], env=offline_agent_env(fake, tmp_path / "home"), cwd=tmp_path
        )
        async for _ in guard.query("Tidy up the build folder", options):
            pass
        guard.force_flush()
        entries = httpx.get(f"{akto.url}/_emulator/records", timeout=10).json()
    tool_calls = [
        e for e in entries if e["endpoint"] == "http-proxy" and e["record"]["path"] == "/tool/Bash"
    ]
    assert len(tool_calls) == 1, entries
    assert set(tool_calls[0]["record"]) == set(sample["record"])
    assert _comparable(tool_calls[0]) == _comparable(sample)
    assert (tmp_path / "build").is_dir()
