"""The ``akto-otel`` command line: ``doctor`` against real servers, ``emulator``, help.

Every server here is real and bound to 127.0.0.1 on a free port: the emulator (with a
token), tests/fault_server.py for misbehaving answers, a self-signed TLS server, a
closed port and an unresolvable name.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from akto_otel import cli
from akto_otel.doctor import EXIT_AKTO_UNUSABLE, EXIT_BAD_SETTINGS, EXIT_CODES, EXIT_OK, run_doctor
from akto_otel.emulator import EmulatorServer
from akto_otel.version import __version__
from benchmarks.servers import free_port
from tests.fault_server import FaultServer
from tests.tls_server import tls_server

CLI = shutil.which("akto-otel") or str(Path(sys.executable).parent / "akto-otel")
DOCS = Path(__file__).resolve().parent.parent / "docs"
TOKEN = "doctor-secret-123"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "OTEL_"))}
    env.update(extra)
    return env


def _doctor(env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = run_doctor(env, out)
    return code, out.getvalue()


def _assert_configure_refuses(env: dict[str, str]) -> None:
    """``akto_otel.configure()`` in a fresh process with ``env`` raises AktoConfigError."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import akto_otel\n"
            "from akto_otel.errors import AktoConfigError\n"
            "try:\n    akto_otel.configure()\nexcept AktoConfigError:\n    raise SystemExit(7)\n",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 7, probe.stderr[-2000:]


def _akto_lines(report: str) -> list[str]:
    lines = report.split("\nAkto:\n", 1)[1].split("\n\nResult:", 1)[0].splitlines()
    assert lines, report
    return lines


@pytest.fixture
def akto() -> Iterator[EmulatorServer]:
    with EmulatorServer(token=TOKEN) as server:
        yield server


# ------------------------------------------------------------------ doctor: the token


@pytest.mark.timeout(60)
def test_doctor_command_accepts_a_good_token_and_never_prints_it(akto: EmulatorServer) -> None:
    result = subprocess.run(
        [CLI, "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_env(AKTO_DATA_INGESTION_URL=akto.url, AKTO_API_TOKEN=TOKEN),
    )
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    lines = _akto_lines(result.stdout)
    assert len(lines) == 2 and all(line.strip().startswith("ok") for line in lines), lines
    assert "token accepted (AKTO_API_TOKEN)" in lines[1]
    assert TOKEN not in result.stdout + result.stderr


def test_doctor_tells_a_missing_token(akto: EmulatorServer) -> None:
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=akto.url))
    assert code == EXIT_AKTO_UNUSABLE
    health, auth = _akto_lines(out)
    assert health.strip().startswith("ok")
    assert auth.strip().startswith("FAIL") and "none is set" in auth and "AKTO_API_TOKEN" in auth


def test_doctor_tells_a_wrong_token_and_names_its_variable(akto: EmulatorServer) -> None:
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=akto.url, AKTO_TOKEN="wrong-token-456"))
    assert code == EXIT_AKTO_UNUSABLE
    auth = _akto_lines(out)[1]
    assert auth.strip().startswith("FAIL") and "rejected the token in AKTO_TOKEN" in auth
    assert "wrong-token-456" not in out


def test_doctor_without_token_on_an_open_akto_is_ready() -> None:
    with EmulatorServer() as open_akto:
        code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=open_akto.url))
    assert code == EXIT_OK, out
    assert "without a token" in _akto_lines(out)[1]


# ------------------------------------------------------- doctor: one cause per failure


def test_doctor_names_a_refused_connection() -> None:
    port = free_port()
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=f"http://127.0.0.1:{port}"))
    assert code == EXIT_AKTO_UNUSABLE
    (line,) = _akto_lines(out)
    assert "connection refused" in line and f"127.0.0.1:{port}" in line


def test_doctor_names_a_dns_failure() -> None:
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL="http://akto.nonexistent.invalid:8080"))
    assert code == EXIT_AKTO_UNUSABLE
    (line,) = _akto_lines(out)
    assert "DNS" in line and "akto.nonexistent.invalid" in line


