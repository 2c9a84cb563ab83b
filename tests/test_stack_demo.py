"""The compose stack's agent path, run for real on 127.0.0.1 without containers.

docker-compose.yml runs ``akto-otel emulator`` and ``akto-otel demo --akto-url ...
--prometheus 9464 --prometheus-host 0.0.0.0`` with ``OTEL_EXPORTER_OTLP_ENDPOINT``
pointing at the collector. Here the same commands run as processes (on 127.0.0.1),
with a small OTLP/HTTP receiver standing in for the collector: the spans arrive with
the service name and the attributes the collector's span_metrics dimensions use, the
metrics endpoint serves the series the dashboards query, and the emulator receives
the demo's records.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from akto_otel.demo import SpanMetricsProcessor
from benchmarks.servers import free_port
from tests.test_stack_live import _process
from tests.test_stack_promql import ROOT


class _Collector:
    """Keeps the resource service.name and attributes of every OTLP/HTTP span."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        lock = threading.Lock()
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    for rs in request.resource_spans:
                        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                attrs = {a.key: a.value for a in span.attributes}
                                with lock:
                                    spans.append(
                                        {
                                            "service": resource.get("service.name"),
                                            "name": span.name,
                                            "attributes": {
                                                k: v.string_value for k, v in attrs.items()
                                            },
                                        }
                                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[_Collector]:
    receiver = _Collector()
    try:
        yield receiver
    finally:
        receiver.close()


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def _answers(url: str) -> bool:
    try:
        _get(url)
        return True
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_compose_agent_path_on_loopback(tmp_path: Path, collector: _Collector) -> None:
    akto_port, metrics_port = free_port(), free_port()
    akto = f"http://127.0.0.1:{akto_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    cli = [sys.executable, "-m", "akto_otel.cli"]
    emulator_cmd = [*cli, "emulator", "--host", "127.0.0.1", "--port", str(akto_port)]
    with _process(emulator_cmd, tmp_path / "emulator.log", base_env):
        _wait_for(lambda: _answers(f"{akto}/healthCheck"), 30, "the emulator")
        demo_env = {
            **base_env,
            # As docker-compose.yml sets them for the demo service.
            "OTEL_SERVICE_NAME": "akto-otel-demo",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
        }
        demo_cmd = [
            *cli,
            "demo",
            *("--akto-url", akto),
            *("--runs", "1"),
            *("--prometheus", str(metrics_port)),
            *("--prometheus-host", "127.0.0.1"),
            *("--linger", "60"),
        ]
        log = tmp_path / "demo.log"
        with _process(demo_cmd, log, demo_env) as demo:
            _wait_for(
                lambda: "Serving metrics" in log.read_text() or demo.poll() is not None,
                90,
                "the demo run",
            )
            assert demo.poll() is None, log.read_text()[-3000:]
            metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics").decode()
        records = json.loads(_get(f"{akto}/_emulator/records"))
    output = log.read_text()
    assert f"Akto at {akto}" in output and f"records sent to {akto}" in output

    # Spans over OTLP, as the collector would receive them.
    assert {s["service"] for s in collector.spans} == {"akto-otel-demo"}
    names = {s["name"] for s in collector.spans}
    assert {"invoke_agent demo-agent", "execute_tool Bash", "akto.stop", "run_guardrail akto"} <= (
        names
    )
    tools = [s for s in collector.spans if s["name"] == "execute_tool Bash"]
    assert {s["attributes"]["akto.guardrail.decision"] for s in tools} == {"allow", "deny"}
    assert {s["attributes"]["akto.hook"] for s in tools} == {"PreToolUse"}
    assert {s["attributes"]["gen_ai.tool.name"] for s in tools} == {"Bash"}

    # The emulator (Akto) got the guardrail calls and the records.
    assert {r["endpoint"] for r in records} >= {"http-proxy"}
    assert any(r.get("verdict") for r in records)

    # The metrics endpoint serves what the dashboards query.
    for series in (
        'akto_guardrail_decisions_total{behaviour="block",decision="deny"',
        "akto_guardrail_duration_seconds_bucket{",
        'akto_exporter_records_total{otel_scope_name="akto_otel"',
        'traces_span_metrics_calls_total{akto_guardrail_decision="deny",akto_hook="PreToolUse"',
    ):
        assert series in metrics, series


def test_local_span_metrics_match_the_collector_dimensions() -> None:
    """The demo's span-metrics counter uses exactly the connector's extra dimensions."""
    config = yaml.safe_load((ROOT / "collector" / "otel-collector.yaml").read_text())
    dimensions = [d["name"] for d in config["connectors"]["span_metrics"]["dimensions"]]
    assert tuple(dimensions) == SpanMetricsProcessor.DIMENSIONS
    assert config["connectors"]["span_metrics"]["namespace"] == "traces.span.metrics"
