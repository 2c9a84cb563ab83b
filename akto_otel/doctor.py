"""``akto-otel doctor``: can this environment guard an agent?

It reads the settings the way the library does, lists them by the environment
variable a user sets, reports every bad value at once, checks the OpenTelemetry
exporters as ``akto_otel.configure()`` would build them, then asks Akto twice:
``GET /healthCheck`` (is it Akto, is it up?) and an authenticated no-op,
``POST /api/ingestData`` with an empty batch (does it take the token?). Akto's
data-ingestion service checks the token on ``/api/*`` only (its ``AuthFilter``),
so the health check alone cannot tell a good token from a wrong one. Every
failure gets one line with its cause. The token and any password in the Akto URL
are never printed.

Exit codes (:data:`EXIT_CODES`): 0 ready; 1 Akto is not usable (URL not set,
unreachable, token missing or rejected, not Akto's service); 2 a setting is
invalid (the guard or ``configure()`` would refuse to start).

Usage::

    akto-otel doctor

    from akto_otel.doctor import run_doctor
    code = run_doctor({"AKTO_DATA_INGESTION_URL": "http://127.0.0.1:18090"})
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from akto_otel.config import Settings, unknown_name_message, unknown_names
from akto_otel.contract import health_check_url, ingest_data_url
from akto_otel.credentials import akto_auth
from akto_otel.errors import AktoConfigError
from akto_otel.guardrails import environment_proxy, tls_context
from akto_otel.version import __version__

__all__ = ["EXIT_AKTO_UNUSABLE", "EXIT_BAD_SETTINGS", "EXIT_CODES", "EXIT_OK", "run_doctor"]

EXIT_OK = 0
EXIT_AKTO_UNUSABLE = 1
EXIT_BAD_SETTINGS = 2

#: Exit code -> meaning, as documented in docs/troubleshooting.md.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ready: settings valid, Akto answers and accepts the token",
    EXIT_AKTO_UNUSABLE: (
        "Akto is not usable: URL not set, unreachable, token missing or rejected, "
        "or the URL is not Akto's data-ingestion service"
    ),
    EXIT_BAD_SETTINGS: (
        "a setting is invalid (the guard or configure() would refuse to start) or an "
        "AKTO_* variable is unknown (the guard ignores it)"
    ),
}

_SECRET_ATTRS = frozenset({"token"})
_PROBE_BODY = b'{"batchData": []}'


@dataclass(frozen=True)
class Finding:
    """One line of the report.

    ``ok`` False is a problem; ``invalid`` marks a setting the library would refuse
    (exit 2); ``warning`` a problem that does not stop the guard (exit unchanged).
    """

    ok: bool
    text: str
    invalid: bool = False
    warning: bool = False

    @property
    def mark(self) -> str:
        return "ok  " if self.ok else "WARN" if self.warning else "FAIL"


# ------------------------------------------------------------------ settings (pure)


def _in_effect(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Setting -> (variable, raw value) for each setting the environment sets.

    Mirrors ``Settings.from_env``: the first variable that is set and not blank wins
    (``AKTO_AGENT_ID`` counts even when blank).
    """
    chosen: dict[str, tuple[str, str]] = {}
    for attr, names in Settings.environment_variables().items():
        for name in names:
            raw = env.get(name)
            if raw is not None and (raw.strip() or attr == "agent_id"):
                chosen[attr] = (name, raw)
                break
    return chosen


