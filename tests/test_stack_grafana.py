"""Grafana: the committed dashboards are what grafana/dashboards.py generates, and the
provisioning fits them (datasource uids, trace links, mounted paths)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_stack_promql import (
    DASHBOARD_DIR,
    DATASOURCES,
    ROOT,
    dashboard_expressions,
    load_dashboards_module,
)

PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"


def _panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in data.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARD_DIR / "akto-guardrails.json").read_text())
    return data


# grafana-foundation-sdk 0.0.21 needs Python 3.11+; on 3.10 the committed JSON is
# still checked by every other test here, only its regeneration is not.
needs_generator = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="grafana-foundation-sdk needs Python 3.11+"
)


@needs_generator
def test_committed_json_is_what_the_generator_produces() -> None:
    module = load_dashboards_module()
    committed = sorted(p.name for p in DASHBOARD_DIR.glob("*.json"))
    assert committed == sorted(module.DASHBOARDS), "stray or missing dashboard JSON"
    for name, build in module.DASHBOARDS.items():
        expected = module.render(build)
        actual = (DASHBOARD_DIR / name).read_text()
        assert actual == expected, f"{name} is stale: run python grafana/dashboards.py"


@needs_generator
def test_generator_check_mode_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generator_is_pinned_sdk() -> None:
    from importlib.metadata import version

    assert version("grafana-foundation-sdk").lstrip("v") == "0.0.21"


def test_dashboard_identity_and_unique_panel_ids(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "akto-guardrails"
    assert dashboard["title"] == "Akto guardrails"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]


def test_required_panels(dashboard: dict[str, Any]) -> None:
    exprs = dict(dashboard_expressions())
    by_title = {where.split(": ", 1)[1]: expr for where, expr in exprs.items()}
    assert 'decision="deny"' in by_title["Deny rate by hook"]
    assert "sum by (hook)" in by_title["Deny rate by hook"]
    assert "behaviour" in by_title["Non-allow verdicts by hook and behaviour"]
    assert "traces_span_metrics_calls_total" in by_title["Top denied tools"]
    assert "gen_ai_tool_name" in by_title["Top denied tools"]
    assert 'fail_open="true"' in by_title["Fail-open verdicts by hook"]
    unjudged = by_title["Calls run without a verdict, by hook and fault"]
    assert "akto_guardrail_unjudged_total" in unjudged and "by (hook, fault)" in unjudged
    assert "akto_exporter_records_total" in by_title["Records by outcome"]
    latency = [e for w, e in dashboard_expressions() if w.endswith("Guardrail latency by hook")]
    assert {e.split(",")[0] for e in latency} == {
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    }


def test_denied_trace_links(dashboard: dict[str, Any]) -> None:
    """The dashboard and the deny panels link to the traces of denied calls."""
    panels = {p["title"]: p for p in _panels(dashboard)}
    for holder in (dashboard, panels["Deny rate by hook"], panels["Top denied tools"]):
        titles = {link["title"] for link in holder["links"]}
        assert {
            "Denied calls: traces in Tempo",
            "Denied calls: traces in Jaeger (Explore)",
            "Denied calls: Jaeger UI",
        } <= titles
    tempo_link = next(
        link for link in dashboard["links"] if link["title"] == "Denied calls: traces in Tempo"
    )
    panes = json.loads(urllib.parse.unquote(tempo_link["url"].split("panes=", 1)[1]))
    query = panes["traces"]["queries"][0]
    assert query["datasource"]["uid"] == "tempo"
    assert query["query"] == '{ span.akto.guardrail.decision = "deny" }'
    jaeger_ui = next(
        link for link in dashboard["links"] if link["title"] == "Denied calls: Jaeger UI"
    )
    assert json.loads(urllib.parse.unquote(jaeger_ui["url"].split("tags=", 1)[1])) == {
        "akto.guardrail.decision": "deny"
    }
    # Per-tool data links on the top-denied-tools bars.
    data_links = panels["Top denied tools"]["fieldConfig"]["defaults"]["links"]
    assert any("__field.labels.gen_ai_tool_name" in link["url"] for link in data_links)


def test_datasources_provisioned_for_every_reference(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())
    sources = {s["uid"]: s for s in provisioned["datasources"]}
    kinds = {uid: s["type"] for uid, s in sources.items()}
    assert kinds == {"prometheus": "prometheus", "jaeger": "jaeger", "tempo": "tempo"}
    assert [s["uid"] for s in sources.values() if s.get("isDefault")] == ["prometheus"]
    used = set()
    for panel in _panels(dashboard):
        if "datasource" in panel:
            used.add((panel["datasource"]["type"], panel["datasource"]["uid"]))
        for target in panel.get("targets", []):
            used.add((target["datasource"]["type"], target["datasource"]["uid"]))
    for kind, uid in used:
        assert uid in sources and sources[uid]["type"] == kind, (kind, uid)
    # Trace <-> metrics links.
    for uid in ("jaeger", "tempo"):
        assert sources[uid]["jsonData"]["tracesToMetrics"]["datasourceUid"] == "prometheus"
    exemplars = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {e["datasourceUid"] for e in exemplars} == {"tempo", "jaeger"}


def test_dashboard_provider_path_is_the_compose_mount() -> None:
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert len(providers) == 1
    path = providers[0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_stale_json_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--check fails when a committed dashboard differs from the generator."""
    module = load_dashboards_module()
    for name in module.DASHBOARDS:
        (tmp_path / name).write_text((DASHBOARD_DIR / name).read_text().replace("Deny", "Allow"))
    monkeypatch.setattr(module, "OUT_DIR", tmp_path)
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0
