"""The scale-out deployment of docs/scale-out.md, run from the committed configs.

An agent collector (collector/agent.yaml, its disk queue in ``tmp_path/agent-queue``)
load-balancing to two gateways (collector/gateway.yaml, each with its own disk queue)
that post to an emulator standing in for Akto's OTLP ingestion; every program is the
real collector binary on 127.0.0.1 with free ports, and every one is stopped on exit::

    with scaleout_stack(tmp_path, akto_url, token) as stack:
        stack.agent.otlp_http      # where the agent's OTLP logs exporter posts
        stack.gateways[0].program.stop(); stack.gateways[0].program.start()

The only thing added to the committed configs is where each collector serves its
own metrics (``service.telemetry``): the default, localhost:8888, would collide
between three collectors on one machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from prometheus_client.parser import text_string_to_metric_families

from akto_otel.emulator import EmulatorServer
from akto_otel.emulator.otlp_ingest import decode_logs
from benchmarks.servers import free_port
from tests.test_stack_promql import ROOT
from tests.test_stack_real_programs import Program, http_get, require_program

AGENT_CONFIG = ROOT / "collector" / "agent.yaml"
GATEWAY_CONFIG = ROOT / "collector" / "gateway.yaml"


def _telemetry_at(port: int) -> str:
    return (
        "--config=yaml:service::telemetry::metrics::readers: "
        f"[{{pull: {{exporter: {{prometheus: {{host: 127.0.0.1, port: {port}}}}}}}}}]"
    )


def _env(**values: str) -> dict[str, str]:
    # Nothing of the test process's OTEL_*/AKTO_* leaks into the Go programs.
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return {**base, **values}


@dataclass
class Tier:
    """One running collector of the deployment."""

    program: Program
    otlp: str  # gRPC host:port (gateways) or HTTP base URL (agent)
    telemetry: str  # URL of the collector's own Prometheus metrics

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the collector's own metric ``name`` over the series with ``labels``."""
        status, body = http_get(self.telemetry)
        assert status == 200, body[:300]
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            if family.name != name:
                continue
            for sample in family.samples:
                # A counter's samples are <name>_total; skip _created and the like.
                if sample.name not in (name, f"{name}_total"):
                    continue
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += float(sample.value)
        return total

    def kill(self) -> None:
        """SIGKILL: a crash, no graceful flush of the collector's in-memory batches."""
        proc = self.program.proc
        assert proc is not None and proc.poll() is None, "not running"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Stack:
    agent: Tier
    gateways: list[Tier]


def _gateway(tmp_path: Path, index: int, akto_url: str, token: str) -> Tier:
    binary = require_program("otelcol")
    grpc, health, telemetry = free_port(), free_port(), free_port()
    queue = tmp_path / f"gateway-{index}-queue"
    env = _env(
        AKTO_OTLP_URL=akto_url,
        AKTO_API_TOKEN=token,
        AKTO_GATEWAY_QUEUE_DIR=str(queue),
        AKTO_GATEWAY_OTLP_GRPC=f"127.0.0.1:{grpc}",
        AKTO_GATEWAY_HEALTH=f"127.0.0.1:{health}",
    )
    program = Program(
        [str(binary), f"--config={GATEWAY_CONFIG}", _telemetry_at(telemetry)],
        env,
        tmp_path / f"gateway-{index}.log",
        ready_url=f"http://127.0.0.1:{health}/",
    )
    return Tier(program, f"127.0.0.1:{grpc}", f"http://127.0.0.1:{telemetry}/metrics")


