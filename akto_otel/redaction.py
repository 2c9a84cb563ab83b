"""Secrets: redaction of content that leaves the process, and keeping Akto's out of the agent.

Akto itself still receives the full content it judges; redaction applies to what
akto_otel writes to telemetry and to its own logs. :func:`agent_env_overrides`
is what the guard adds to ``ClaudeAgentOptions.env`` so that the CLI (and every
tool it runs) never sees the Akto token or the credentials in the Akto URL.

Usage::

    redactor = Redactor(extra_patterns=(r"internal-[0-9]+",))
    redactor.redact("Authorization: Bearer abc.def")   # 'Authorization: Bearer [REDACTED]'
    redactor.redact("DB_PASSWORD=hunter22")            # 'DB_PASSWORD=[REDACTED]'
    redact_url("https://u:pw@akto.example")            # 'https://u:***@akto.example'
    url_without_credentials("https://u:pw@akto.example")  # 'https://akto.example'
    agent_env_overrides({"AKTO_API_TOKEN": "t"}, {})   # {'AKTO_API_TOKEN': '', 'AKTO_TOKEN': ''}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DEFAULT_RULES",
    "REDACTED",
    "SECRET_ENV_VARS",
    "Redactor",
    "agent_env_overrides",
    "redact_url",
    "url_without_credentials",
]

REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class _Rule:
    name: str
    pattern: re.Pattern[str]
    #: Replacement; ``\\1`` etc. keep a non-secret prefix such as a header name.
    replacement: str = REDACTED


def _rule(name: str, pattern: str, replacement: str = REDACTED, flags: int = 0) -> _Rule:
    return _Rule(name, re.compile(pattern, flags), replacement)


#: A name that ends in a secret word, prefixed or not (DB_PASSWORD, GITHUB_TOKEN,
#: aws_secret_access_key), opening the group that keeps it. PWD is the working directory.
_SECRET_NAME = (
    r"(?i)(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]*(?:password|passwd|secret(?:_key)?|token|"
    r"api[_-]?key|access[_-]?key|private[_-]?key|credentials?)"
)

#: Built-in rules, applied in order.
DEFAULT_RULES: tuple[_Rule, ...] = (
    _rule(
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        flags=re.DOTALL,
    ),
    _rule(
        "authorization",
        r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?(?:(?:basic|bearer|token|digest)\s+)?)"
        r"[^\s\"',;]{6,}",
        r"\1" + REDACTED,
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
    _rule("slack_token", r"\b(?:xox[abeoprs]|xapp)-[A-Za-z0-9-]{10,}"),
    _rule("slack_webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"),
    _rule("stripe_key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    _rule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    _rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # NAME=value, "name": "value with spaces", name: value.
    _rule(
        "named_secret_quoted",
        _SECRET_NAME + r"[\"']?\s*[:=]\s*\")(?:[^\"\\]|\\.){4,}(\")",
        r"\1" + REDACTED + r"\2",
    ),
    _rule(
        "named_secret",
        _SECRET_NAME + r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{4,}",
        r"\1" + REDACTED,
    ),
    _rule(
        "generic_secret",
        r"(?i)\b((?:api[_-]?key|secret|token|password|passwd|pwd)[\"']?\s*[:=]\s*[\"']?)"
        r"(?![/~])[^\s\"',;]{6,}",
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


#: Variables the agent's environment gets blank unless the app set them in ``options.env``.
SECRET_ENV_VARS = ("AKTO_API_TOKEN", "AKTO_TOKEN")
_URL_VARS = ("AKTO_DATA_INGESTION_URL",)


_URL_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^/?#@]*?:)(?P<password>[^/?#@]*)@")


def redact_url(url: str) -> str:
    """``url`` as logs, reprs and messages show it: any password becomes ``***``
    (the user name is kept). Works on text that is not a valid URL too."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***@", url.strip(), count=1)


def url_without_credentials(url: str) -> str:
    """``url`` without its userinfo (``user:password@``); unchanged if it has none."""
    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=host))
    except ValueError:
        return REDACTED if "@" in url else url


def agent_env_overrides(environ: Mapping[str, str], app_env: Mapping[str, str]) -> dict[str, str]:
    """Entries for ``options.env`` that keep Akto's secrets out of the CLI's environment.

    The SDK starts the CLI with ``environ`` plus ``app_env``; a name the app set
    in ``app_env`` itself is its decision and is left alone.
    """
    overrides = {name: "" for name in SECRET_ENV_VARS if name not in app_env}
    for name in _URL_VARS:
        value = environ.get(name)
        if name not in app_env and value is not None:
            cleaned = url_without_credentials(value)
            if cleaned != value:
                overrides[name] = cleaned
    return overrides
