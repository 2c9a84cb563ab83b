"""Structure of collector/otel-collector.yaml, and the build pins kept in step.

Checks what the collector itself would refuse at start-up, plus our own rules:
every component a pipeline names is defined, every defined component is used,
connectors link an exporter side to a receiver side, no pre-2026 component names,
memory_limiter first, guardrail dimensions on the span metrics, and the ports the
rest of the stack relies on (the ``${env:VAR:-default}`` defaults, which are the
compose ones). Also: collector/builder-manifest.yaml builds exactly the component
types the config uses, every module at the release of the compose image, and
collector/build.sh pins the same collector release and the Jaeger release of the
compose image. The real binaries run in tests/test_stack_real_*.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_stack_promql import ROOT

CONFIG = ROOT / "collector" / "otel-collector.yaml"
MANIFEST = ROOT / "collector" / "builder-manifest.yaml"
BUILD = ROOT / "collector" / "build.sh"
COMPOSE = ROOT / "docker-compose.yml"
_ENV_REF = re.compile(r"\$\{env:([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
# The Go module of each component type we use (ocb manifest entries).
MODULE_TYPES = {
    "otlpreceiver": ("receivers", "otlp"),
    "batchprocessor": ("processors", "batch"),
    "memorylimiterprocessor": ("processors", "memory_limiter"),
    "spanmetricsconnector": ("connectors", "span_metrics"),
    "otlpexporter": ("exporters", "otlp_grpc"),
    "prometheusexporter": ("exporters", "prometheus"),
    "healthcheckextension": ("extensions", "health_check"),
    "otlphttpexporter": ("exporters", "otlp_http"),
    "loadbalancingexporter": ("exporters", "load_balancing"),
    "filestorage": ("extensions", "file_storage"),
}
#: Every config the built collector runs: the stack's, and the scale-out agent and gateway.
BUILT_CONFIGS = ("otel-collector.yaml", "agent.yaml", "gateway.yaml")
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
SIGNALS = ("traces", "metrics", "logs")
# Component types renamed in 2026 (old name -> new name), per kind.
LEGACY = {
    "exporters": {"otlp": "otlp_grpc", "otlphttp": "otlp_http"},
    "connectors": {"spanmetrics": "span_metrics"},
    "processors": {},
    "receivers": {},
    "extensions": {},
}
# The connector types we use and the (exporter side, receiver side) signals they join.
CONNECTOR_SIGNALS = {"span_metrics": ("traces", "metrics")}


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def _signal(pipeline_id: str) -> str:
    return pipeline_id.split("/", 1)[0]


def expand(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with every ``${env:VAR:-default}`` resolved like the collector does."""
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if env.get(name):
            return env[name]
        assert default is not None, f"${{env:{name}}} has no default"
        return default

    text = _ENV_REF.sub(one, value)
    return int(text) if text.isdigit() and text != value else text


