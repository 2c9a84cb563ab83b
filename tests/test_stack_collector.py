"""Structure of collector/otel-collector.yaml (no collector binary is installable here).

Checks what the collector itself would refuse at start-up, plus our own rules:
every component a pipeline names is defined, every defined component is used,
connectors link an exporter side to a receiver side, no pre-2026 component names,
memory_limiter first, guardrail dimensions on the span metrics, and the ports the
rest of the stack relies on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_stack_promql import ROOT

CONFIG = ROOT / "collector" / "otel-collector.yaml"
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
    data = yaml.safe_load(CONFIG.read_text())
    assert isinstance(data, dict)
    return data


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
    broken = yaml.safe_load(CONFIG.read_text())
    mutate(broken)
    assert any(expected in p for p in problems(broken)), problems(broken)