def setting_problems(env: Mapping[str, str]) -> tuple[list[str], set[str]]:
    """Every invalid variable at once: (one message each, the names of the bad ones)."""
    problems: list[str] = []
    bad: set[str] = set()
    for attr, (name, raw) in _in_effect(env).items():
        shown = redact_url(raw) if attr == "ingestion_url" else raw
        try:
            value = getattr(Settings.from_env({name: raw}), attr)
            if attr == "ingestion_url" and value:
                _check_url(value)
        except AktoConfigError as exc:
            problems.append(str(AktoConfigError(name, shown, exc.accepted)))
            bad.add(name)
        except ValueError as exc:  # not (yet) an AktoConfigError in config.py
            problems.append(str(AktoConfigError(name, shown, f"a valid URL ({exc})")))
            bad.add(name)
    # Unknown AKTO_* names have their own section (an error only with AKTO_STRICT_SETTINGS).
    bad_or_unknown = bad | {name for name, _ in unknown_names(env)}
    try:
        Settings.from_env({k: v for k, v in env.items() if k not in bad_or_unknown})
    except AktoConfigError as exc:  # a combination no single variable shows
        problems.append(redact_url(str(exc)))
        bad.update(p.name for p in exc.problems)
    except ValueError as exc:
        problems.append(redact_url(str(exc)))
    return problems, bad


def _check_url(url: str) -> None:
    """Raise ValueError for what Settings lets through but no request can use."""
    parts = urlsplit(url)
    if parts.port is not None and parts.port <= 0:  # .port raises for 99999 or "abc"
        raise ValueError("port 0")
    if not parts.hostname:
        raise ValueError("no host name")


