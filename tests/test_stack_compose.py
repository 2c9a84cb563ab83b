"""docker-compose.yml: valid per the compose spec, and consistent with the repository.

There is no Docker engine here, so the file is checked, not run: the compose-spec
JSON schema (check-jsonschema's vendored copy), then cross-references: mounted
files exist, depends_on targets exist (and have a healthcheck when waited on),
every image is pinned to a version tag, ports and service names match the other
configs, and the commands use options the CLI really has.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_stack_promql import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"otel-collector", "jaeger", "tempo", "prometheus", "grafana", "akto-emulator", "demo"}
# The scale-out profile (collector/agent.yaml, collector/gateway.yaml; docs/scale-out.md).
SERVICES |= {"akto-agent-collector", "akto-gateway-1", "akto-gateway-2"}
# Images with no shell or HTTP client inside: no in-container healthcheck possible.
NO_HEALTHCHECK = {
    "otel-collector": "distroless; probe its health_check extension on :13133 from outside",
    "jaeger": "distroless",
    "tempo": "distroless (grafana/tempo 2.x has no -health flag)",
    "akto-agent-collector": "distroless collector image",
    "akto-gateway-1": "distroless; probe its health_check extension on :13133 from outside",
    "akto-gateway-2": "distroless; probe its health_check extension on :13133 from outside",
}
SCHEMA_CHECK = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
_VERSION_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?([.-][A-Za-z0-9.]+)*$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", [])
    return command if isinstance(command, str) else " ".join(str(c) for c in command)


def test_compose_spec_schema() -> None:
    result = subprocess.run(
        [*SCHEMA_CHECK, str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n", "    healthcheks:\n", 1))
    result = subprocess.run(
        [*SCHEMA_CHECK, str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    profiles = {name: s.get("profiles") for name, s in compose["services"].items()}
    assert profiles.pop("tempo") == ["tempo"]
    for name in ("akto-agent-collector", "akto-gateway-1", "akto-gateway-2"):
        assert profiles.pop(name) == ["scale-out"]
    assert profiles and all(p is None for p in profiles.values()), profiles


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image (builds are not used)"
        assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], f"{name}: {image} untagged"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest", f"{name}: {image}"
        assert _VERSION_TAG.match(tag), f"{name}: {image} is not pinned to a version"


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).resolve().exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"


def test_depends_on_targets_exist_and_are_healthchecked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            # Optional only within its own profile (scale-out's agent waits on its gateways).
            optional = set(services[target].get("profiles") or ())
            mine = set(service.get("profiles") or ())
            assert not optional - mine, f"{name} depends on optional {target}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}"


def test_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in service
            continue
        check = service.get("healthcheck")
        assert check and check["test"], f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL")


def test_collector_wiring(compose: dict[str, Any]) -> None:
    collector = compose["services"]["otel-collector"]
    assert (
        "./collector/otel-collector.yaml:/etc/otelcol-contrib/config.yaml:ro"
        in (collector["volumes"])
    )
    assert "--config=/etc/otelcol-contrib/config.yaml" in _command(collector)
    assert {"4317:4317", "4318:4318"} <= set(collector["ports"])
    assert {"8888", "8889"} <= set(collector["expose"])
    demo_env = compose["services"]["demo"]["environment"]
    assert demo_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"


def test_prometheus_wiring(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    for target in targets:
        host = target.split(":", 1)[0]
        assert host == "localhost" or host in compose["services"], target
    assert "demo:9464" in targets and "9464" in compose["services"]["demo"]["expose"]


def test_emulator_and_demo_commands_use_real_cli_options(compose: dict[str, Any]) -> None:
    emulator = _command(compose["services"]["akto-emulator"])
    assert "akto-otel emulator --host 0.0.0.0 --port 9090" in emulator
    demo = _command(compose["services"]["demo"])
    assert "--akto-url http://akto-emulator:9090" in demo
    assert "--prometheus 9464 --prometheus-host 0.0.0.0" in demo
    for sub, command in (("emulator", emulator), ("demo", demo)):
        words = shlex.split(command.split(f"akto-otel {sub}", 1)[1])
        flags = {w for w in words if w.startswith("--")}
        result = subprocess.run(
            [sys.executable, "-m", "akto_otel.cli", sub, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        for flag in flags:
            assert flag in result.stdout, f"akto-otel {sub} has no {flag}"


def test_python_services_install_the_repo_read_only(compose: dict[str, Any]) -> None:
    for name in ("akto-emulator", "demo"):
        service = compose["services"][name]
        assert ".:/src:ro" in service["volumes"]
        assert "pip install" in _command(service)
        assert service["image"].startswith("python:3.11")
