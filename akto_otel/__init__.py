"""Akto guardrails and OpenTelemetry tracing for the Claude Agent SDK.

Usage::

    from claude_agent_sdk import ClaudeAgentOptions, query
    import akto_otel

    guard = akto_otel.AktoGuardrails()        # AKTO_* / OTEL_* from the environment
    async with guard.session(ClaudeAgentOptions(allowed_tools=["Bash"])) as options:
        async for message in query(prompt="...", options=options):
            ...

Drop-in for Akto's reference connector::

    from akto_otel import create_hooks
    user_prompt_submit, stop, pre_tool_use, post_tool_use = create_hooks(client_ip)

Importing this package has no side effects: nothing is read, written or connected
until a guard is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from akto_otel.version import __version__

if TYPE_CHECKING:
    from akto_otel.config import Settings
    from akto_otel.configure import configure
    from akto_otel.contract import Verdict
    from akto_otel.errors import AktoConfigError, AktoError
    from akto_otel.exporter import AktoSpanProcessor
    from akto_otel.guardrails import GuardrailClient
    from akto_otel.hooks import HOOK_EVENTS, AktoGuardrails, create_hooks

__all__ = [
    "HOOK_EVENTS",
    "AktoConfigError",
    "AktoError",
    "AktoGuardrails",
    "AktoSpanProcessor",
    "GuardrailClient",
    "Settings",
    "Verdict",
    "__version__",
    "configure",
    "create_hooks",
]

_LAZY = {
    "Settings": "akto_otel.config",
    "Verdict": "akto_otel.contract",
    "AktoConfigError": "akto_otel.errors",
    "AktoError": "akto_otel.errors",
    "AktoSpanProcessor": "akto_otel.exporter",
    "GuardrailClient": "akto_otel.guardrails",
    "HOOK_EVENTS": "akto_otel.hooks",
    "AktoGuardrails": "akto_otel.hooks",
    "create_hooks": "akto_otel.hooks",
    "configure": "akto_otel.configure",
}


def __getattr__(name: str) -> Any:
    # Lazy so `import akto_otel` stays cheap; the SDK and httpx load on first use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'akto_otel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