_USERINFO = re.compile(r"^(?P<head>[^:/?#]+://[^/?#@]*?:)(?P<password>[^/?#@]*)@")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (user names are kept).

    Works on text that is not a valid URL too (it is for error messages as well).
    """
    return _USERINFO.sub(lambda m: f"{m.group('head')}***@", url.strip(), count=1)


def _url_password(url: str) -> str:
    match = _USERINFO.match(url.strip())
    return match.group("password") if match else ""


def _shown(attr: str, value: Any) -> str:
    if attr in _SECRET_ATTRS:
        return f"(set, {len(value)} characters)" if value else "(not set)"
    if attr == "ingestion_url":
        return redact_url(value) if value else "(not set)"
    if isinstance(value, tuple):
        return ", ".join(value) or "(none)"
    return str(value)


def settings_lines(
    settings: Settings, env: Mapping[str, str], bad: frozenset[str] = frozenset()
) -> list[str]:
    """One line per setting: the variable a user sets, the value in effect, its source.

    A variable in ``bad`` is shown as invalid (the default stands in for it here).
    """
    chosen = _in_effect(env)
    lines: list[str] = []
    for attr, names in Settings.environment_variables().items():
        name, source = (chosen[attr][0], "env") if attr in chosen else (names[0], "default")
        if name in bad:
            shown = "(set, but invalid: see below)"
            source = "env"
        else:
            shown = _shown(attr, getattr(settings, attr))
        lines.append(f"{name:52} {shown or '(empty)'}  [{source}]")
    return lines


# --------------------------------------------------------- OpenTelemetry exporters


def otel_findings(env: Mapping[str, str], *, logs: bool = False) -> list[Finding]:
    """Where ``configure()`` would send spans and metrics, or why it would refuse.

    ``logs`` (``AKTO_DELIVERY=otlp``): the Akto records leave as OTLP logs, so the
    logs exporter is planned and checked too, as ``configure()`` builds it for an app
    with no ``LoggerProvider`` of its own; ``OTEL_LOGS_EXPORTER=none`` fails (the
    records would go nowhere) and ``console`` is a warning (they never reach Akto).
    """
    from akto_otel.configure import exporter_plan, otlp_endpoint

    try:
        plan = exporter_plan(env, logs=logs)
    except AktoConfigError as exc:
        return [Finding(False, f"{exc} (configure() would raise)", invalid=True)]
    findings: list[Finding] = []
    for signal in ("traces", "metrics", "logs") if logs else ("traces", "metrics"):
        planned = [p for p in plan if p.signal == signal]
        if not planned:
            unexported = f"{signal}: not exported (no OTEL_{signal.upper()}_EXPORTER and no "
            unexported += "OTEL_EXPORTER_OTLP_ENDPOINT)"
            if signal == "traces":
                unexported += "; hook spans still reach Akto"
            findings.append(Finding(True, unexported))
            continue
        for exporter in planned:
            if exporter.kind == "console" and signal == "logs":
                findings.append(_console_logs_finding())
                continue
            if exporter.kind == "console":
                findings.append(Finding(True, f"{signal}: console (printed to stdout)"))
                continue
            grpc = exporter.protocol == "grpc"
            endpoint, _default = otlp_endpoint(env, signal, grpc)
            findings.append(_otlp_finding(signal, exporter.protocol, endpoint))
    return findings


def _console_logs_finding() -> Finding:
    text = "logs: console (printed to stdout): the Akto records (AKTO_DELIVERY=otlp) never "
    text += "reach Akto; set OTEL_LOGS_EXPORTER=otlp"
    return Finding(False, text, warning=True)


def _otlp_finding(signal: str, protocol: str, endpoint: str) -> Finding:
    grpc = protocol == "grpc"
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 4317 if grpc else 4318)
    shown = f"{signal}: otlp {protocol} -> {redact_url(endpoint)}"
    if signal == "logs":
        shown += " (the Akto records, AKTO_DELIVERY=otlp)"
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as exc:
        cause = _socket_cause(exc, host, port)
        return Finding(False, f"{shown}: {cause}; it would be retried, then lost", warning=True)
    return Finding(True, shown)


# -------------------------------------------------------------------- Akto (I/O)


def _socket_cause(exc: BaseException, host: str, port: int) -> str:
    """One line naming why a connection failed (pure: walks the exception chain)."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS: the certificate of {host} is not trusted ({cause.verify_message}); "
                "set AKTO_SSL_CERT_PATH to the CA bundle that signed it"
            )
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {host}:{port} failed ({cause.reason or cause})"
        if isinstance(cause, socket.gaierror):
            return f"DNS: cannot resolve {host!r} ({cause.strerror})"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused: nothing listens on {host}:{port}"
        if isinstance(cause, (TimeoutError, socket.timeout, httpx.TimeoutException)):
            return f"timeout: {host}:{port} did not answer in time"
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return f"cannot connect to {host}:{port} ({type(exc).__name__})"


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def judge_health(status: int, content_type: str, body: bytes) -> Finding:
    """``GET /healthCheck``'s answer -> a finding (pure)."""
    if status == 200 and _is_json_object(body):
        return Finding(True, "answers (200, JSON)")
    if status == 200:
        kind = content_type.split(";")[0] or "no content type"
        return Finding(
            False,
            f"wrong content: 200 with {kind} that is not Akto's JSON; the URL points at "
            "another service (a proxy's login page, the dashboard?)",
        )
    if status == 404:
        return Finding(
            False,
            "404 Not Found: no Akto here; AKTO_DATA_INGESTION_URL must be the base URL of "
            "Akto's data-ingestion service (no path such as /api)",
        )
    if status in (401, 403):
        return Finding(
            False,
            f"{status} on /healthCheck, which Akto serves without a token: something in "
            "front of Akto (a proxy, a gateway) requires authentication",
        )
    if status >= 500:
        return Finding(False, f"{status}: Akto (or a proxy in front of it) is failing")
    return Finding(False, f"unexpected HTTP {status} from /healthCheck")


def judge_auth(status: int, body: bytes, token_variable: str | None) -> Finding:
    """The authenticated no-op's answer -> a finding (pure).

    ``token_variable`` names the variable that holds the token, None when none is set.
    """
    if status == 200 and _is_json_object(body):
        if token_variable is None:
            return Finding(True, "accepted without a token (this Akto does not require one)")
        return Finding(True, f"token accepted ({token_variable})")
    if status in (401, 403):
        if token_variable is None:
            return Finding(
                False, f"{status}: this Akto requires a token and none is set: set AKTO_API_TOKEN"
            )
        return Finding(False, f"{status}: Akto rejected the token in {token_variable}")
    if status == 404:
        return Finding(
            False, "404 on /api/ingestData: the URL is not Akto's data-ingestion service"
        )
    if status == 200:
        return Finding(False, "wrong content: 200 but not Akto's JSON answer")
    if status >= 500:
        return Finding(False, f"{status}: Akto (or a proxy in front of it) is failing")
    return Finding(False, f"unexpected HTTP {status} from /api/ingestData")


