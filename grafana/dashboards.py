"""The akto_otel Grafana dashboards, as code (grafana-foundation-sdk 0.0.21).

Regenerate the committed JSON after changing this file::

    python grafana/dashboards.py            # writes grafana/dashboards/*.json
    python grafana/dashboards.py --check    # exit 1 if the JSON is stale

tests/test_stack_grafana.py fails when the committed JSON differs from what this
file produces, and checks (and, in tests/test_stack_live.py, runs) every PromQL
expression. The datasource uids (``prometheus``, ``tempo``, ``jaeger``) are the
ones ``grafana/provisioning/datasources/datasources.yaml`` provisions.

Series used (see docs/observability.md):

- ``akto_guardrail_decisions_total{hook, decision, behaviour, fail_open, error_type}``
- ``akto_guardrail_unjudged_total{hook, fault}``
- ``akto_guardrail_duration_seconds_bucket{hook}``, ``akto_hook_duration_seconds_bucket{hook}``
- ``akto_hook_errors_total{hook}``
- ``akto_exporter_records_total{outcome, reason}``, ``akto_exporter_duration_seconds_bucket``
- ``akto_exporter_queue_size`` (``akto_exporter_queue_size_ratio`` through a collector)
- ``traces_span_metrics_calls_total{span_name, akto_guardrail_decision, gen_ai_tool_name}``
  (the collector's span_metrics connector, or ``akto-otel demo --prometheus``)
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The SDK marks its classic (v1) dashboard model deprecated in favour of the v2
# schema; v1 is what we want: Grafana's file provisioning loads it without the
# v2 feature flags.
warnings.filterwarnings("ignore", message="Prefer using dashboardv2", category=DeprecationWarning)

from grafana_foundation_sdk.builders import bargauge, stat, tempo, timeseries  # noqa: E402
from grafana_foundation_sdk.builders import common as common_builders  # noqa: E402
from grafana_foundation_sdk.builders import dashboard as dash  # noqa: E402
from grafana_foundation_sdk.builders import prometheus as prom  # noqa: E402
from grafana_foundation_sdk.cog import builder as cogbuilder  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models import common as common_models  # noqa: E402
from grafana_foundation_sdk.models import dashboard as dash_models  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"

PROMETHEUS = common_models.DataSourceRef(type_val="prometheus", uid="prometheus")
TEMPO = common_models.DataSourceRef(type_val="tempo", uid="tempo")
JAEGER = common_models.DataSourceRef(type_val="jaeger", uid="jaeger")

#: The Jaeger UI, as docker-compose.yml publishes it on the host.
JAEGER_UI = "http://localhost:16686"

DECISIONS = 'akto_guardrail_decisions_total{job=~"$job"}'
DENIES = 'akto_guardrail_decisions_total{job=~"$job", decision="deny"}'
FAIL_OPEN = 'akto_guardrail_decisions_total{job=~"$job", fail_open="true"}'
UNJUDGED = 'akto_guardrail_unjudged_total{job=~"$job"}'
ERRORS = 'akto_guardrail_decisions_total{job=~"$job", decision="error"}'
NOT_ALLOWED = 'akto_guardrail_decisions_total{job=~"$job", decision!="allow"}'
DENIED_TOOL_SPANS = (
    'traces_span_metrics_calls_total{service_name=~"$service", '
    'span_name=~"execute_tool .+", akto_guardrail_decision="deny"}'
)
DENY_TRACEQL = '{ span.akto.guardrail.decision = "deny" }'


def _query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> Any:
    query = prom.Dataquery().expr(expr).ref_id(ref).datasource(PROMETHEUS)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    return query


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(dash_models.ThresholdsMode.ABSOLUTE)
        .steps([dash_models.Threshold(value=v, color=c) for v, c in steps])
    )


def _explore_url(datasource: common_models.DataSourceRef, query: dict[str, Any]) -> str:
    """A Grafana Explore URL (schemaVersion 1) that runs ``query`` on ``datasource``."""
    panes = {
        "traces": {
            "datasource": datasource.uid,
            "queries": [
                {
                    "refId": "A",
                    "datasource": {"type": datasource.type_val, "uid": datasource.uid},
                    **query,
                }
            ],
            "range": {"from": "${__from}", "to": "${__to}"},
        }
    }
    encoded = urllib.parse.quote(json.dumps(panes, separators=(",", ":")), safe="${}_")
    return f"/explore?schemaVersion=1&orgId=1&panes={encoded}"


def _denied_trace_links(
    tool: str | None = None,
) -> list[cogbuilder.Builder[dash_models.DashboardLink]]:
    """Links to the traces of denied calls: Tempo and Jaeger in Explore, the Jaeger UI."""
    traceql = DENY_TRACEQL
    tags = {"akto.guardrail.decision": "deny"}
    logfmt = "akto.guardrail.decision=deny"
    if tool is not None:
        traceql = f'{{ span.akto.guardrail.decision = "deny" && span.gen_ai.tool.name = "{tool}" }}'
        tags["gen_ai.tool.name"] = tool
        logfmt += f" gen_ai.tool.name={tool}"
    jaeger_ui = f"{JAEGER_UI}/search?service=${{service}}&limit=50&tags=" + urllib.parse.quote(
        json.dumps(tags, separators=(",", ":")), safe="${}_"
    )
    links: list[cogbuilder.Builder[dash_models.DashboardLink]] = [
        dash.DashboardLink("Denied calls: traces in Tempo")
        .type(dash_models.DashboardLinkType.LINK)
        .url(_explore_url(TEMPO, {"queryType": "traceql", "query": traceql, "limit": 50}))
        .target_blank(True),
        dash.DashboardLink("Denied calls: traces in Jaeger (Explore)")
        .type(dash_models.DashboardLinkType.LINK)
        .url(_explore_url(JAEGER, {"queryType": "search", "service": "${service}", "tags": logfmt}))
        .target_blank(True),
        dash.DashboardLink("Denied calls: Jaeger UI")
        .type(dash_models.DashboardLinkType.LINK)
        .url(jaeger_ui)
        .target_blank(True),
    ]
    return links


def _timeseries(title: str, description: str, unit: str, *queries: Any) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(12)
        .height(8)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(title: str, description: str, unit: str, expr: str, thresholds: Any) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(6)
        .height(4)
        .thresholds(thresholds)
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .no_value("0")
        .with_target(_query(expr))
    )


def guardrails_dashboard() -> dash.Dashboard:
    """Akto guardrails: verdicts, deny rate, latency, denied tools, fail open, exporter."""
    quantiles = [("p50", 0.5, "A"), ("p95", 0.95, "B"), ("p99", 0.99, "C")]
    latency = [
        _query(
            f"histogram_quantile({q}, sum by (hook, le) "
            f'(rate(akto_guardrail_duration_seconds_bucket{{job=~"$job"}}[$__rate_interval])))',
            f"{{{{hook}}}} {name}",
            ref,
        )
        for name, q, ref in quantiles
    ]
    builder = (
        dash.Dashboard("Akto guardrails")
        .uid("akto-guardrails")
        .description(
            "Akto guardrail verdicts, latency, denied tools, fail-open events and the "
            "health of record delivery to Akto (akto_otel). Generated by grafana/dashboards.py."
        )
        .tags(["akto", "guardrails", "opentelemetry", "generated"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone(common_models.TimeZoneBrowser)
        .tooltip(dash_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash.QueryVariable("job")
            .label("Job")
            .description("Prometheus job of the agents (local mode: akto-demo)")
            .datasource(PROMETHEUS)
            .query("label_values(akto_guardrail_decisions_total, job)")
            .refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dash_models.VariableOption(selected=True, text="All", value="$__all"))
        )
        .with_variable(
            dash.QueryVariable("service")
            .label("Service")
            .description("service.name of the traced agents (span metrics)")
            .datasource(PROMETHEUS)
            .query("label_values(traces_span_metrics_calls_total, service_name)")
            .refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dash_models.VariableOption(selected=True, text="All", value="$__all"))
        )
        .links(_denied_trace_links())
        # ------------------------------------------------------------ overview
        .with_row(dash.Row("Overview"))
        .with_panel(
            _stat(
                "Verdicts",
                "Guardrail verdicts in the time range, all hooks.",
                "short",
                f"sum(increase({DECISIONS}[$__range]))",
                _thresholds((None, "blue")),
            )
        )
        .with_panel(
            _stat(
                "Deny share",
                "Share of verdicts that denied the call (alert: above 50% per hook).",
                "percentunit",
                f"sum(rate({DENIES}[$__range])) / sum(rate({DECISIONS}[$__range]))",
                _thresholds((None, "green"), (0.2, "orange"), (0.5, "red")),
            ).links(_denied_trace_links())
        )
        .with_panel(
            _stat(
                "Fail-open verdicts",
                "Calls let through without a verdict because the guardrail check failed "
                "(AKTO_FAIL_MODE=open). Anything above 0 means guardrails were off.",
                "short",
                f"sum(increase({FAIL_OPEN}[$__range]))",
                _thresholds((None, "green"), (1, "red")),
            )
        )
        .with_panel(
            _stat(
                "Records dropped",
                "Akto records thrown away before delivery (queue full, after shutdown).",
                "short",
                'sum(increase(akto_exporter_records_total{job=~"$job", outcome="dropped"}'
                "[$__range]))",
                _thresholds((None, "green"), (1, "red")),
            )
        )
        # ------------------------------------------------------------ verdicts
        .with_row(dash.Row("Verdicts"))
        .with_panel(
            _timeseries(
                "Verdicts by hook and decision",
                "Guardrail verdicts per second (allow, deny, warn, alert, ask, modify, error).",
                "ops",
                _query(
                    f"sum by (hook, decision) (rate({DECISIONS}[$__rate_interval]))",
                    "{{hook}} {{decision}}",
                ),
            )
        )
        .with_panel(
            _timeseries(
                "Deny rate by hook",
                "Share of each hook's verdicts that denied the call; the red line is the "
                "AktoGuardrailDenyRateHigh threshold. Links open the denied calls' traces.",
                "percentunit",
                _query(
                    f"sum by (hook) (rate({DENIES}[$__rate_interval])) "
                    f"/ sum by (hook) (rate({DECISIONS}[$__rate_interval]))",
                    "{{hook}}",
                ),
            )
            .min(0)
            .max(1)
            .thresholds(_thresholds((None, "green"), (0.5, "red")))
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common_models.GraphThresholdsStyleMode.DASHED
                )
            )
            .links(_denied_trace_links())
        )
        .with_panel(
            _timeseries(
                "Non-allow verdicts by hook and behaviour",
                "Verdicts other than allow, by the policy behaviour Akto reported "
                "(block, warn, alert, approval, ...).",
                "ops",
                _query(
                    f"sum by (hook, behaviour, decision) (rate({NOT_ALLOWED}[$__rate_interval]))",
                    "{{hook}} {{behaviour}} ({{decision}})",
                ),
            )
        )
        .with_panel(
            _timeseries(
                "Guardrail latency by hook",
                "Time to get a verdict from Akto: p50, p95, p99 (alert: p95 above 500 ms).",
                "s",
                *latency,
            )
            .thresholds(_thresholds((None, "green"), (0.5, "red")))
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common_models.GraphThresholdsStyleMode.DASHED
                )
            )
        )
        # ------------------------------------------------------------ denied tools
        .with_row(dash.Row("Denied tools (span metrics)"))
        .with_panel(
            bargauge.Panel()
            .title("Top denied tools")
            .description(
                "Tool calls denied in the time range, by tool (span_metrics connector: "
                "execute_tool spans with akto.guardrail.decision=deny). Click a bar for "
                "that tool's denied traces."
            )
            .datasource(PROMETHEUS)
            .span(8)
            .height(8)
            .unit("short")
            .orientation(common_models.VizOrientation.HORIZONTAL)
            .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
            .thresholds(_thresholds((None, "orange")))
            .with_target(
                _query(
                    "topk(10, sum by (gen_ai_tool_name) "
                    f"(increase({DENIED_TOOL_SPANS}[$__range])))",
                    "{{gen_ai_tool_name}}",
                    instant=True,
                )
            )
            .data_links(_denied_trace_links("${__field.labels.gen_ai_tool_name}"))
            .links(_denied_trace_links())
        )
        .with_panel(
            _timeseries(
                "Denied tool calls by tool",
                "Denied execute_tool spans per second (span metrics).",
                "ops",
                _query(
                    f"sum by (gen_ai_tool_name) (rate({DENIED_TOOL_SPANS}[$__rate_interval]))",
                    "{{gen_ai_tool_name}}",
                ),
            )
            .span(8)
            .links(_denied_trace_links())
        )
        .with_panel(
            _timeseries(
                "Guarded spans by hook and decision",
                "Spans carrying a guardrail decision, per second (span metrics).",
                "ops",
                _query(
                    "sum by (akto_hook, akto_guardrail_decision) (rate("
                    'traces_span_metrics_calls_total{service_name=~"$service", '
                    'span_name!="run_guardrail akto", akto_guardrail_decision!=""}'
                    "[$__rate_interval]))",
                    "{{akto_hook}} {{akto_guardrail_decision}}",
                ),
            ).span(8)
        )
        .with_panel(
            dash.Panel()
            .type("table")
            .title("Recent denied calls (Tempo)")
            .description(
                "Traces with a denied guardrail verdict (TraceQL on Tempo; needs the "
                "tempo compose profile). The panel links open the same search in Jaeger."
            )
            .datasource(TEMPO)
            .span(24)
            .height(8)
            .with_target(
                tempo.Dataquery()
                .ref_id("A")
                .datasource(TEMPO)
                .query_type("traceql")
                .query(DENY_TRACEQL)
                .limit(20)
            )
            .links(_denied_trace_links())
        )
        # ------------------------------------------------------------ failures
        .with_row(dash.Row("Fail open and errors"))
        .with_panel(
            _timeseries(
                "Fail-open verdicts by hook",
                "Calls let through without a verdict (AktoGuardrailFailOpen).",
                "short",
                _query(
                    f"sum by (hook) (increase({FAIL_OPEN}[$__rate_interval]))",
                    "{{hook}}",
                ),
            )
            .span(8)
            .draw_style(common_models.GraphDrawStyle.BARS)
        )
        .with_panel(
            _timeseries(
                "Guardrail errors by hook and error type",
                "Checks that got no verdict: connection_refused, timeout, http_5xx, ... "
                "(AktoGuardrailErrors).",
                "ops",
                _query(
                    f"sum by (hook, error_type) (rate({ERRORS}[$__rate_interval]))",
                    "{{hook}} {{error_type}}",
                ),
            ).span(8)
        )
        .with_panel(
            _timeseries(
                "Hook overhead and internal errors",
                "p95 time spent inside the akto_otel hook callbacks, and callbacks that "
                "failed internally (they fail per AKTO_FAIL_MODE; expect none).",
                "s",
                _query(
                    "histogram_quantile(0.95, sum by (hook, le) "
                    '(rate(akto_hook_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))',
                    "{{hook}} p95",
                ),
                _query(
                    'sum by (hook) (rate(akto_hook_errors_total{job=~"$job"}[$__rate_interval]))',
                    "{{hook}} internal errors/s",
                    "B",
                ),
            ).span(8)
        )
        .with_panel(
            _timeseries(
                "Calls run without a verdict, by hook and fault",
                "Prompts, tool calls and answers allowed with no Akto verdict "
                "(akto_guardrail_unjudged_total: Akto down, token refused, 5xx, timeout, "
                "Akto's failOpen, an internal error; AktoGuardrailUnjudged). Anything "
                "above 0 ran unguarded; the app's log names each tool.",
                "short",
                _query(
                    f"sum by (hook, fault) (increase({UNJUDGED}[$__rate_interval]))",
                    "{{hook}} {{fault}}",
                ),
            )
            .span(24)
            .draw_style(common_models.GraphDrawStyle.BARS)
        )
        # ------------------------------------------------------------ exporter
        .with_row(dash.Row("Record delivery to Akto"))
        .with_panel(
            _timeseries(
                "Records by outcome",
                "Akto records exported, retried, failed (after retries) and dropped, with "
                "the failure reason (AktoExporterFailing, AktoExporterDroppingRecords).",
                "ops",
                _query(
                    'sum by (outcome, reason) (rate(akto_exporter_records_total{job=~"$job"}'
                    "[$__rate_interval]))",
                    "{{outcome}} {{reason}}",
                ),
            ).span(8)
        )
        .with_panel(
            _timeseries(
                "Export queue",
                "Records waiting for delivery (akto_exporter_queue_size; through a "
                "collector the gauge is named akto_exporter_queue_size_ratio).",
                "short",
                _query(
                    'sum by (job) ({__name__=~"akto_exporter_queue_size(_ratio)?", job=~"$job"})',
                    "{{job}}",
                ),
            ).span(8)
        )
        .with_panel(
            _timeseries(
                "Export batch duration",
                "Time to deliver one batch to Akto, retries included: p50 and p95.",
                "s",
                _query(
                    "histogram_quantile(0.5, sum by (le) "
                    '(rate(akto_exporter_duration_seconds_bucket{job=~"$job"}'
                    "[$__rate_interval])))",
                    "p50",
                ),
                _query(
                    "histogram_quantile(0.95, sum by (le) "
                    '(rate(akto_exporter_duration_seconds_bucket{job=~"$job"}'
                    "[$__rate_interval])))",
                    "p95",
                    "B",
                ),
            ).span(8)
        )
    )
    return builder


DASHBOARDS = {"akto-guardrails.json": guardrails_dashboard}


def render(build: Any) -> str:
    """The dashboard as stable, pretty JSON (trailing newline), panel ids 1, 2, ..."""
    model = build().build()
    next_id = 1
    for panel in model.panels or []:
        panel.id_val = next_id
        next_id += 1
        for inner in getattr(panel, "panels", None) or []:
            inner.id_val = next_id
            next_id += 1
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def expressions(dashboard_json: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expr) of every Prometheus target of a dashboard JSON."""
    found: list[tuple[str, str]] = []

    def walk(panels: Sequence[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append((str(panel.get("title", "")), str(target["expr"])))

    walk(dashboard_json.get("panels", []))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    stale = []
    OUT_DIR.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        path = OUT_DIR / name
        text = render(build)
        current = path.read_text() if path.exists() else ""
        if current != text:
            stale.append(name)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run python grafana/dashboards.py)")
        return 1
    for name in stale:
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
