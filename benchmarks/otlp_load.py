"""OTLP logs load generator for fig_gateway: Claude Code events over gRPC, at full speed.

The events are what ``AKTO_DELIVERY=otlp`` emits (:func:`akto_otel.otlp_logs.log_events`
of the benchmark's contract records: per turn a ``tool_result`` and a Stop record's
``user_prompt`` + ``assistant_response``), encoded once into ``ExportLogsServiceRequest``
bodies of ``--batch`` records each, as an agent collector forwards them; ``--threads``
blocking gRPC calls send them back to back for ``--seconds``. Encoding is done before
the clock starts, so the generator's CPU goes to sending. Prints one JSON line:
``{"records", "requests", "failed", "seconds", "cpu", "bytes_per_record"}``.

Usage::

    python -m benchmarks.otlp_load --target 127.0.0.1:4317 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from akto_otel.contract import WireContext, turn_record
from akto_otel.otlp_logs import LogEvent, log_events

from .workload import tool_result

__all__ = ["encoded_requests", "main"]

_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_PROMPT = "List the files of the project and tell me which ones changed."
_ANSWER = "The project has 24 modules; module_3.py and module_7.py changed."


def _value(value: str | int) -> AnyValue:
    return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)


def _proto(event: LogEvent, trace_id: bytes, span_id: bytes) -> LogRecord:
    return LogRecord(
        time_unix_nano=event.timestamp_ns,
        observed_time_unix_nano=event.timestamp_ns,
        severity_number=event.severity.value,
        severity_text=event.severity.name,
        body=AnyValue(string_value=event.event_name),
        attributes=[KeyValue(key=k, value=_value(v)) for k, v in event.attributes.items()],
        trace_id=trace_id,
        span_id=span_id,
        event_name=event.event_name,
    )


def _turn_events(turn: int) -> list[tuple[LogEvent, bytes, bytes]]:
    """The events of one guarded turn with a tool call (3 events), with their ids."""
    trace_id = (turn + 1).to_bytes(16, "big")
    session = f"bench-session-{turn % 64}"
    ctx = WireContext().with_session(session, f"prompt-{turn}")
    out: list[tuple[LogEvent, bytes, bytes]] = []
    for n, (kind, record) in enumerate(
        (("tool.result", tool_result(turn)), ("turn", turn_record(ctx, _PROMPT, _ANSWER)))
    ):
        span_id = (n + 1).to_bytes(8, "big")
        record_id = f"{trace_id.hex()}-{span_id.hex()}-{kind}"
        out.extend((e, trace_id, span_id) for e in log_events(record, record_id=record_id))
    return out


def encoded_requests(batch: int, count: int) -> list[bytes]:
    """``count`` distinct http/protobuf-equal ``ExportLogsServiceRequest`` bodies."""
    resource = Resource(attributes=[KeyValue(key="service.name", value=_value("bench-agent"))])
    scope = InstrumentationScope(name="akto_otel")
    bodies: list[bytes] = []
    turn = 0
    for _ in range(count):
        records: list[LogRecord] = []
        while len(records) < batch:
            records.extend(_proto(*item) for item in _turn_events(turn))
            turn += 1
        logs = ScopeLogs(scope=scope, log_records=records[:batch])
        request = ExportLogsServiceRequest(
            resource_logs=[ResourceLogs(resource=resource, scope_logs=[logs])]
        )
        bodies.append(request.SerializeToString())
    return bodies


def _send(
    target: str, bodies: list[bytes], until: float, counts: Counter[str], lock: threading.Lock
) -> None:
    with grpc.insecure_channel(target) as channel:
        # No serializers: the pre-encoded bodies go out as they are.
        export = channel.unary_unary(_METHOD)
        done = failed = i = 0
        while time.monotonic() < until:
            try:
                export(bodies[i % len(bodies)], timeout=10)
                done += 1
            except grpc.RpcError:
                failed += 1
                time.sleep(0.01)
            i += 1
    with lock:
        counts["requests"] += done
        counts["failed"] += failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_load")
    parser.add_argument("--target", required=True, help="gateway OTLP gRPC host:port")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=64, help="log records per request")
    parser.add_argument("--threads", type=int, default=8, help="concurrent calls")
    args = parser.parse_args(argv)
    bodies = encoded_requests(args.batch, 16)
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    cpu0 = time.process_time()
    start = time.monotonic()
    until = start + args.seconds
    threads = [
        threading.Thread(target=_send, args=(args.target, bodies, until, counts, lock))
        for _ in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = {
        "records": counts["requests"] * args.batch,
        "requests": counts["requests"],
        "failed": counts["failed"],
        "seconds": time.monotonic() - start,
        "cpu": time.process_time() - cpu0,
        "bytes_per_record": sum(len(b) for b in bodies) / (len(bodies) * args.batch),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
