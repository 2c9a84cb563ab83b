"""Akto guardrails and OpenTelemetry tracing for the Claude Agent SDK.

Every hook event becomes an OpenTelemetry span; prompts, tool calls, tool output
and answers are judged by Akto's guardrail service; records reach Akto's ingestion
endpoint while spans flow to any OTel pipeline.

Usage::

    from claude_agent_sdk import ClaudeAgentOptions, query
    import akto_otel

    guard = akto_otel.configure()             # AKTO_* / OTEL_* from the environment
    async with guard.session(ClaudeAgentOptions(allowed_tools=["Bash"])) as options:
        async for message in query(prompt="...", options=options):
            ...

Drop-in for Akto's reference connector::

    from akto_otel import create_hooks
    user_prompt_submit, stop, pre_tool_use, post_tool_use = create_hooks(client_ip)

Public names:

- ``configure(settings=None, **overrides)``: the process's guard plus an OTel
  pipeline (joins the app's providers when set).
- ``AktoGuardrails``: a guard; ``instrument(options)``, ``session(options)``,
  ``hooks()``, ``force_flush()``, ``shutdown()``.
- ``Settings``: every setting, from ``AKTO_*`` variables or arguments.
- ``AktoSpanProcessor`` / ``AktoSpanExporter``: Akto record delivery on the OTel
  SDK's ``BatchSpanProcessor``; built with no arguments from the environment.
- ``GuardrailClient``, ``Verdict``: one guardrail call and its outcome.
- ``create_hooks``, ``HOOK_EVENTS``: the reference connector's interface.
- ``AktoError``, ``AktoConfigError``: the exception family.

Importing this package has no side effects: nothing is read, written or connected
until a guard is built; the OTel SDK, httpx and the Claude Agent SDK load on first
use of a name that needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light modules (stdlib only, no I/O) are bound at once; `configure` must be, or
# importing the akto_otel.configure submodule first would shadow the function.
from akto_otel.config import Settings
from akto_otel.configure import configure
from akto_otel.errors import AktoConfigError, AktoError
from akto_otel.version import __version__

if TYPE_CHECKING:
    from akto_otel.contract import Verdict
    from akto_otel.exporter import AktoSpanExporter
    from akto_otel.guardrails import GuardrailClient
    from akto_otel.hooks import HOOK_EVENTS, AktoGuardrails, create_hooks
    from akto_otel.processor import AktoSpanProcessor

__all__ = [
    "HOOK_EVENTS",
    "AktoConfigError",
    "AktoError",
    "AktoGuardrails",
    "AktoSpanExporter",
    "AktoSpanProcessor",
    "GuardrailClient",
    "Settings",
    "Verdict",
    "__version__",
    "configure",
    "create_hooks",
]

# The rest loads the OTel SDK, httpx and the Claude Agent SDK: on first use.
_LAZY = {
    "Verdict": "akto_otel.contract",
    "AktoSpanExporter": "akto_otel.exporter",
    "AktoSpanProcessor": "akto_otel.processor",
    "GuardrailClient": "akto_otel.guardrails",
    "HOOK_EVENTS": "akto_otel.hooks",
    "AktoGuardrails": "akto_otel.hooks",
    "create_hooks": "akto_otel.hooks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'akto_otel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # dir() and help() list the public names, loaded or not.
    return sorted(set(globals()) | set(__all__))
