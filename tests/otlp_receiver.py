"""A minimal OTLP/HTTP receiver on 127.0.0.1 that keeps the spans it is sent (JSON or protobuf).

It also keeps every ``/v1/logs`` request as sent (content type, body, headers), for the
OTLP delivery tests to decode with the emulator's mapper. ``hold_logs`` (an
event) makes ``/v1/logs`` requests wait until it is set: an endpoint that stalls.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.log_requests: list[tuple[str, bytes, dict[str, str]]] = []
        self.hold_logs: threading.Event | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path.startswith("/v1/traces"):
                    receiver._add(body, self.headers.get("content-type", ""))
                elif self.path.startswith("/v1/logs"):
                    if receiver.hold_logs is not None:
                        receiver.hold_logs.wait(30)
                    with receiver._lock:
                        receiver.log_requests.append(
                            (self.headers.get("content-type", ""), body, dict(self.headers))
                        )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _add(self, body: bytes, content_type: str) -> None:
        found: list[dict[str, Any]] = []
        if "json" in content_type:
            data = json.loads(body)
            for rs in data.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for span in ss.get("spans", []):
                        found.append(
                            {
                                "name": span.get("name"),
                                "trace_id": str(span.get("traceId", "")).lower(),
                                "span_id": str(span.get("spanId", "")).lower(),
                                "parent_id": str(span.get("parentSpanId", "")).lower(),
                                "attributes": {
                                    a.get("key"): _json_value(a.get("value") or {})
                                    for a in span.get("attributes", [])
                                },
                            }
                        )
        else:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        found.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(),
                                "attributes": {
                                    a.key: getattr(a.value, a.value.WhichOneof("value") or "", None)
                                    for a in span.attributes
                                },
                            }
                        )
        with self._lock:
            self.spans.extend(found)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _json_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as Python (scalars; int64 arrives as a string)."""
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return None
