"""Redaction of secrets in content before it leaves the process (spans, local logs).

Akto itself still receives the full content it judges; redaction applies to what
akto_otel writes to telemetry and to its own logs.

Usage::

    redactor = Redactor(extra_patterns=(r"internal-[0-9]+",))
    redactor.redact("Authorization: Bearer abc.def")   # 'Authorization: Bearer [REDACTED]'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_RULES", "REDACTED", "Redactor"]

REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class _Rule:
    name: str
    pattern: re.Pattern[str]
    #: Replacement; ``\\1`` etc. keep a non-secret prefix such as a header name.
    replacement: str = REDACTED


def _rule(name: str, pattern: str, replacement: str = REDACTED, flags: int = 0) -> _Rule:
    return _Rule(name, re.compile(pattern, flags), replacement)


#: Built-in rules, applied in order.
DEFAULT_RULES: tuple[_Rule, ...] = (
    _rule(
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
        flags=re.DOTALL,
    ),
    _rule("bearer_token", r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", r"\1" + REDACTED),
    _rule(
        "url_password", r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)", r"\1" + REDACTED + r"\2"
    ),
    _rule("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    _rule(
        "aws_secret_key",
        r"(?i)(aws_secret_access_key\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}",
        r"\1" + REDACTED,
    ),
    _rule("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{16,}"),
    _rule("openai_key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    _rule("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    _rule("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    _rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    _rule(
        "generic_secret",
        r"(?i)\b((?:api[_-]?key|secret|token|password|passwd|pwd)[\"']?\s*[:=]\s*[\"']?)"
        r"[^\s\"',;]{6,}",
        r"\1" + REDACTED,
    ),
    _rule("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
)


class Redactor:
    """Applies the built-in rules plus user patterns (each match -> ``[REDACTED]``)."""

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        extra = tuple(_rule(f"custom_{i}", p) for i, p in enumerate(extra_patterns))
        self._rules = DEFAULT_RULES + extra

    def redact(self, text: str) -> str:
        for rule in self._rules:
            text = rule.pattern.sub(rule.replacement, text)
        return text

    def redact_or_none(self, text: str) -> str | None:
        """Redacted text, or None when redaction itself failed (drop, never send raw)."""
        try:
            return self.redact(text)
        except Exception:
            return None
