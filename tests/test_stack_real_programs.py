"""The real OpenTelemetry Collector and Jaeger that collector/build.sh builds.

Shared by tests/test_stack_real_*.py: where the binaries are (``build.sh --paths``,
so the naming lives in one place), and the programs started on 127.0.0.1 with free
ports through the ``${env:...}`` variables of the committed config files, which run
unchanged. Without the binaries the tests skip, except under ``CI`` (.ci/run runs
build.sh first), where they fail.

The tests here: the collector accepts collector/otel-collector.yaml (``otelcol
validate``) and rejects a broken copy; it was built with exactly the component types
the config uses; Jaeger accepts collector/jaeger.yaml (and rejects a broken copy);
build.sh keeps its binaries outside the checkout, named by version, and a second run
reuses them and ends with their two paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.servers import free_port
from tests.test_stack_promql import ROOT

BUILD = ROOT / "collector" / "build.sh"
COLLECTOR_CONFIG = ROOT / "collector" / "otel-collector.yaml"
JAEGER_CONFIG = ROOT / "collector" / "jaeger.yaml"
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")
READY_S = 60.0


def built_paths(cache: Path | None = None) -> dict[str, Path]:
    """``{"otelcol": path, "jaeger": path}`` as build.sh names them (nothing is built)."""
    env = dict(os.environ)
    if cache is not None:
        env["AKTO_OTEL_CACHE"] = str(cache)
    result = subprocess.run(
        ["bash", str(BUILD), "--paths"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    pairs = [line.split("=", 1) for line in result.stdout.splitlines()]
    return {key: Path(value) for key, value in pairs}


def require_program(name: str) -> Path:
    """The built binary ``name`` (otelcol or jaeger); fails under CI, skips elsewhere."""
    path = built_paths()[name]
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = f"{name} is not built ({path} missing): run collector/build.sh"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run must run it first")
    pytest.skip(message)


def _base_env() -> dict[str, str]:
    # Nothing of the test process's OTEL_* leaks into the Go programs.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def http_json(url: str, timeout: float = 5.0) -> Any:
    status, body = http_get(url, timeout)
    assert status == 200, f"{url}: HTTP {status}: {body[:500]!r}"
    return json.loads(body)


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=2.0)[0] == 200
    except OSError:
        return False


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2.0).close()
    except OSError:
        return False
    return True


@dataclass
class Program:
    """A real program in its own process group, restartable, logging to a file."""

    args: list[str]
    env: dict[str, str]
    log: Path
    ready_url: str
    #: Ports that must also accept connections before the program counts as ready: a
    #: collector's own metrics answer before its receivers listen.
    listening: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_S
        while not (_answers(self.ready_url) and all(map(_listens, self.listening))):
            assert self.proc.poll() is None, f"{self.args[0]} exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"{self.ready_url} not ready:\n{self.log_tail()}"
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown: the collector flushes its batches), then KILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def log_tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


@dataclass
class Jaeger:
    program: Program
    otlp_grpc: str  # host:port
    query: str  # base URL of the query HTTP API

    def traces(self, service: str) -> list[dict[str, Any]]:
        """Jaeger's query API (/api/traces): every trace with a span of ``service``."""
        data = http_json(f"{self.query}/api/traces?service={service}&lookback=1h&limit=100")
        traces: list[dict[str, Any]] = data["data"] or []
        return traces


@dataclass
class Collector:
    program: Program
    otlp_http: str  # base URL
    otlp_grpc: str  # host:port
    prometheus: str  # metrics URL of the prometheus exporter (span metrics)
    telemetry: str  # metrics URL of the collector's own telemetry


def jaeger_env() -> tuple[dict[str, str], dict[str, int]]:
    ports = {name: free_port() for name in ("grpc", "http", "query", "query_grpc", "health")}
    ports["telemetry"] = free_port()
    env = {
        **_base_env(),
        "JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{ports['query']}",
        "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{ports['query_grpc']}",
        "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "JAEGER_TELEMETRY_HOST": "127.0.0.1",
        "JAEGER_TELEMETRY_PORT": str(ports["telemetry"]),
    }
    return env, ports


def collector_env(jaeger_otlp: str, tempo_otlp: str) -> tuple[dict[str, str], dict[str, int]]:
    names = ("grpc", "http", "health", "prometheus", "telemetry")
    ports = {name: free_port() for name in names}
    env = {
        **_base_env(),
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{ports['prometheus']}",
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(ports["telemetry"]),
        "JAEGER_OTLP_ENDPOINT": jaeger_otlp,
        "TEMPO_OTLP_ENDPOINT": tempo_otlp,
    }
    return env, ports


@contextlib.contextmanager
def run_jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    binary = require_program("jaeger")
    env, ports = jaeger_env()
    query = f"http://127.0.0.1:{ports['query']}"
    program = Program(
        [str(binary), f"--config={JAEGER_CONFIG}"],
        env,
        tmp_path / "jaeger.log",
        ready_url=f"{query}/api/services",
        listening=(ports["grpc"], ports["http"]),
    )
    try:
        program.start()
        yield Jaeger(program, f"127.0.0.1:{ports['grpc']}", query)
    finally:
        program.stop()


@contextlib.contextmanager
def run_collector(tmp_path: Path, jaeger_otlp: str, tempo_otlp: str) -> Iterator[Collector]:
    """The collector with the committed config; ``tempo_otlp`` may be a closed port."""
    binary = require_program("otelcol")
    env, ports = collector_env(jaeger_otlp, tempo_otlp)
    program = Program(
        [str(binary), f"--config={COLLECTOR_CONFIG}"],
        env,
        tmp_path / "otelcol.log",
        ready_url=f"http://127.0.0.1:{ports['health']}/",
    )
    try:
        program.start()
        yield Collector(
            program,
            otlp_http=f"http://127.0.0.1:{ports['http']}",
            otlp_grpc=f"127.0.0.1:{ports['grpc']}",
            prometheus=f"http://127.0.0.1:{ports['prometheus']}/metrics",
            telemetry=f"http://127.0.0.1:{ports['telemetry']}/metrics",
        )
    finally:
        program.stop()


