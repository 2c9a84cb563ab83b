"""Helpers to run real Claude Agent SDK sessions against :class:`FakeAnthropic`.

Example::

    import tempfile
    from pathlib import Path

    from claude_agent_sdk import ClaudeAgentOptions
    from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse
    from akto_otel.testing import offline_agent_env, run_agent

    async def demo() -> None:
        scenario = Scenario("hello", [ToolUse("Bash", {"command": "echo hi"}), Text("Bye")])
        with FakeAnthropic(scenario) as fake, tempfile.TemporaryDirectory() as tmp:
            options = ClaudeAgentOptions(
                env=offline_agent_env(fake, Path(tmp) / "home"),
                allowed_tools=["Bash"],
                cwd=tmp,
            )
            messages = await run_agent("hello", options)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from claude_agent_sdk import ClaudeAgentOptions, Message, query

from .fake_anthropic import FakeAnthropic

__all__ = ["offline_agent_env", "run_agent"]

# Always set. None of these affects hooks or the CLI's own OpenTelemetry export.
_OFFLINE_ENV: dict[str, str] = {
    "ANTHROPIC_API_KEY": "dummy",
    # Credentials / providers inherited from the caller's environment would win
    # over ANTHROPIC_BASE_URL + ANTHROPIC_API_KEY: blank them.
    "ANTHROPIC_AUTH_TOKEN": "",
    "CLAUDE_CODE_OAUTH_TOKEN": "",
    "CLAUDE_CODE_USE_BEDROCK": "",
    "CLAUDE_CODE_USE_VERTEX": "",
    "CLAUDE_CODE_USE_FOUNDRY": "",
    # Background chores that would otherwise try the network.
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_FEATURE_FLAGS": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
}

# quiet=True: also no session-title side request, no HEAD /api/hello probe and no
# event logging to api.anthropic.com -- but also no CLI OpenTelemetry *metrics*
# export (traces and logs still go out).
_QUIET_ENV: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
}

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _no_proxy() -> str:
    existing = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    hosts = [h.strip() for h in existing.split(",") if h.strip()]
    hosts += [h for h in _LOOPBACK if h not in hosts]
    return ",".join(hosts)


def offline_agent_env(
    fake: FakeAnthropic,
    home: Path,
    *,
    quiet: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment variables for ``ClaudeAgentOptions(env=...)`` so that the
    bundled Claude Code CLI talks only to ``fake`` and keeps its state in ``home``.

    ``home`` (created if missing) becomes ``HOME`` and ``home/.claude`` the
    ``CLAUDE_CONFIG_DIR``: use a fresh temporary directory per test, so the CLI
    neither reads the user's settings, CLAUDE.md, skills and agents nor writes
    transcripts into the real ``~/.claude``. An empty ``HOME`` does not help:
    the CLI then falls back to the real home directory.

    ``quiet=True`` additionally sets ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC``
    and ``DISABLE_TELEMETRY``: no session-title side request and no event
    logging, but also no OpenTelemetry metrics from the CLI (traces and logs are
    still exported), so leave it off when testing telemetry. ``extra`` is merged
    last.
    """
    home = Path(home).absolute()
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    env = {
        **_OFFLINE_ENV,
        "ANTHROPIC_BASE_URL": fake.url,
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "NO_PROXY": _no_proxy(),
        "no_proxy": _no_proxy(),
    }
    if quiet:
        env.update(_QUIET_ENV)
    if extra:
        env.update(extra)
    return env


async def run_agent(prompt: str, options: ClaudeAgentOptions) -> list[Message]:
    """Run one ``claude_agent_sdk.query()`` to completion and return all messages."""
    return [message async for message in query(prompt=prompt, options=options)]