def test_doctor_names_a_timeout() -> None:
    with FaultServer("no_answer") as server:
        code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=server.url, AKTO_TIMEOUT="0.5"))
    assert code == EXIT_AKTO_UNUSABLE
    (line,) = _akto_lines(out)
    assert "timeout" in line and "AKTO_TIMEOUT" in line


def test_doctor_names_a_404(akto: EmulatorServer) -> None:
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=akto.url + "/api", AKTO_API_TOKEN=TOKEN))
    assert code == EXIT_AKTO_UNUSABLE
    (line,) = _akto_lines(out)
    assert "404" in line and "base URL" in line


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("html_200", "wrong content"),
        ("invalid_json", "wrong content"),
        ("status_401_html", "401 on /healthCheck"),
        ("status_503", "503"),
    ],
)
def test_doctor_names_a_wrong_answer(mode: str, expected: str) -> None:
    with FaultServer(mode) as server:
        code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=server.url))
    assert code == EXIT_AKTO_UNUSABLE
    (line,) = _akto_lines(out)
    assert expected in line and line.strip().startswith("FAIL")


class _AktoLikeHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = b'{"success": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer


@pytest.fixture
def tls_akto(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with tls_server(tmp_path, _AktoLikeHandler) as served:
        yield served


def test_doctor_names_an_untrusted_certificate_and_trusts_the_bundle(
    tls_akto: tuple[str, Path],
) -> None:
    url, cert = tls_akto
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=url))
    assert code == EXIT_AKTO_UNUSABLE
    (line,) = _akto_lines(out)
    assert "TLS" in line and "AKTO_SSL_CERT_PATH" in line
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=url, AKTO_SSL_CERT_PATH=str(cert)))
    assert code == EXIT_OK, out


def test_doctor_without_url_says_the_hooks_would_not_ask_akto() -> None:
    code, out = _doctor(_env(AKTO_FAIL_MODE="closed"))
    assert code == EXIT_AKTO_UNUSABLE
    (line,) = _akto_lines(out)
    assert "AKTO_DATA_INGESTION_URL is not set" in line and "closed" in line


# --------------------------------------------------------- doctor: settings, secrets


@pytest.mark.timeout(60)
def test_doctor_command_lists_every_bad_variable_at_once() -> None:
    result = subprocess.run(
        [CLI, "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_env(AKTO_TIMEOUT="soon", AKTO_FAIL_MODE="maybe", AKTO_LOG_PAYLOADS="perhaps"),
    )
    assert result.returncode == EXIT_BAD_SETTINGS, result.stdout + result.stderr
    invalid = result.stdout.split("Invalid settings:", 1)[1].split("\n\n", 1)[0]
    for name in ("AKTO_TIMEOUT='soon'", "AKTO_FAIL_MODE='maybe'", "AKTO_LOG_PAYLOADS='perhaps'"):
        assert name in invalid, invalid
    assert "Traceback" not in result.stderr


def test_doctor_lists_settings_by_environment_variable(akto: EmulatorServer) -> None:
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=akto.url, AKTO_API_TOKEN=TOKEN))
    assert code == EXIT_OK
    settings = out.split("Settings (environment variable, value):\n", 1)[1].split("\n\n")[0]
    from akto_otel.config import Settings

    names = Settings.environment_variables()
    assert names
    for variables in names.values():
        assert any(v in settings for v in variables), variables
    assert "ingestion_url" not in settings and "fail_mode " not in settings


def test_doctor_never_prints_a_password_from_the_url(akto: EmulatorServer) -> None:
    port = akto.url.rsplit(":", 1)[1]
    for url in (f"http://akto:hunter2-pass@127.0.0.1:{port}", "http://a:hunter2-pass@127.0.0.1:1"):
        code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=url))
        assert "hunter2-pass" not in out
        assert "akto:***@" in out or "a:***@" in out
        assert code == EXIT_AKTO_UNUSABLE  # basic auth is not the token this Akto wants
        # With a token as well the settings are refused (one Authorization header).
        code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=url, AKTO_API_TOKEN=TOKEN))
        assert "hunter2-pass" not in out
        assert code == EXIT_BAD_SETTINGS