def env_references(value: Any) -> list[str]:
    """Every string of ``value`` that contains a ``${env:...}`` reference."""
    if isinstance(value, dict):
        return [ref for v in value.values() for ref in env_references(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in env_references(v)]
    return [value] if isinstance(value, str) and "${env:" in value else []


def problems(config: dict[str, Any]) -> list[str]:
    """Everything wrong with a collector config, as readable sentences."""
    found: list[str] = []
    defined = {section: set(config.get(section) or {}) for section in SECTIONS}
    service = config.get("service") or {}
    pipelines: dict[str, dict[str, list[str]]] = service.get("pipelines") or {}
    if not pipelines:
        found.append("service.pipelines is empty")
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    connector_as_exporter: dict[str, set[str]] = {}
    connector_as_receiver: dict[str, set[str]] = {}
    for pid, pipeline in pipelines.items():
        signal = _signal(pid)
        if signal not in SIGNALS:
            found.append(f"pipeline {pid}: unknown signal {signal!r}")
        for key in ("receivers", "exporters"):
            if not pipeline.get(key):
                found.append(f"pipeline {pid}: no {key}")
        for key in ("receivers", "processors", "exporters"):
            for cid in pipeline.get(key) or []:
                if key != "processors" and cid in defined["connectors"]:
                    used["connectors"].add(cid)
                    side = connector_as_exporter if key == "exporters" else connector_as_receiver
                    side.setdefault(cid, set()).add(signal)
                elif cid in defined[key]:
                    used[key].add(cid)
                else:
                    found.append(f"pipeline {pid}: {key[:-1]} {cid!r} is not defined")
        processors = pipeline.get("processors") or []
        if processors and _type(processors[0]) != "memory_limiter":
            found.append(f"pipeline {pid}: memory_limiter must be the first processor")
    for cid in service.get("extensions") or []:
        if cid in defined["extensions"]:
            used["extensions"].add(cid)
        else:
            found.append(f"service.extensions: {cid!r} is not defined")
    for section in SECTIONS:
        for cid in sorted(defined[section] - used[section]):
            found.append(f"{section[:-1]} {cid!r} is defined but not used")
        for cid in sorted(defined[section]):
            new = LEGACY[section].get(_type(cid))
            if new:
                found.append(f"{section[:-1]} {cid!r}: legacy name, use {new!r}")
    for cid in sorted(defined["connectors"]):
        as_exporter = connector_as_exporter.get(cid, set())
        as_receiver = connector_as_receiver.get(cid, set())
        if not as_exporter or not as_receiver:
            found.append(
                f"connector {cid!r} must be an exporter in one pipeline and a receiver in another"
            )
            continue
        expected = CONNECTOR_SIGNALS.get(_type(cid))
        if expected and (expected[0] not in as_exporter or expected[1] not in as_receiver):
            found.append(
                f"connector {cid!r} joins {sorted(as_exporter)} -> {sorted(as_receiver)}, "
                f"expected {expected[0]} -> {expected[1]}"
            )
    return found


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The config as compose runs it: every ``${env:...}`` at its default."""
    data = yaml.safe_load(CONFIG.read_text())
    assert isinstance(data, dict)
    resolved = expand(data, {})
    assert isinstance(resolved, dict)
    return resolved


def test_every_endpoint_comes_from_the_environment_with_the_compose_default() -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    endpoints = [
        raw["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        raw["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        raw["extensions"]["health_check"]["endpoint"],
        raw["exporters"]["otlp_grpc/jaeger"]["endpoint"],
        raw["exporters"]["otlp_grpc/tempo"]["endpoint"],
        raw["exporters"]["prometheus"]["endpoint"],
    ]
    reader = raw["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    endpoints += [reader["prometheus"]["host"], reader["prometheus"]["port"]]
    for endpoint in endpoints:
        match = _ENV_REF.fullmatch(endpoint) if isinstance(endpoint, str) else None
        assert match, f"{endpoint!r} is not a ${{env:...}} reference"
        assert match.group(2), f"{endpoint}: no default"
    assert sorted(env_references(raw)) == sorted(endpoints)
    moved = expand(raw, {"JAEGER_OTLP_ENDPOINT": "127.0.0.1:1234", "OTELCOL_TELEMETRY_PORT": "9"})
    assert moved["exporters"]["otlp_grpc/jaeger"]["endpoint"] == "127.0.0.1:1234"
    port = moved["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    assert port["prometheus"]["port"] == 9


def _module(gomod: str) -> tuple[str, str]:
    """``"path version"`` of an ocb manifest entry as (path, version)."""
    path, version = gomod.split()
    return path, version


def _manifest_modules(*keys: str) -> list[tuple[str, str]]:
    manifest = yaml.safe_load(MANIFEST.read_text())
    kinds = keys or ("receivers", "processors", "exporters", "connectors", "extensions")
    return [_module(entry["gomod"]) for key in kinds for entry in manifest.get(key) or []]


def _script_pin(name: str) -> str:
    match = re.search(rf"(?m)^{name}=(\S+)$", BUILD.read_text())
    assert match, f"collector/build.sh has no {name}="
    return match.group(1)


def _compose_tag(service: str) -> str:
    compose = yaml.safe_load(COMPOSE.read_text())
    image: str = compose["services"][service]["image"]
    return image.rsplit(":", 1)[1]


def test_manifest_builds_exactly_the_component_types_the_configs_use() -> None:
    used = set()
    for name in BUILT_CONFIGS:
        raw = yaml.safe_load((ROOT / "collector" / name).read_text())
        used |= {(kind, _type(cid)) for kind in SECTIONS for cid in (raw.get(kind) or {})}
    built = set()
    for module, _ in _manifest_modules():
        leaf = module.rsplit("/", 1)[1]
        assert leaf in MODULE_TYPES, f"{module}: add its component type to MODULE_TYPES"
        built.add(MODULE_TYPES[leaf])
    assert built == used


def test_collector_release_is_the_same_in_manifest_script_and_compose() -> None:
    release = _script_pin("OTELCOL_VERSION")
    assert _compose_tag("otel-collector") == release
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["dist"]["version"] == release
    modules = _manifest_modules() + _manifest_modules("providers")
    modules.append(_module(manifest["telemetry"]["gomod"]))
    assert len(modules) >= 10
    # Collector modules are versioned 0.N (components) or 1.(N-94) (stable APIs,
    # e.g. the confmap providers): both come from the one release.
    minor = int(release.split(".")[1])
    allowed = {f"v{release}", f"v1.{minor - 94}.0"}
    wrong = [f"{m} {v}" for m, v in modules if v not in allowed]
    assert wrong == [], f"not at collector release {release}: {wrong}"


def test_jaeger_release_is_the_same_in_script_and_compose() -> None:
    assert _compose_tag("jaeger") == _script_pin("JAEGER_RELEASE")
    compose = yaml.safe_load(COMPOSE.read_text())
    jaeger = compose["services"]["jaeger"]
    assert "./collector/jaeger.yaml:/etc/jaeger/config.yaml:ro" in jaeger["volumes"]
    assert "--config=/etc/jaeger/config.yaml" in jaeger["command"]


def test_config_has_no_problems(config: dict[str, Any]) -> None:
    assert problems(config) == []


def test_otlp_grpc_and_http_receivers(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_traces_go_to_jaeger_and_tempo_over_otlp_grpc_and_to_span_metrics(
    config: dict[str, Any],
) -> None:
    exporters = config["exporters"]
    assert exporters["otlp_grpc/jaeger"]["endpoint"] == "jaeger:4317"
    assert exporters["otlp_grpc/tempo"]["endpoint"] == "tempo:4317"
    traces = config["service"]["pipelines"]["traces"]
    assert {"otlp_grpc/jaeger", "otlp_grpc/tempo", "span_metrics"} <= set(traces["exporters"])
    assert traces["processors"] == ["memory_limiter", "batch"]


def test_span_metrics_count_guardrail_spans_by_decision_and_hook(config: dict[str, Any]) -> None:
    connector = config["connectors"]["span_metrics"]
    names = [d["name"] for d in connector["dimensions"]]
    assert {"akto.guardrail.decision", "akto.hook", "gen_ai.tool.name"} <= set(names)
    # The dashboards query traces_span_metrics_calls_total and *_duration_seconds_*.
    assert connector["namespace"] == "traces.span.metrics"
    assert connector["histogram"]["unit"] == "s"


def test_metrics_reach_prometheus_on_the_scraped_port(config: dict[str, Any]) -> None:
    metrics = config["service"]["pipelines"]["metrics"]
    assert "span_metrics" in metrics["receivers"] and "otlp" in metrics["receivers"]
    assert "prometheus" in metrics["exporters"]
    assert config["exporters"]["prometheus"]["endpoint"].endswith(":8889")
    scrape = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert "otel-collector:8889" in targets
    assert "otel-collector:8888" in targets  # service.telemetry readers port
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]
    assert reader["pull"]["exporter"]["prometheus"]["port"] == 8888


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["exporters"].pop("otlp_grpc/tempo"), "exporter 'otlp_grpc/tempo' is not"),
        (
            lambda c: c["exporters"].__setitem__("otlp/jaeger", {"endpoint": "x"}),
            "legacy name, use 'otlp_grpc'",
        ),
        (
            lambda c: c["connectors"].__setitem__("spanmetrics", {}),
            "'spanmetrics': legacy name",
        ),
        (
            lambda c: c["service"]["pipelines"]["metrics"]["receivers"].remove("span_metrics"),
            "must be an exporter in one pipeline and a receiver in another",
        ),
        (
            lambda c: c["service"]["pipelines"]["traces"]["processors"].reverse(),
            "memory_limiter must be the first processor",
        ),
        (lambda c: c["processors"].__setitem__("unused", {}), "'unused' is defined but not used"),
    ],
)
def test_the_checker_catches_mistakes(mutate: Any, expected: str, tmp_path: Path) -> None:
    broken = expand(yaml.safe_load(CONFIG.read_text()), {})
    mutate(broken)
    assert any(expected in p for p in problems(broken)), problems(broken)
