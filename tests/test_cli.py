"""The `akto-otel doctor` and `emulator` commands."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from akto_otel.emulator import EmulatorServer

CLI = shutil.which("akto-otel") or str(Path(sys.executable).parent / "akto-otel")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "OTEL_"))}
    env.update(extra)
    return env


@pytest.mark.timeout(60)
def test_doctor_reports_settings_without_the_token_and_checks_health() -> None:
    with EmulatorServer() as akto:
        result = subprocess.run(
            [CLI, "doctor"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_env(AKTO_DATA_INGESTION_URL=akto.url, AKTO_API_TOKEN="doctor-secret-123"),
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{akto.url}/healthCheck: ok" in result.stdout
    assert "doctor-secret-123" not in result.stdout and "(set)" in result.stdout


@pytest.mark.timeout(60)
def test_doctor_names_a_bad_variable() -> None:
    result = subprocess.run(
        [CLI, "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_env(AKTO_TIMEOUT="soon"),
    )
    assert result.returncode == 2
    assert "AKTO_TIMEOUT='soon' is not valid" in result.stdout


@pytest.mark.timeout(60)
def test_emulator_command_serves_until_stopped() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [CLI, "emulator", "--port", str(port)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthCheck").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=10)
