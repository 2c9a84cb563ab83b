"""docs/local-stack.md's "Run it" recipe, run as written, fires the deny-rate alert.

Jaeger and the collector built by collector/build.sh, Debian's Prometheus with
prometheus/prometheus-local.yml (alerts-local.yml and recording-rules.yml), and the
offline demo sending only traces: the documented commands, on the documented
ports, with the binaries' paths as build.sh prints them and Prometheus's data in a
temporary folder. The demo's verdicts reach Prometheus only as span metrics; the
shipped recording rule turns them into the counter the alerts read, and
``AktoGuardrailDenyRateHigh`` must fire for PreToolUse and the demo's service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.screenshot import capture, chromium
from tests.test_docs import ROOT, base_env, commands, doc_block
from tests.test_stack_live import Prometheus
from tests.test_stack_promql import require_binary
from tests.test_stack_real_programs import require_program

pytestmark = pytest.mark.timeout(600)
SERVICE = "akto-otel-demo"
PICTURE = "prometheus-deny-rate-alert.png"
DEADLINE_S = 420.0
#: Every port the recipe listens on.
PORTS = (14317, 14318, 16686, 16685, 14133, 18888, 4317, 4318, 13133, 8889, 8888, 9091)


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _started(line: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", line],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)


def _firing(prom: Prometheus) -> list[dict[str, Any]]:
    try:
        alerts = prom.alerts()
    except OSError:
        return []
    return [
        a["labels"]
        for a in alerts
        if a["state"] == "firing" and a["labels"]["alertname"] == "AktoGuardrailDenyRateHigh"
    ]


@dataclass
class _Running:
    prometheus: Prometheus
    firing: list[dict[str, Any]]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Running]:
    """The recipe running until the deny-rate alert fires; stopped after the module."""
    tmp_path = tmp_path_factory.mktemp("local-stack")
    binaries = {name: str(require_program(name)) for name in ("jaeger", "otelcol")}
    require_binary("prometheus")
    busy = [port for port in PORTS if _in_use(port)]
    if busy:
        message = f"the recipe's ports are in use: {busy}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    lines = [
        line
        for line in commands(
            doc_block("local-stack-run"), {"/tmp/akto-prom": str(tmp_path / "prom")}
        )
        if not line.startswith("#")
    ]
    assert len(lines) == 4 and lines[-1].split()[-7:-5] == ["akto-otel", "demo"], lines
    env = base_env(**binaries)
    prom = Prometheus(9091)
    with contextlib.ExitStack() as stack:
        for index, line in enumerate(lines[:-1]):
            assert line.endswith("&"), line
            stack.enter_context(_started(line[:-1], env, tmp_path / f"program{index}.log"))
        demo = stack.enter_context(_started(lines[-1], env, tmp_path / "demo.log"))
        started = time.monotonic()
        firing: list[dict[str, Any]] = []
        while not firing:
            firing = _firing(prom)
            elapsed = time.monotonic() - started
            if elapsed > DEADLINE_S or (demo.poll() not in (None, 0)):
                logs = {p.name: p.read_text()[-1500:] for p in tmp_path.glob("*.log")}
                pytest.fail(f"no firing deny-rate alert after {elapsed:.0f} s: {logs}")
            time.sleep(2.0)
        yield _Running(prom, firing)


def test_local_stack_recipe_fires_the_deny_rate_alert(recipe: _Running) -> None:
    assert {a["hook"] for a in recipe.firing} == {"PreToolUse"}, recipe.firing
    assert {a["job"] for a in recipe.firing} == {SERVICE}, recipe.firing


def test_the_firing_alert_as_prometheus_shows_it(recipe: _Running, tmp_path: Path) -> None:
    """docs/images/prometheus-deny-rate-alert.png: Prometheus's own alerts page, taken by
    headless Chromium while the alert fires (``AKTO_OTEL_WRITE_PICTURES=1`` stores it)."""
    chromium()
    page = f"{recipe.prometheus.base}/classic/alerts"  # Debian's 2.42; Prometheus 3: /alerts
    picture = capture(page, PICTURE, tmp_path)
    assert picture.stat().st_size > 10_000  # a rendered page, not a blank one