@pytest.mark.timeout(90)
def test_doctor_fails_an_otel_exporter_that_configure_refuses(akto: EmulatorServer) -> None:
    env = _env(
        AKTO_DATA_INGESTION_URL=akto.url, AKTO_API_TOKEN=TOKEN, OTEL_TRACES_EXPORTER="jaeger"
    )
    code, out = _doctor(env)
    assert code == EXIT_BAD_SETTINGS
    assert "OTEL_TRACES_EXPORTER='jaeger'" in out
    # The same environment makes configure() itself refuse: doctor predicted it.
    _assert_configure_refuses(env)


def test_doctor_says_where_spans_go(akto: EmulatorServer) -> None:
    base = {"AKTO_DATA_INGESTION_URL": akto.url, "AKTO_API_TOKEN": TOKEN}
    code, out = _doctor(_env(**base))
    assert code == EXIT_OK
    assert "traces: not exported" in out
    port = free_port()
    code, out = _doctor(_env(**base, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}"))
    assert code == EXIT_OK  # a dead collector loses spans but does not unguard the agent
    line = next(x for x in out.splitlines() if "traces: otlp" in x)
    assert line.strip().startswith("WARN") and "connection refused" in line


def _otel_lines(report: str, signal: str) -> list[str]:
    section = report.split("OpenTelemetry, as akto_otel.configure() would export:\n", 1)[1]
    section = section.split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines() if f"{signal}: " in line]


