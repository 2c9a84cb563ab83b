"""Offline testing tools: a scripted fake Anthropic Messages API for real agent sessions.

Example::

    from pathlib import Path

    from claude_agent_sdk import ClaudeAgentOptions
    from akto_otel.testing import (
        FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent,
    )

    scenario = Scenario(r"list files", [ToolUse("Bash", {"command": "ls"}), Text("Listed.")])

    async def check(tmp_path: Path) -> None:
        with FakeAnthropic(scenario) as fake:
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, tmp_path / "home"),
                allowed_tools=["Bash"],
                cwd=tmp_path,
            )
            messages = await run_agent("please list files", options)
        assert [r.step for r in fake.records if r.kind == "conversation"] == [0, 1]

Scenarios can also live in YAML or JSON (:func:`load_scenarios`); see
:mod:`akto_otel.testing.scenario` for the format and
:mod:`akto_otel.testing.fake_anthropic` for what the CLI sends and which hooks
fire.
"""

from .fake_anthropic import (
    SIDE_REPLY_TEXT,
    FakeAnthropic,
    RecordedRequest,
    count_assistant_turns,
    first_user_text,
    is_side_request,
    message_text,
    step_index,
)
from .scenario import (
    DEFAULT_FINAL_TEXT,
    Scenario,
    Step,
    StepLike,
    Text,
    ToolUse,
    ToolUses,
    delegation,
    load_scenarios,
    scenarios_from_data,
    select_scenario,
)
from .sdk import offline_agent_env, run_agent

__all__ = [
    "DEFAULT_FINAL_TEXT",
    "SIDE_REPLY_TEXT",
    "FakeAnthropic",
    "RecordedRequest",
    "Scenario",
    "Step",
    "StepLike",
    "Text",
    "ToolUse",
    "ToolUses",
    "count_assistant_turns",
    "delegation",
    "first_user_text",
    "is_side_request",
    "load_scenarios",
    "message_text",
    "offline_agent_env",
    "run_agent",
    "scenarios_from_data",
    "select_scenario",
    "step_index",
]
