"""Helpers to run real Claude Agent SDK sessions against :class:`FakeAnthropic`.

Example::

    import tempfile
    from pathlib import Path

    from claude_agent_sdk import ClaudeAgentOptions
    from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse
    from akto_otel.testing import offline_agent_env, run_agent

    async def demo() -> None:
        scenario = Scenario("hello", [ToolUse("Bash", {"command": "echo hi"}), Text("Bye")])
        with FakeAnthropic([scenario]) as fake, tempfile.TemporaryDirectory() as tmp:
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, Path(tmp) / "home"),
                allowed_tools=["Bash"],
                cwd=tmp,
            )
            messages = await run_agent("hello", options)
"""

from __future__ import annotations

from pathlib import Path

from claude_agent_sdk import ClaudeAgentOptions, Message, query

from .fake_anthropic import FakeAnthropic

__all__ = ["offline_agent_env", "run_agent"]

# Environment that keeps the CLI offline, quiet and fast.
_QUIET_ENV: dict[str, str] = {}


def offline_agent_env(fake: FakeAnthropic, home: Path) -> dict[str, str]:
    """Environment variables for ``ClaudeAgentOptions(env=...)`` so that the
    bundled Claude Code CLI talks only to ``fake`` and keeps its state in ``home``.

    ``home`` is created if missing; use a fresh temporary directory per test so
    the CLI neither reads the user's ``~/.claude`` settings nor leaves
    transcripts there.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    return {
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "dummy",
        "HOME": str(home),
        **_QUIET_ENV,
    }


async def run_agent(prompt: str, options: ClaudeAgentOptions) -> list[Message]:
    """Run one ``claude_agent_sdk.query()`` to completion and return all messages."""
    return [message async for message in query(prompt=prompt, options=options)]