def test_doctor_checks_the_logs_exporter_that_carries_the_records(akto: EmulatorServer) -> None:
    base = {"AKTO_DATA_INGESTION_URL": akto.url, "AKTO_API_TOKEN": TOKEN}
    # Batch delivery: no logs exporter is built, none is reported.
    code, out = _doctor(_env(**base))
    assert code == EXIT_OK
    assert _otel_lines(out, "logs") == []

    # AKTO_DELIVERY=otlp: the records leave as logs; a listening endpoint (the
    # emulator's own POST /v1/logs) is ok, a closed port is named.
    otlp = {**base, "AKTO_DELIVERY": "otlp"}
    code, out = _doctor(_env(**otlp, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{akto.url}/v1/logs"))
    assert code == EXIT_OK, out
    (line,) = _otel_lines(out, "logs")
    assert line.startswith("ok") and f"{akto.url}/v1/logs" in line, line
    port = free_port()
    closed = f"http://127.0.0.1:{port}/v1/logs"
    code, out = _doctor(_env(**otlp, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=closed))
    assert code == EXIT_OK  # the verdicts still come from Akto directly
    (line,) = _otel_lines(out, "logs")
    assert line.startswith("WARN") and "connection refused" in line and str(port) in line, line
    # No endpoint at all: the exporter's default, checked like any other.
    code, out = _doctor(_env(**otlp))
    (line,) = _otel_lines(out, "logs")
    assert "localhost:4318/v1/logs" in line, line

    # console prints the records instead of delivering them: a warning.
    code, out = _doctor(_env(**otlp, OTEL_LOGS_EXPORTER="console"))
    assert code == EXIT_OK
    (line,) = _otel_lines(out, "logs")
    assert line.startswith("WARN"), line


@pytest.mark.timeout(90)
def test_doctor_fails_records_sent_nowhere_as_configure_does(akto: EmulatorServer) -> None:
    env = _env(
        AKTO_DATA_INGESTION_URL=akto.url,
        AKTO_API_TOKEN=TOKEN,
        AKTO_DELIVERY="otlp",
        OTEL_LOGS_EXPORTER="none",
    )
    code, out = _doctor(env)
    assert code == EXIT_BAD_SETTINGS, out
    failing = [
        line
        for line in out.split("Akto:", 1)[0].splitlines()
        if line.strip().startswith("FAIL") and "OTEL_LOGS_EXPORTER" in line
    ]
    assert failing, out
    # The same environment makes configure() itself refuse: doctor predicted it.
    _assert_configure_refuses(env)
    # Without AKTO_DELIVERY=otlp the same variable is harmless (no logs are needed).
    code, out = _doctor(
        _env(AKTO_DATA_INGESTION_URL=akto.url, AKTO_API_TOKEN=TOKEN, OTEL_LOGS_EXPORTER="none")
    )
    assert code == EXIT_OK, out


def test_every_exit_code_is_documented() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    assert EXIT_CODES
    for code in EXIT_CODES:
        assert re.search(rf"^\| `{code}` \|", text, re.MULTILINE), code


# ------------------------------------------------------------------- the command line


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_and_option_has_help_without_markup() -> None:
    parser = cli._parser()
    commands = _subparsers(parser)
    assert set(commands) == {"demo", "emulator", "serve", "claude-settings", "doctor"}
    texts = [parser.format_help()]
    for name, sub in commands.items():
        assert sub.description, name
        texts.append(sub.format_help())
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings}"
    for text in texts:
        assert "``" not in text


def test_version() -> None:
    result = subprocess.run(
        [CLI, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0 and __version__ in result.stdout


def test_emulator_default_port_is_not_prometheus() -> None:
    assert cli.DEFAULT_EMULATOR_PORT not in (9090, 9091, 9093, 9464, 4317, 4318, 8888, 8889)


@pytest.mark.timeout(60)
def test_emulator_port_zero_serves_on_the_printedfree_port() -> None:
    process = subprocess.Popen(
        [CLI, "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match and int(match.group(1)) > 0, line
        health = httpx.get(f"{match.group(0)}/healthCheck", timeout=5)
        assert health.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http", ""])
def test_emulator_bad_port_is_a_usage_error_without_a_traceback(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused while parsing the arguments (exit 2, one line naming --port), for both the
    ``akto-otel emulator`` command and ``python -m akto_otel.emulator``."""
    from akto_otel.emulator.__main__ import _main as emulator_main

    for run in (
        lambda: cli.main(["emulator", "--port", port]),
        lambda: emulator_main(["--port", port]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "--port" in err.strip().splitlines()[-1]


def test_port_argument_takes_the_whole_range() -> None:
    assert [cli.port_argument(p) for p in ("0", "1", "18090", "65535")] == [0, 1, 18090, 65535]


@pytest.mark.timeout(60)
def test_emulator_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [CLI, "emulator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_env(),
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0] and str(port) in lines[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["emulator", "demo"])
def test_bad_policy_file_is_one_line(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({"rules": [{"name": "x", "pattern": "(unclosed"}]}))
    result = subprocess.run(
        [CLI, command, "--policy", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_env(),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], result.stderr


def test_doctor_redacts_even_a_short_password_in_an_invalid_url() -> None:
    for url in (
        "ftp://akto:Zq@127.0.0.1:1",
        "http://akto:Zq@127.0.0.1:99999",
        "http://akto:Zq@[::1",
    ):
        code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=url))
        assert code == EXIT_BAD_SETTINGS, out
        assert "Zq" not in out and "akto:***@" in out


def test_doctor_reports_a_token_no_header_can_carry(akto: EmulatorServer) -> None:
    code, out = _doctor(_env(AKTO_DATA_INGESTION_URL=akto.url, AKTO_API_TOKEN="tökén-✓"))
    assert code == EXIT_AKTO_UNUSABLE
    # Every request carries the same Authorization (akto_otel.credentials): the first fails.
    auth = _akto_lines(out)[0]
    assert auth.strip().startswith("FAIL") and "header" in auth
    assert "tökén" not in out


def _cli_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a process where ``module`` cannot be imported (as if not installed)."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # import now raises ImportError\n"
        "from akto_otel.cli import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )


@pytest.mark.timeout(60)
def test_missing_prometheus_extra_names_the_checkout_command() -> None:
    result = _cli_without("opentelemetry.exporter.prometheus", "demo", "--prometheus", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "pip install -e '.[prometheus]'" in line


@pytest.mark.timeout(60)
def test_missing_yaml_names_the_checkout_command(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n")
    result = _cli_without("yaml", "emulator", "--port", "0", "--policy", str(policy))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "pip install -e '.[yaml]'" in line


@pytest.mark.timeout(60)
def test_demo_metrics_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [CLI, "demo", "--prometheus", str(port)],
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
            env=_env(),
        )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "in use" in line and str(port) in line
