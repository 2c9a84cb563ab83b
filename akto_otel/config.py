"""Settings for akto_otel: one frozen object built from arguments or the environment.

Only ``AKTO_*`` names (and the standard ``OTEL_*`` ones) are read: an app's own
``MODE`` or ``LOG_LEVEL`` never reaches the guard. The reference connector's
unprefixed names (``MODE``, ``LOG_LEVEL``, ``AGENT_ID``, ...) are honoured only by
the drop-in :func:`akto_otel.create_hooks` (see :func:`connector_overrides`), and
there a bad one is a warning, never a refusal. A bad ``AKTO_*`` value raises
:class:`AktoConfigError` naming the variable and what it accepts; an ``AKTO_*`` name
akto_otel does not know is a warning (:func:`unknown_names`), an error with
``AKTO_STRICT_SETTINGS=true``.

Usage::

    from akto_otel.config import Settings

    settings = Settings.from_env()                       # os.environ
    settings = Settings.from_env(timeout=2.0)            # an argument wins over the env
    settings = Settings.from_env({"AKTO_TIMEOUT": "1"})  # any mapping

Reading settings never touches the disk or the network.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from akto_otel.errors import AktoConfigError, _did_you_mean

_log = logging.getLogger(__name__)

__all__ = [
    "CONNECTOR_NAMES",
    "CaptureMode",
    "DeliveryMode",
    "FailMode",
    "Mode",
    "ObserveDeliveryMode",
    "Settings",
    "SpanMode",
    "connector_overrides",
    "unknown_name_errors",
    "unknown_names",
]

Mode = Literal["argus", "atlas"]
FailMode = Literal["open", "closed"]
DeliveryMode = Literal["batch", "proxy", "otlp"]
ObserveDeliveryMode = Literal["batch", "proxy"]
CaptureMode = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]
#: ``full``: the whole span tree; ``guard``: only the guardrail spans (another
#: instrumentation, or the CLI's own telemetry, owns the agent and tool spans).
SpanMode = Literal["full", "guard"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_CAPTURE_MODES: tuple[CaptureMode, ...] = (
    "NO_CONTENT",
    "SPAN_ONLY",
    "EVENT_ONLY",
    "SPAN_AND_EVENT",
)


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise AktoConfigError(name, raw, "true or false (also 1/0, yes/no, on/off)")


def _parse_float(name: str, raw: str, *, minimum: float, maximum: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise AktoConfigError(name, raw, f"a number of seconds in ({minimum}, {maximum}]") from None
    if not (minimum < value <= maximum):
        raise AktoConfigError(name, raw, f"a number of seconds in ({minimum}, {maximum}]")
    return value


def _parse_int(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise AktoConfigError(name, raw, f"a whole number from {minimum} to {maximum}") from None
    if not (minimum <= value <= maximum):
        raise AktoConfigError(name, raw, f"a whole number from {minimum} to {maximum}")
    return value


def _parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise AktoConfigError(name, raw, " or ".join(choices))
    return value


def _parse_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port  # both raise on a malformed netloc
    except ValueError:
        raise AktoConfigError(name, raw, "an http:// or https:// URL with a host") from None
    if parts.scheme not in ("http", "https") or not host:
        raise AktoConfigError(name, raw, "an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise AktoConfigError(name, raw, "a base URL without query or fragment")
    return value


def _parse_path(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value) or "?" in value or "#" in value:
        raise AktoConfigError(name, raw, "a URL path such as /mcp (no spaces, query or fragment)")
    return value


#: The OpenTelemetry GenAI content switch; the package's own is AKTO_CAPTURE_CONTENT.
_OTEL_CAPTURE_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def _parse_capture(name: str, raw: str) -> CaptureMode:
    """A content-capture mode. ``AKTO_CAPTURE_CONTENT`` (and the ``capture_content``
    argument) take a boolean, true meaning ``SPAN_ONLY``; the OpenTelemetry variable
    takes the enum only and reads a boolean as ``NO_CONTENT`` with a warning, as
    opentelemetry-util-genai does: content never leaves the process on a guess."""
    value = raw.strip()
    lowered = value.lower()
    if lowered in _TRUE or lowered in _FALSE:
        if name != _OTEL_CAPTURE_VAR:
            return "SPAN_ONLY" if lowered in _TRUE else "NO_CONTENT"
        if lowered in _TRUE:
            _log.warning(
                "%s=%s is read as NO_CONTENT: it takes NO_CONTENT, SPAN_ONLY, EVENT_ONLY or "
                "SPAN_AND_EVENT (or set AKTO_CAPTURE_CONTENT=true)",
                name,
                value,
            )
        return "NO_CONTENT"
    upper = value.upper()
    for mode in _CAPTURE_MODES:
        if upper == mode:
            return mode
    raise AktoConfigError(name, raw, "true, false, " + ", ".join(_CAPTURE_MODES))


#: The OpenTelemetry semconv opt-in; the package's old switch is read after it.
_OTEL_OPT_IN_VAR = "OTEL_SEMCONV_STABILITY_OPT_IN"
_OLD_SEMCONV_VAR = "AKTO_SEMCONV_SECURITY"
_GEN_AI_LATEST = "gen_ai_latest_experimental"


def _parse_semconv_opt_in(name: str, raw: str) -> bool:
    """Whether the latest experimental GenAI conventions are on.

    ``OTEL_SEMCONV_STABILITY_OPT_IN`` is a comma-separated list read as the
    opentelemetry-python-contrib instrumentations read it (each item stripped, exact
    match): on when it holds ``gen_ai_latest_experimental``. The old
    ``AKTO_SEMCONV_SECURITY`` (and the ``semconv_security`` argument) take a boolean;
    the variable is deprecated and says so.
    """
    if name == _OTEL_OPT_IN_VAR:
        return _GEN_AI_LATEST in [item.strip() for item in raw.split(",")]
    if name == _OLD_SEMCONV_VAR:
        _log.warning(
            "%s is deprecated: set %s=%s (it now also gives the revised draft's names)",
            _OLD_SEMCONV_VAR,
            _OTEL_OPT_IN_VAR,
            _GEN_AI_LATEST,
        )
    return _parse_bool(name, raw)


def _parse_log_level(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value == "WARN":
        value = "WARNING"
    if value not in _LOG_LEVELS:
        raise AktoConfigError(name, raw, ", ".join(_LOG_LEVELS))
    return value


def _parse_existing_file(name: str, raw: str) -> str:
    value = os.path.expanduser(raw.strip())
    if not value:
        return ""
    if not os.path.isfile(value):
        raise AktoConfigError(name, raw, "the path of an existing CA bundle file (PEM)")
    return value


def _parse_patterns(name: str, raw: str) -> tuple[str, ...]:
    return _check_patterns(name, tuple(p for p in (part.strip() for part in raw.split(",")) if p))


def _check_patterns(name: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise AktoConfigError(
                name, pattern, f"comma-separated regular expressions ({exc})"
            ) from None
    return patterns


@dataclass(frozen=True)
class _Var:
    """How one setting is read from the environment."""

    names: tuple[str, ...]
    parse: Callable[[str, str], Any]


def _var(*names: str, parse: Callable[[str, str], Any]) -> _Var:
    """The variable(s) a setting is read from, first wins, and its parser."""
    return _Var(names, parse)


def _stripped(_name: str, raw: str) -> str:
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """Everything akto_otel needs to know, validated once.

    Field names are the arguments of :meth:`from_env` and of
    ``AktoGuardrails(...)``; :meth:`environment_variables` names the variable(s)
    each one is read from.
    """

    ingestion_url: str = ""
    sync_mode: bool = True
    akto_host: str = "api.anthropic.com"
    timeout: float = 5.0
    token: str = field(default="", repr=False)
    mode: Mode = "argus"
    connector: str = "claude_agent_sdk"
    connector_value: str = "claude_agent_sdk"
    mcp_ingest_path: str = "/mcp"
    non_mcp_tool_path_prefix: str = "/tool"
    agent_id: str = ""
    log_dir: str = ""
    log_level: str = "INFO"
    log_payloads: bool = False
    ssl_cert_path: str = ""
    # Ours, beyond the reference connector.
    fail_mode: FailMode = "open"
    max_stop_regenerations: int = 2
    delivery: DeliveryMode = "batch"
    observe_delivery: ObserveDeliveryMode = "batch"
    tool_response_guardrails: bool = False
    approval_decision: Literal["ask", "deny"] = "deny"
    session_headers: bool = True
    agent_name: str = "claude-agent"
    capture_content: CaptureMode = "NO_CONTENT"
    capture_max_length: int = 4096
    redact_patterns: tuple[str, ...] = ()
    semconv_security: bool = False
    guardrail_spans: bool = True
    spans: SpanMode = "full"
    max_sessions: int = 10_000
    session_idle_timeout: float = 3600.0
    max_response_bytes: int = 1 << 20
    export_retry_timeout: float = 30.0
    export_shutdown_timeout: float = 10.0
    export_queue_size: int = 8192
    judge_window_overlap: int = 16 * 1024
    judge_max_chars: int = 8 * 1024 * 1024
    hold_answers: bool = True
    strict_settings: bool = False

    def __post_init__(self) -> None:
        # Arguments are checked by the parser of the variable they stand for, so
        # AktoGuardrails(sync_mode="false") means what AKTO_SYNC_MODE=false means.
        problems: list[AktoConfigError] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                object.__setattr__(self, f.name, f.default)
                continue
            try:
                object.__setattr__(self, f.name, _coerce(f.name, value, f.default))
            except AktoConfigError as exc:
                problems.append(exc)
        if problems:
            raise AktoConfigError.combine(problems)
        # The one combination no request can carry (akto_otel.credentials).
        from akto_otel.credentials import check_credentials

        check_credentials(self.ingestion_url, self.token)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); ``overrides`` win.

        Keyword values are parsed like the environment's (``sync_mode="false"`` is
        False); ``None`` means "not given". Every bad value, from either source, is
        reported in one :class:`AktoConfigError`; an unknown keyword is a TypeError.

        Example::

            Settings.from_env({"AKTO_TIMEOUT": "2"}, fail_mode="closed")
        """
        source = os.environ if env is None else env
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = set(overrides) - set(fields)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        given = {k: v for k, v in overrides.items() if v is not None}
        values: dict[str, Any] = {}
        problems: list[AktoConfigError] = []
        for attr, var in _ENV_VARS.items():
            if attr in given:
                continue
            for name in var.names:
                raw = source.get(name)
                if raw is not None and (raw.strip() or attr == "agent_id"):
                    try:
                        values[attr] = var.parse(name, raw)
                    except AktoConfigError as exc:
                        problems.append(exc)
                    break
        for attr, value in given.items():
            try:
                values[attr] = _coerce(attr, value, fields[attr].default)
            except AktoConfigError as exc:
                problems.append(exc)
        if values.get("strict_settings") is True:
            problems.extend(unknown_name_errors(source))
        if problems:
            raise AktoConfigError.combine(problems)
        return cls(**values)

    # Derived values the wire format needs.
    @property
    def context_source(self) -> str:
        """The records' ``contextSource``: ``ENDPOINT`` in atlas mode, else ``AGENTIC``."""
        return "ENDPOINT" if self.mode == "atlas" else "AGENTIC"

    @property
    def vxlan_id(self) -> str:
        """The records' ``akto_vxlan_id``: ``AKTO_AGENT_ID``, else ``"0"``."""
        return self.agent_id or "0"

    @property
    def capture_on_spans(self) -> bool:
        """Whether content goes on spans as attributes."""
        return self.capture_content in ("SPAN_ONLY", "SPAN_AND_EVENT")

    @property
    def capture_in_events(self) -> bool:
        """Whether content goes in span events."""
        return self.capture_content in ("EVENT_ONLY", "SPAN_AND_EVENT")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``, each checked like :meth:`from_env`'s keywords."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        # The token is never shown, nor credentials in the URL (user:password@).
        from akto_otel.redaction import redact_url

        shown = {
            f.name: redact_url(self.ingestion_url)
            if f.name == "ingestion_url"
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.repr
        }
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @staticmethod
    def environment_variables() -> dict[str, tuple[str, ...]]:
        """Setting name -> the environment variables read for it, first wins."""
        return {attr: var.names for attr, var in _ENV_VARS.items()}