def _request(
    client: httpx.Client,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    proxy: str | None = None,
) -> tuple[int, str, bytes] | str:
    """(status, content type, first 64 KiB of the body), or the one-line cause of failure.

    With ``proxy``, a connection failure names the proxy, the host actually dialled.
    """
    parts = urlsplit(proxy or url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with client.stream(method, url, headers=headers, content=body) as response:
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= 1 << 16:
                    break
            return response.status_code, response.headers.get("content-type", ""), data
    except httpx.TimeoutException:
        return f"timeout: no answer within AKTO_TIMEOUT ({client.timeout.read:g} s)"
    except (httpx.HTTPError, OSError) as exc:
        cause = _socket_cause(exc, parts.hostname or "", port)
        return f"{cause} (the proxy)" if proxy else cause
    except UnicodeError:
        return "the token has characters an HTTP header cannot carry (ASCII only)"
    except Exception as exc:  # a diagnostic must report, never crash
        return f"cannot send the request ({type(exc).__name__})"


def akto_findings(settings: Settings, env: Mapping[str, str]) -> list[Finding]:
    """Ask Akto: is it up and Akto (``/healthCheck``), does it take the token?"""
    base = settings.ingestion_url
    token_variable = None
    if settings.token:
        token_variable = _in_effect(env).get("token", ("AKTO_API_TOKEN", ""))[0]
    # The same rule as the verdict and delivery clients (akto_otel.credentials): the URL
    # dialled carries no user:password@, the Authorization header the token or basic auth.
    auth = akto_auth(base, settings.token)
    headers = {"Content-Type": "application/json", **auth.headers}
    if auth.form == "basic":
        token_variable = "AKTO_DATA_INGESTION_URL user:password, sent as basic auth"
    try:
        verify = tls_context(settings)
    except (OSError, ssl.SSLError) as exc:
        return [Finding(False, f"AKTO_SSL_CERT_PATH: cannot load the CA bundle ({exc})")]
    findings: list[Finding] = []
    # The proxy the guard itself uses (urllib's reading of HTTPS_PROXY/NO_PROXY).
    proxy = environment_proxy(base)
    if proxy:
        findings.append(Finding(True, f"through the proxy {redact_url(proxy)} (NO_PROXY bypasses)"))
    plain = auth.base_url
    with httpx.Client(
        verify=verify,
        timeout=settings.timeout,
        follow_redirects=False,
        proxy=proxy,
        trust_env=False,
    ) as client:
        health = _request(client, "GET", health_check_url(plain), dict(auth.headers), None, proxy)
        label = f"GET  {redact_url(health_check_url(base))}"
        if isinstance(health, str):
            return [*findings, Finding(False, f"{label}: {health}")]
        verdict = judge_health(*health)
        findings.append(Finding(verdict.ok, f"{label}: {verdict.text}"))
        if not verdict.ok:
            return findings
        probe = _request(client, "POST", ingest_data_url(plain), headers, _PROBE_BODY, proxy)
        label = f"POST {redact_url(ingest_data_url(base))} (empty batch, authenticated)"
        if isinstance(probe, str):
            findings.append(Finding(False, f"{label}: {probe}"))
        else:
            verdict = judge_auth(probe[0], probe[2], token_variable)
            findings.append(Finding(verdict.ok, f"{label}: {verdict.text}"))
    return findings


# ------------------------------------------------------------ Claude Code hook server


def claude_settings_files(env: Mapping[str, str], cwd: Path) -> list[Path]:
    """The Claude Code settings files a CLI started in ``cwd`` reads (user, project, local)."""
    config = env.get("CLAUDE_CONFIG_DIR", "").strip()
    user = Path(config) if config else Path(env.get("HOME") or Path.home()) / ".claude"
    found = [user / "settings.json", cwd / ".claude" / "settings.json"]
    found.append(cwd / ".claude" / "settings.local.json")
    return [path for path in found if path.is_file()]


def _forwarder_socket(hook: Any) -> str:
    """The socket a command hook running akto-otel's forwarder sends to, else ''."""
    import shlex

    from akto_otel.serve import FORWARDER

    if not isinstance(hook, dict):
        return ""
    command = hook.get("command")
    if hook.get("type") != "command" or not isinstance(command, str):
        return ""
    try:
        argv = shlex.split(command)
    except ValueError:
        return ""
    if not any(Path(arg).name == FORWARDER.name for arg in argv) or "--socket" not in argv:
        return ""
    index = argv.index("--socket") + 1
    return argv[index] if index < len(argv) else ""


def _served_hooks(path: Path) -> dict[str, dict[str, Any]]:
    """Event -> the hook in ``path`` that sends it to ``akto-otel serve``: an HTTP
    hook with the secret header, or a command hook running the forwarder."""
    from akto_otel.serve import SECRET_HEADER

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    hooks = data.get("hooks") if isinstance(data, dict) else None
    served: dict[str, dict[str, Any]] = {}
    for event, entries in (hooks if isinstance(hooks, dict) else {}).items():
        for entry in entries if isinstance(entries, list) else []:
            for hook in entry.get("hooks", []) if isinstance(entry, dict) else []:
                headers = hook.get("headers") if isinstance(hook, dict) else None
                if (isinstance(headers, dict) and SECRET_HEADER in headers) or _forwarder_socket(
                    hook
                ):
                    served[str(event)] = hook
    return served


def claude_code_findings(settings: Settings, env: Mapping[str, str], cwd: Path) -> list[Finding]:
    """Warnings only: whether the settings Claude Code reads here send the judging
    events to ``akto-otel serve``, reach it, and arm the events its fail mode blocks
    (the running server's, else this environment's)."""
    from akto_otel.decision import JUDGING_HOOKS, Rules
    from akto_otel.serve import JUDGED_AS, SECRET_HEADER, blocking_events

    ours = set(blocking_events(Rules.from_settings(settings)))
    findings: list[Finding] = []
    for path in claude_settings_files(env, cwd):
        served = _served_hooks(path)
        if not served:
            continue
        findings.append(Finding(True, f"{path}: sends {len(served)} events to akto-otel serve"))
        missing = [e for e in (*JUDGING_HOOKS, *JUDGED_AS) if e not in served]
        if missing:
            findings.append(Finding(False, f"{path}: not sent: {', '.join(missing)}", warning=True))
        blocking = set(ours)
        servers = {
            (str(h.get("url", "")).rsplit("/hook/", 1)[0], str(h["headers"][SECRET_HEADER]))
            for h in served.values()
            if isinstance(h.get("headers"), dict)
        }
        sockets = {_forwarder_socket(h) for h in served.values()} - {""}
        checks: list[tuple[Finding, dict[str, Any] | None]] = []
        for base, secret in sorted(servers):
            squatter = _port_owner(base)
            if squatter is not None:
                checks.append((squatter, None))
            checks.append(_server_health(base, secret))
        checks += [_socket_health(Path(socket_path)) for socket_path in sorted(sockets)]
        for finding, health in checks:
            findings.append(finding)
            if health is not None and isinstance(health.get("blocking_events"), list):
                blocking = {str(e) for e in health["blocking_events"]}
        unarmed = [e for e in sorted(blocking) if served.get(e, {}).get("onFailure") != "block"]
        unarmed = [e for e in unarmed if e in served]
        if unarmed:
            findings.append(
                Finding(
                    False,
                    f"{path}: without onFailure block in fail-closed mode: {', '.join(unarmed)} "
                    "(a server that is down lets them through; rerun akto-otel claude-settings)",
                    warning=True,
                )
            )
    if not findings:
        findings.append(
            Finding(
                False,
                "no Claude Code settings here send hooks to akto-otel serve "
                "(only needed to guard the claude CLI itself: akto-otel claude-settings)",
                warning=True,
            )
        )
    return findings


def _port_owner(base: str) -> Finding | None:
    """A warning when the loopback port of ``base`` is held by another user's process
    (``/proc/net/tcp``): it, not akto-otel serve, may be receiving the hooks."""
    from akto_otel.peers import is_loopback, tcp_listener_uids

    try:
        parts = urlsplit(base)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return None
    if port is None or not hasattr(os, "geteuid"):
        return None
    if host != "localhost" and not is_loopback(host):
        return None
    others = sorted(uid for uid in tcp_listener_uids(port) if uid != os.geteuid())
    if not others:
        return None
    return Finding(
        False,
        f"port {port} is held by a process of another user (uid "
        f"{', '.join(map(str, others))}): it may receive the hooks and the secret; "
        "stop it, or use akto-otel claude-settings --transport command",
        warning=True,
    )


def _socket_health(path: Path) -> tuple[Finding, dict[str, Any] | None]:
    """The Unix socket's directory, owner and listener, and its /health."""
    import stat

    from akto_otel.peers import private_directory, unix_peer_uid

    label = f"GET  unix:{path} /health"
    problem = private_directory(path.parent)
    if problem:
        return Finding(False, f"{label}: {problem}", warning=True), None
    try:
        info = path.lstat()
    except OSError:
        return Finding(
            False, f"{label}: no socket (is akto-otel serve running?)", warning=True
        ), None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
        return Finding(False, f"{label}: not a socket of yours; delete it", warning=True), None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5.0)
            probe.connect(str(path))
            uid = unix_peer_uid(probe)
    except OSError as exc:
        cause = f"{label}: {exc.strerror or exc} (is akto-otel serve running?)"
        return Finding(False, cause, warning=True), None
    if uid is not None and uid != os.geteuid():
        cause = f"{label}: the process listening is another user's (uid {uid})"
        return Finding(False, cause, warning=True), None
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(timeout=5.0, trust_env=False, transport=transport) as client:
        answer = _request(client, "GET", "http://localhost/health", {}, None)
    return _health_finding(label, answer)


