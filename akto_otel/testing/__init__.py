"""Offline testing tools: a scripted fake Anthropic Messages API for real agent sessions.

Example::

    from pathlib import Path

    from claude_agent_sdk import ClaudeAgentOptions
    from akto_otel.testing import (
        FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent,
    )

    scenario = Scenario(r"list files", [ToolUse("Bash", {"command": "ls"}), Text("Listed.")])
    with FakeAnthropic(scenario) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, Path("/tmp/fake-home")), allowed_tools=["Bash"]
        )
        messages = await run_agent("please list files", options)
"""

from .fake_anthropic import (
    SIDE_REPLY_TEXT,
    FakeAnthropic,
    RecordedRequest,
    count_assistant_turns,
    first_user_text,
    is_side_request,
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
    "first_user_text",
    "is_side_request",
    "load_scenarios",
    "offline_agent_env",
    "run_agent",
    "scenarios_from_data",
    "select_scenario",
    "step_index",
]