_ENV_VARS: dict[str, _Var] = {
    "ingestion_url": _var("AKTO_DATA_INGESTION_URL", parse=_parse_url),
    "sync_mode": _var("AKTO_SYNC_MODE", parse=_parse_bool),
    "akto_host": _var("AKTO_HOST", parse=_stripped),
    "timeout": _var(
        "AKTO_TIMEOUT", parse=lambda n, r: _parse_float(n, r, minimum=0.0, maximum=600.0)
    ),
    "token": _var("AKTO_API_TOKEN", "AKTO_TOKEN", parse=_stripped),
    "mode": _var("AKTO_MODE", parse=lambda n, r: _parse_choice(n, r, ("argus", "atlas"))),
    "connector": _var("AKTO_CONNECTOR", parse=_stripped),
    "connector_value": _var("AKTO_CONNECTOR_VALUE", parse=_stripped),
    "mcp_ingest_path": _var("AKTO_MCP_INGEST_PATH", parse=_parse_path),
    "non_mcp_tool_path_prefix": _var("AKTO_NON_MCP_TOOL_PATH_PREFIX", parse=_parse_path),
    "agent_id": _var("AKTO_AGENT_ID", parse=_stripped),
    "log_dir": _var("AKTO_LOG_DIR", parse=_stripped),
    "log_level": _var("AKTO_LOG_LEVEL", parse=_parse_log_level),
    "log_payloads": _var("AKTO_LOG_PAYLOADS", parse=_parse_bool),
    "ssl_cert_path": _var("AKTO_SSL_CERT_PATH", parse=_parse_existing_file),
    "fail_mode": _var("AKTO_FAIL_MODE", parse=lambda n, r: _parse_choice(n, r, ("open", "closed"))),
    "max_stop_regenerations": _var(
        "AKTO_MAX_STOP_REGENERATIONS", parse=lambda n, r: _parse_int(n, r, minimum=0, maximum=100)
    ),
    "delivery": _var(
        "AKTO_DELIVERY", parse=lambda n, r: _parse_choice(n, r, ("batch", "proxy", "otlp"))
    ),
    "observe_delivery": _var(
        "AKTO_OBSERVE_DELIVERY", parse=lambda n, r: _parse_choice(n, r, ("batch", "proxy"))
    ),
    "tool_response_guardrails": _var("AKTO_TOOL_RESPONSE_GUARDRAILS", parse=_parse_bool),
    "approval_decision": _var(
        "AKTO_APPROVAL_DECISION", parse=lambda n, r: _parse_choice(n, r, ("ask", "deny"))
    ),
    "session_headers": _var("AKTO_SESSION_HEADERS", parse=_parse_bool),
    "agent_name": _var("AKTO_AGENT_NAME", "OTEL_SERVICE_NAME", parse=_stripped),
    "capture_content": _var("AKTO_CAPTURE_CONTENT", _OTEL_CAPTURE_VAR, parse=_parse_capture),
    "capture_max_length": _var(
        "AKTO_CAPTURE_MAX_LENGTH", parse=lambda n, r: _parse_int(n, r, minimum=16, maximum=1 << 20)
    ),
    "redact_patterns": _var("AKTO_REDACT_PATTERNS", parse=_parse_patterns),
    "semconv_security": _var(_OTEL_OPT_IN_VAR, _OLD_SEMCONV_VAR, parse=_parse_semconv_opt_in),
    "guardrail_spans": _var("AKTO_GUARDRAIL_SPANS", parse=_parse_bool),
    "spans": _var("AKTO_SPANS", parse=lambda n, r: _parse_choice(n, r, ("full", "guard"))),
    "max_sessions": _var(
        "AKTO_MAX_SESSIONS", parse=lambda n, r: _parse_int(n, r, minimum=1, maximum=10_000_000)
    ),
    "export_retry_timeout": _var(
        "AKTO_EXPORT_RETRY_TIMEOUT",
        parse=lambda n, r: _parse_float(n, r, minimum=-0.001, maximum=3600.0),
    ),
    "export_shutdown_timeout": _var(
        "AKTO_EXPORT_SHUTDOWN_TIMEOUT",
        parse=lambda n, r: _parse_float(n, r, minimum=0.0, maximum=600.0),
    ),
    "export_queue_size": _var(
        "AKTO_EXPORT_QUEUE_SIZE", parse=lambda n, r: _parse_int(n, r, minimum=1, maximum=10_000_000)
    ),
    "session_idle_timeout": _var(
        "AKTO_SESSION_IDLE_TIMEOUT",
        parse=lambda n, r: _parse_float(n, r, minimum=0.0, maximum=7 * 86400.0),
    ),
    "judge_window_overlap": _var(
        "AKTO_JUDGE_WINDOW_OVERLAP",
        parse=lambda n, r: _parse_int(n, r, minimum=1024, maximum=64 * 1024),
    ),
    "judge_max_chars": _var(
        "AKTO_JUDGE_MAX_CHARS",
        parse=lambda n, r: _parse_int(n, r, minimum=1 << 20, maximum=1 << 30),
    ),
    "hold_answers": _var("AKTO_HOLD_ANSWERS", parse=_parse_bool),
    "strict_settings": _var("AKTO_STRICT_SETTINGS", parse=_parse_bool),
}

