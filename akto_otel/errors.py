"""The one exception hierarchy of akto_otel.

Hooks never raise these into the Claude Agent SDK: they are for configuration
mistakes (raised where the settings are built) and for the internal plumbing
that maps every failure to a low-cardinality error kind.
"""

from __future__ import annotations

__all__ = ["AktoConfigError", "AktoError"]


class AktoError(Exception):
    """Base class of every akto_otel error."""


class AktoConfigError(AktoError, ValueError):
    """A setting has a value akto_otel cannot use.

    The message names the variable (or argument), the value, and what is accepted.
    """

    def __init__(self, name: str, value: str, accepted: str) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        from akto_otel.redaction import redact_url

        # A bad URL may still carry user:password@; the message never shows it.
        value_shown = redact_url(value)
        shown = value_shown if len(value_shown) <= 80 else value_shown[:77] + "..."
        super().__init__(f"{name}={shown!r} is not valid: expected {accepted}")
