"""Only ``AKTO_*`` names reach the guard; a misspelt one is told, never silently dropped.

An app's own ``MODE=production`` or ``LOG_LEVEL=trace`` used to make the guard
refuse to start (under zero-code with fail-open: no guard at all). The reference
connector's unprefixed names are read only by the drop-in ``create_hooks()``, where
a bad one is a warning. An unknown ``AKTO_*`` name is a warning with the closest
known name, a problem in ``akto-otel doctor``, and an error with
``AKTO_STRICT_SETTINGS=true``.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from akto_otel import AktoGuardrails, hooks
from akto_otel.config import CONNECTOR_NAMES, Settings, connector_overrides, unknown_names
from akto_otel.doctor import EXIT_BAD_SETTINGS, run_doctor
from akto_otel.emulator import EmulatorServer
from akto_otel.errors import AktoConfigError

#: Values an app may well use for its own purposes, none of them valid for the guard.
APP_OWN = {
    "MODE": "production",
    "LOG_LEVEL": "trace",
    "SSL_CERT_PATH": "/no/such/bundle.pem",
    "MCP_INGEST_PATH": "not a path",
    "LOG_PAYLOADS": "verbose",
    "AGENT_ID": "web-7",
    "LOG_DIR": "/var/log/app",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith(("AKTO_", "OTEL_")) or name in CONNECTOR_NAMES.values():
            monkeypatch.delenv(name)
    monkeypatch.setattr(hooks, "_WARNED", set())
    yield monkeypatch


def _clean(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AKTO_", "OTEL_")) and k not in CONNECTOR_NAMES.values()
    }
    env.update(extra)
    return env


def test_an_apps_own_generic_variables_never_reach_the_settings() -> None:
    settings = Settings.from_env(APP_OWN)
    assert settings == Settings()


def test_the_guard_starts_and_guards_with_an_apps_own_generic_variables(
    clean_env: pytest.MonkeyPatch, emulator: EmulatorServer
) -> None:
    """configure() in a fresh process, as zero-code does: it used to raise."""
    env = _clean(**APP_OWN, AKTO_DATA_INGESTION_URL=emulator.url)
    script = (
        "import asyncio, akto_otel\n"
        "guard = akto_otel.configure()\n"
        "print(guard.settings.mode, guard.settings.log_level, repr(guard.settings.agent_id))\n"
        "cb = guard.hooks()['PreToolUse'][0].hooks[0]\n"
        "data = {'session_id': 's', 'tool_name': 'Bash', 'tool_use_id': 't',\n"
        "        'tool_input': {'command': 'rm -rf /'}}\n"
        "out = asyncio.run(cb(data, 't', {}))\n"
        "print(out['hookSpecificOutput']['permissionDecision'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["argus", "INFO", "''", "deny"], result.stdout


def test_the_akto_names_are_read() -> None:
    settings = Settings.from_env(
        {"AKTO_MODE": "atlas", "AKTO_LOG_LEVEL": "debug", "AKTO_AGENT_ID": "pod-1"}
    )
    assert (settings.mode, settings.log_level, settings.agent_id) == ("atlas", "DEBUG", "pod-1")


def test_create_hooks_reads_the_reference_names_and_a_bad_one_only_warns(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    overrides, warnings = connector_overrides({"MODE": "atlas", "AGENT_ID": "pod-1"})
    assert overrides == {"mode": "atlas", "agent_id": "pod-1"} and warnings == []
    # The AKTO_ name wins over the reference's.
    overrides, _ = connector_overrides({"MODE": "atlas", "AKTO_MODE": "argus"})
    assert "mode" not in overrides

    for name, value in {**APP_OWN, "MODE": "atlas"}.items():
        clean_env.setenv(name, value)
    clean_env.setattr(hooks, "_SHARED", None)
    caplog.set_level(logging.WARNING, logger="akto_otel")
    try:
        callbacks = hooks.create_hooks("10.0.0.1")
        assert len(callbacks) == 4
        guard = hooks._SHARED
        assert guard is not None
        assert guard.settings.mode == "atlas"  # honoured on this path
        assert guard.settings.log_level == "INFO"  # LOG_LEVEL=trace: warned, default kept
        assert guard.settings.ssl_cert_path == ""
        told = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        for name in ("LOG_LEVEL", "SSL_CERT_PATH", "MCP_INGEST_PATH", "LOG_PAYLOADS"):
            assert f"{name}=" in told, name
    finally:
        if hooks._SHARED is not None:
            hooks._SHARED.shutdown()
        clean_env.setattr(hooks, "_SHARED", None)


def test_an_unknown_akto_name_is_warned_with_the_closest_known_one(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert unknown_names({"AKTO_FAILMODE": "closed", "AKTO_TIMEOUT": "1", "PATH": "/"}) == [
        ("AKTO_FAILMODE", " (did you mean 'AKTO_FAIL_MODE'?)")
    ]
    clean_env.setenv("AKTO_FAILMODE", "closed")
    caplog.set_level(logging.WARNING, logger="akto_otel")
    guard = AktoGuardrails(ingestion_url="http://127.0.0.1:9")
    guard.shutdown()
    told = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "AKTO_FAILMODE" in r.getMessage()
    ]
    assert len(told) == 1 and "AKTO_FAIL_MODE" in told[0]


def test_strict_settings_make_an_unknown_name_an_error_that_hides_its_value(
    clean_env: pytest.MonkeyPatch,
) -> None:
    env = {"AKTO_STRICT_SETTINGS": "true", "AKTO_APITOKEN": "s3cret-value-xyz"}
    with pytest.raises(AktoConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.name == "AKTO_APITOKEN"
    assert "AKTO_API_TOKEN" in caught.value.accepted
    assert "s3cret-value-xyz" not in str(caught.value)
    # The guard refuses to start on it, through the environment or the argument.
    clean_env.setenv("AKTO_FAILMODE", "closed")
    with pytest.raises(AktoConfigError):
        AktoGuardrails(strict_settings=True)
    with pytest.raises(AktoConfigError):  # settings the app built: the same rule
        AktoGuardrails(Settings(strict_settings=True))
    assert Settings.from_env({"AKTO_FAILMODE": "closed"}).fail_mode == "open"  # not strict


def _section(report: str, title: str) -> list[str]:
    return report.split(f"\n{title}", 1)[1].split("\n\n", 1)[0].splitlines()[1:]


def test_doctor_lists_an_unknown_akto_name_as_a_problem() -> None:
    out = io.StringIO()
    code = run_doctor(_clean(AKTO_FAILMODE="closed"), out)
    report = out.getvalue()
    assert code == EXIT_BAD_SETTINGS, report
    (line,) = _section(report, "Unknown AKTO_* variables:")
    assert line.strip().startswith("FAIL")
    assert "AKTO_FAILMODE" in line and "AKTO_FAIL_MODE" in line
    # Without it the same environment is not a settings problem.
    assert run_doctor(_clean(), io.StringIO()) != EXIT_BAD_SETTINGS


@pytest.mark.parametrize(("mode", "mark"), [("open", "WARN"), ("closed", "ok")])
def test_doctor_says_plainly_when_fail_open_is_the_mode(mode: str, mark: str) -> None:
    out = io.StringIO()
    run_doctor(_clean(AKTO_FAIL_MODE=mode), out)
    (line,) = _section(out.getvalue(), "Fail mode:")
    assert line.strip().startswith(mark)
    assert f"AKTO_FAIL_MODE={mode}" in line
    assert ("WITHOUT A VERDICT" in line) is (mode == "open")
