"""Decision counters start at zero, so the first deny of a short-lived agent is seen.

Prometheus computes ``rate()`` / ``increase()`` from two samples of one series: a
series whose first scraped sample is already 1 shows no increase, and the deny-rate
alerts never see an agent that denies once and exits. The guard's decision series
for allow and deny exist at 0 from the start, and a real denied tool call (real CLI,
emulator) increments that same series rather than starting a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions

from akto_otel import AktoGuardrails
from akto_otel.emulator import EmulatorServer
from akto_otel.metrics import JUDGING_HOOKS
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env
from tests.conftest import SpanCapture

pytestmark = pytest.mark.timeout(120)


def _decisions(capture: SpanCapture) -> dict[tuple[str, str], list[Any]]:
    found: dict[tuple[str, str], list[Any]] = {}
    for point in capture.metric_points("akto.guardrail.decisions"):
        key = (str(point.attributes["hook"]), str(point.attributes["decision"]))
        found.setdefault(key, []).append(point)
    return found


async def test_the_first_deny_increments_a_series_that_started_at_zero(
    emulator: EmulatorServer, capture: SpanCapture, home: Path, workdir: Path
) -> None:
    guard = AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=emulator.url,
        timeout=3.0,
    )
    before = _decisions(capture)
    for hook in JUDGING_HOOKS:
        for decision in ("allow", "deny"):
            points = before.get((hook, decision), [])
            assert [p.value for p in points] == [0], (hook, decision)
    scenario = Scenario(None, [ToolUse("Bash", {"command": "rm -rf build"}), Text("ok")])
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        async for _ in guard.query("tidy up", options):
            pass
    after = _decisions(capture)
    denied = after[("PreToolUse", "deny")]
    assert [p.value for p in denied] == [1]  # the same series, now 1: an increase of 1
    assert denied[0].attributes == before[("PreToolUse", "deny")][0].attributes