# Settings with no environment variable, checked the same way when given as arguments.
_ARG_ONLY: dict[str, _Var] = {
    "max_response_bytes": _var(parse=lambda n, r: _parse_int(n, r, minimum=1, maximum=1 << 30)),
}


def _label(attr: str) -> str:
    """How an argument is named in errors: with the variable that would set it."""
    var = _ENV_VARS.get(attr)
    return f"{attr} ({var.names[0]})" if var is not None and var.names else attr


def _coerce(attr: str, value: Any, default: Any) -> Any:
    """``value`` given for ``attr`` as an argument, checked like its variable's text."""
    var = _ENV_VARS.get(attr) or _ARG_ONLY.get(attr)
    label = _label(attr)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(default, tuple):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return _check_patterns(label, tuple(value))
        if not isinstance(value, str):
            raise AktoConfigError(
                label,
                repr(value),
                "a sequence of regular expressions (or a comma-separated string)",
            )
    elif isinstance(default, str) and not isinstance(value, str):
        raise AktoConfigError(label, repr(value), "a string")
    if var is None:
        return value
    if isinstance(value, str):
        return var.parse(label, value)
    # A number or bool: its text goes through the same parser (True is no timeout).
    return var.parse(label, str(value))


#: The reference connector's unprefixed names, setting -> variable. Only the drop-in
#: ``create_hooks()`` reads them (:func:`connector_overrides`); the ``AKTO_`` name wins.
CONNECTOR_NAMES: dict[str, str] = {
    "mode": "MODE",
    "mcp_ingest_path": "MCP_INGEST_PATH",
    "non_mcp_tool_path_prefix": "NON_MCP_TOOL_PATH_PREFIX",
    "agent_id": "AGENT_ID",
    "log_dir": "LOG_DIR",
    "log_level": "LOG_LEVEL",
    "log_payloads": "LOG_PAYLOADS",
    "ssl_cert_path": "SSL_CERT_PATH",
}