def closed_port() -> str:
    """host:port where nothing listens (the compose stack without its Tempo profile)."""
    return f"127.0.0.1:{free_port()}"


def _validate(
    binary: Path, config: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", f"--config={config}"],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=60,
        check=False,
    )


# ------------------------------------------------------------------------------ tests


def test_build_script_keeps_binaries_outside_the_checkout(tmp_path: Path) -> None:
    default = built_paths()
    assert set(default) == {"otelcol", "jaeger"}
    for path in default.values():
        assert path.is_absolute() and not path.is_relative_to(ROOT), path
    moved = built_paths(tmp_path / "cache")
    assert moved["otelcol"].parent == tmp_path / "cache" / "bin"
    script = BUILD.read_text()
    versions = dict(
        line.split("=", 1)
        for line in script.splitlines()
        if line.startswith(("OTELCOL_VERSION=", "JAEGER_RELEASE=", "JAEGER_MODULE_VERSION="))
    )
    assert f"-{versions['OTELCOL_VERSION']}-" in moved["otelcol"].name
    assert moved["jaeger"].name == (
        f"jaeger-{versions['JAEGER_RELEASE']}-{versions['JAEGER_MODULE_VERSION']}"
    )


def test_a_second_build_reuses_the_binaries_and_ends_with_their_paths() -> None:
    paths = {"otelcol": require_program("otelcol"), "jaeger": require_program("jaeger")}
    before = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    result = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == [f"otelcol={paths['otelcol']}", f"jaeger={paths['jaeger']}"]
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == before
    timings = [line for line in lines if line.startswith(("otelcol:", "jaeger:"))]
    assert len(timings) == 2 and all("cached" in line for line in timings), lines


def test_otelcol_validates_the_stack_config() -> None:
    otelcol = require_program("otelcol")
    compose_defaults = _validate(otelcol, COLLECTOR_CONFIG, _base_env())
    assert compose_defaults.returncode == 0, compose_defaults.stderr
    env, _ = collector_env(closed_port(), closed_port())
    test_ports = _validate(otelcol, COLLECTOR_CONFIG, env)
    assert test_ports.returncode == 0, test_ports.stderr


@pytest.mark.parametrize(
    "mutation",
    [
        ("span_metrics:\n    namespace:", "spanmetrics_typo:\n    namespace:"),
        ("metrics_flush_interval: 15s", "metrics_flush_interval: 15s\n    no_such_field: 1"),
        ("otlp_grpc/jaeger:\n", "otlp_grpcc/jaeger:\n"),
    ],
    ids=["unknown-connector", "unknown-field", "unknown-exporter-type"],
)
def test_otelcol_validate_rejects_a_broken_config(
    mutation: tuple[str, str], tmp_path: Path
) -> None:
    """The validation above can fail: the real collector refuses these copies."""
    otelcol = require_program("otelcol")
    text = COLLECTOR_CONFIG.read_text()
    assert mutation[0] in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace(mutation[0], mutation[1], 1))
    result = _validate(otelcol, broken, _base_env())
    assert result.returncode != 0, result.stdout


def _used_types(config: Mapping[str, Any]) -> dict[str, set[str]]:
    return {kind: {cid.split("/", 1)[0] for cid in config.get(kind) or {}} for kind in KINDS}


def test_otelcol_has_exactly_the_components_the_configs_use() -> None:
    otelcol = require_program("otelcol")
    result = subprocess.run(
        [str(otelcol), "components"],
        capture_output=True,
        text=True,
        env=_base_env(),
        timeout=60,
        check=True,
    )
    built = yaml.safe_load(result.stdout)
    have = {kind: {c["name"] for c in built.get(kind) or []} for kind in KINDS}
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for name in ("otel-collector.yaml", "agent.yaml", "gateway.yaml"):
        for kind, types in _used_types(
            yaml.safe_load((ROOT / "collector" / name).read_text())
        ).items():
            used[kind] |= types
    assert used["exporters"] and used["receivers"]
    assert have == used


def test_jaeger_validates_its_config(tmp_path: Path) -> None:
    jaeger = require_program("jaeger")
    result = _validate(jaeger, JAEGER_CONFIG, _base_env())
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "jaeger.yaml"
    broken.write_text(JAEGER_CONFIG.read_text().replace("max_traces:", "max_tracez:", 1))
    assert broken.read_text() != JAEGER_CONFIG.read_text()
    # An unknown field of the memory storage: refused.
    refused = _validate(jaeger, broken, _base_env())
    assert refused.returncode != 0, refused.stdout


@pytest.mark.parametrize("name", ["agent.yaml", "gateway.yaml"])
def test_otelcol_validates_the_scale_out_configs(name: str, tmp_path: Path) -> None:
    """The agent and gateway tiers of docs/scale-out.md load in the real collector."""
    otelcol = require_program("otelcol")
    env = {
        **_base_env(),
        "AKTO_API_TOKEN": "t0ken",
        "AKTO_OTLP_URL": "http://127.0.0.1:9",
        "AKTO_GATEWAY_QUEUE_DIR": str(tmp_path),
    }
    result = _validate(otelcol, ROOT / "collector" / name, env)
    assert result.returncode == 0, result.stderr