def _server_health(base: str, secret: str) -> tuple[Finding, dict[str, Any] | None]:
    """The server's /health as a finding, and its answer when it is akto-otel serve."""
    from akto_otel.serve import SECRET_HEADER

    label = f"GET  {redact_url(base)}/health"
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        answer = _request(client, "GET", f"{base}/health", {SECRET_HEADER: secret}, None)
    return _health_finding(label, answer)


def _health_finding(
    label: str, answer: str | tuple[int, str, bytes]
) -> tuple[Finding, dict[str, Any] | None]:
    if isinstance(answer, str):
        cause = f"{label}: {answer} (is akto-otel serve running?)"
        return Finding(False, cause, warning=True), None
    status, _, body = answer
    if status == 401:
        return Finding(False, f"{label}: 401, the server has another secret", warning=True), None
    try:
        health = json.loads(body)
    except ValueError:
        health = None
    if status != 200 or not isinstance(health, dict) or health.get("status") != "ok":
        return Finding(False, f"{label}: HTTP {status}, not akto-otel serve", warning=True), None
    text = (
        f"{label}: akto-otel serve {health.get('version')}, "
        f"AKTO_FAIL_MODE={health.get('fail_mode')}, {health.get('sessions')} sessions"
    )
    return Finding(True, text), health