#: ``AKTO_*`` names that are not settings but are read elsewhere (the collector
#: configs, the test and benchmark knobs): never reported as unknown.
_OTHER_AKTO_NAMES = frozenset(
    {
        "AKTO_OTLP_URL",
        "AKTO_GATEWAY_1",
        "AKTO_GATEWAY_2",
        "AKTO_GATEWAY_QUEUE_DIR",
        "AKTO_GATEWAY_QUEUE_SIZE",
        "AKTO_GATEWAY_TLS_INSECURE",
        "AKTO_AGENT_QUEUE_DIR",
        "AKTO_FUZZ_EXAMPLES",
        "AKTO_SOAK_SESSIONS",
        "AKTO_OTEL_CACHE",
        "AKTO_OTEL_WRITE_PICTURES",
        "AKTO_OTEL_WRITE_DOCS",
    }
)


def _known_names() -> frozenset[str]:
    return frozenset(n for var in _ENV_VARS.values() for n in var.names) | _OTHER_AKTO_NAMES


def unknown_names(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Each ``AKTO_*`` variable of ``env`` (default ``os.environ``) akto_otel does not
    read, with the closest known name (``""`` when none is close), sorted.

    ``AKTO_FAILMODE=closed`` is silently nothing otherwise: fail-open would apply.
    """
    source = os.environ if env is None else env
    known = _known_names()
    settings_names = sorted(n for var in _ENV_VARS.values() for n in var.names)
    found: list[tuple[str, str]] = []
    for name in sorted(source):
        if name.upper().startswith("AKTO_") and name not in known:
            close = _did_you_mean(name, settings_names)
            found.append((name, close))
    return found


def unknown_name_message(name: str, suggestion: str) -> str:
    """The warning (or error) line for an unknown ``AKTO_*`` name; the value is never shown."""
    return (
        f"{name} is not a variable akto_otel reads{suggestion}: it is ignored "
        "(AKTO_STRICT_SETTINGS=true makes it an error)"
    )


def unknown_name_errors(env: Mapping[str, str]) -> list[AktoConfigError]:
    """One :class:`AktoConfigError` per unknown ``AKTO_*`` name of ``env`` (strict mode)."""
    errors = []
    for name, suggestion in unknown_names(env):
        # The value may be a secret under a misspelt name (AKTO_APITOKEN): not shown.
        errors.append(
            AktoConfigError(name, "(not shown)", f"a variable akto_otel reads{suggestion}")
        )
    return errors


def connector_overrides(env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The reference connector's unprefixed variables as keyword arguments, for
    ``create_hooks()``: (arguments, warnings).

    A variable whose ``AKTO_`` name is set is skipped (the prefixed one wins); a bad
    value is a warning and the default stands: an app's own ``MODE=production``
    never stops the guard.
    """
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for attr, name in CONNECTOR_NAMES.items():
        raw = source.get(name)
        if raw is None or not (raw.strip() or attr == "agent_id"):
            continue
        own = _ENV_VARS[attr].names[0]
        if (source.get(own) or "").strip():
            continue
        try:
            values[attr] = _ENV_VARS[attr].parse(name, raw)
        except AktoConfigError as exc:
            warnings.append(
                f"{name}={_short(raw)!r} is not a value the guard can use "
                f"(expected {exc.accepted}): ignored, the default "
                f"{getattr(Settings(), attr)!r} stands (set {own} to choose)"
            )
    return values, warnings


def _short(raw: str) -> str:
    return raw if len(raw) <= 40 else raw[:37] + "..."