def _agent(tmp_path: Path, gateways: list[Tier], *, plain_text: bool = True) -> Tier:
    binary = require_program("otelcol")
    http, grpc, telemetry = free_port(), free_port(), free_port()
    env = _env(
        AKTO_AGENT_QUEUE_DIR=str(tmp_path / "agent-queue"),
        AKTO_AGENT_OTLP_HTTP=f"127.0.0.1:{http}",
        AKTO_AGENT_OTLP_GRPC=f"127.0.0.1:{grpc}",
        AKTO_GATEWAY_1=gateways[0].otlp,
        AKTO_GATEWAY_2=gateways[1].otlp,
    )
    if plain_text:  # the gateways here speak plain text; the config's default is TLS
        env["AKTO_GATEWAY_TLS_INSECURE"] = "true"
    # agent.yaml has no health_check extension: ready once its own metrics answer.
    telemetry_url = f"http://127.0.0.1:{telemetry}/metrics"
    program = Program(
        [str(binary), f"--config={AGENT_CONFIG}", _telemetry_at(telemetry)],
        env,
        tmp_path / "agent-collector.log",
        ready_url=telemetry_url,
        listening=(http, grpc),
    )
    return Tier(program, f"http://127.0.0.1:{http}", telemetry_url)


@contextlib.contextmanager
def scaleout_stack(
    tmp_path: Path, akto_url: str, token: str, *, plain_text: bool = True
) -> Iterator[Stack]:
    """Two gateways and the agent collector, started in that order, all stopped after.

    ``plain_text=False`` leaves the agent collector at its default, TLS to the gateways.
    """
    gateways = [_gateway(tmp_path, i, akto_url, token) for i in (1, 2)]
    agent = _agent(tmp_path, gateways, plain_text=plain_text)
    started: list[Program] = []
    try:
        for tier in (*gateways, agent):
            started.append(tier.program)
            tier.program.start()
        yield Stack(agent, gateways)
    finally:
        for program in reversed(started):
            program.stop()


class TappedAkto(EmulatorServer):
    """The emulator, also keeping the ``akto.record.id`` of each event it accepted.

    Akto's mapping drops that attribute (its records carry no id of ours), so the
    raw events are decoded here, after the emulator answered, to count duplicates.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.accepted_ids: list[str] = []
        self.request_sizes: list[int] = []  # events per accepted request

    def _otlp_logs(self, request: web.Request, body: bytes) -> web.Response:
        response = super()._otlp_logs(request, body)
        if response.status == 200:
            content_type = request.headers.get("Content-Type", "")
            events = decode_logs(body, content_type)
            self.request_sizes.append(len(events))
            self.accepted_ids.extend(e.attributes.get("akto.record.id", "") for e in events)
        return response


def wait_for(check: Any, what: str, timeout: float) -> None:
    """Poll ``check()`` every half second; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def post_prompt_event(otlp_http: str, trace_id: int) -> str:
    """POST one ``claude_code.user_prompt`` event of trace ``trace_id`` as OTLP/HTTP
    protobuf (what the app's exporter sends); returns its ``akto.record.id``."""
    (record_id,) = post_prompt_events(otlp_http, [trace_id])
    return record_id


def post_prompt_events(otlp_http: str, trace_ids: Iterable[int]) -> list[str]:
    """POST one request holding a ``claude_code.user_prompt`` event per trace id (the
    load balancer splits it by trace); returns their ``akto.record.id``s."""
    records: list[LogRecord] = []
    ids: list[str] = []
    for trace_id in trace_ids:
        record_id = f"{trace_id:032x}-prompt"
        attributes = {
            "event.name": "user_prompt",
            "prompt": f"prompt {trace_id}",
            "prompt.id": f"p-{trace_id}",
            "session.id": f"s-{trace_id}",
            "akto.record.id": record_id,
        }
        records.append(
            LogRecord(
                time_unix_nano=time.time_ns(),
                body=AnyValue(string_value="claude_code.user_prompt"),
                event_name="claude_code.user_prompt",
                trace_id=trace_id.to_bytes(16, "big"),
                span_id=(1).to_bytes(8, "big"),
                attributes=[
                    KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items()
                ],
            )
        )
        ids.append(record_id)
    body = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()
    request = urllib.request.Request(
        f"{otlp_http}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    return ids