# -------------------------------------------------------------------------- report


def fail_mode_line(settings: Settings) -> str:
    """What happens to a call Akto cannot judge, said plainly (pure)."""
    if not settings.sync_mode:
        return (
            "observe mode (AKTO_SYNC_MODE=false): nothing is blocked; records go to Akto "
            "to be judged after the fact"
        )
    if settings.fail_mode == "open":
        return (
            "WARN  AKTO_FAIL_MODE=open: when Akto cannot answer (unreachable, token "
            "refused, 5xx, timeout, its own failOpen), tool calls, prompts and answers "
            "RUN WITHOUT A VERDICT; each is logged as a WARNING and counted in "
            "akto_guardrail_unjudged_total. Set AKTO_FAIL_MODE=closed to deny them instead"
        )
    return (
        "ok    AKTO_FAIL_MODE=closed: when Akto cannot answer, tool calls, prompts and "
        "answers are denied"
    )


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:  # shorter ones are never printed and would mangle the text
            text = text.replace(secret, "***")
    return text


def run_doctor(env: Mapping[str, str], out: TextIO = sys.stdout, cwd: Path | None = None) -> int:
    """Print the report for ``env`` to ``out``; returns the exit code (:data:`EXIT_CODES`)."""
    problems, bad = setting_problems(env)
    unknown = unknown_names(env)
    ignored = bad | {name for name, _ in unknown}
    try:
        settings = Settings.from_env({k: v for k, v in env.items() if k not in ignored})
    except ValueError:  # a combination problem, already in ``problems``
        settings = Settings.from_env({k: v for k, v in env.items() if not k.startswith("AKTO_")})
    secrets = [settings.token, _url_password(env.get("AKTO_DATA_INGESTION_URL", ""))]
    for name in Settings.environment_variables()["token"]:
        secrets.append(env.get(name, "").strip())
    lines = [f"akto-otel doctor {__version__}", "", "Settings (environment variable, value):"]
    lines += [f"  {line}" for line in settings_lines(settings, env, frozenset(bad))]
    lines += ["", "Invalid settings:" if problems else "Invalid settings: none"]
    lines += [f"  FAIL  {p}" for p in problems]
    lines += ["", "Unknown AKTO_* variables:" if unknown else "Unknown AKTO_* variables: none"]
    lines += [f"  FAIL  {unknown_name_message(n, hint)}" for n, hint in unknown]
    lines += ["", "Fail mode:", f"  {fail_mode_line(settings)}"]
    otel = otel_findings(env, logs=settings.delivery == "otlp")
    lines += ["", "OpenTelemetry, as akto_otel.configure() would export:"]
    lines += [f"  {f.mark}  {f.text}" for f in otel]
    lines += ["", "Claude Code hooks (akto-otel serve):"]
    try:
        served = claude_code_findings(settings, env, cwd or Path.cwd())
    except Exception as exc:  # a diagnostic must report, never crash
        served = [Finding(False, f"cannot check ({type(exc).__name__})", warning=True)]
    lines += [f"  {f.mark}  {f.text}" for f in served]
    lines += ["", "Akto:"]
    akto: list[Finding]
    if "AKTO_DATA_INGESTION_URL" in bad:
        akto = [Finding(False, "AKTO_DATA_INGESTION_URL is not valid (above): Akto was not asked")]
    elif not settings.ingestion_url:
        akto = [
            Finding(
                False,
                "AKTO_DATA_INGESTION_URL is not set: every hook would fail "
                f"{settings.fail_mode} without asking Akto",
            )
        ]
    else:
        akto = akto_findings(settings, env)
    lines += [f"  {f.mark}  {f.text}" for f in akto]
    if problems or unknown or any(f.invalid for f in otel):
        code = EXIT_BAD_SETTINGS
    elif not all(f.ok for f in akto):
        code = EXIT_AKTO_UNUSABLE
    else:
        code = EXIT_OK
    lines += ["", f"Result: {EXIT_CODES[code]} (exit {code})"]
    out.write(_scrub("\n".join(lines), secrets) + "\n")
    out.flush()
    return code
