"""The emulator's OTLP logs mapper: OTLP logs -> Akto ingestData records, mapped as Akto does.

Expectations come from reading Akto's Go service (apps/otel-ingestion-service:
pkg/adapter/*.go, pkg/sink/ingest_mapper.go and its tests); the fixture has the shape
of its scripts/fixtures/cowork_logs.json (our own values). Round trips take records
the hooks build through akto_otel.otlp_logs, the real SDK LoggerProvider and the real
OTLP/HTTP log exporter into a local HTTP server, then through the mapper.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

from akto_otel import contract
from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.emulator.otlp_ingest import (
    OtlpDecodeError,
    OtlpEvent,
    decode_logs,
    map_logs,
    to_ingest_records,
)
from akto_otel.otlp_logs import EVENT_PREFIX, log_events
from tests.otlp_receiver import OtlpReceiver

FIXTURE = Path(__file__).parent / "fixtures" / "otlp_cowork_logs.json"


def _event(name: str, ts: int = 1_700_000_000, **attrs: str) -> OtlpEvent:
    return OtlpEvent(name, dict(attrs), ts * 1_000_000_000, attrs.get("prompt.id", ""))


def _json(text: str) -> Any:
    return json.loads(text)


# ------------------------------------------------------------ Akto's fixture shape


def test_cowork_fixture_maps_to_a_tool_row_and_one_merged_turn() -> None:
    records = map_logs(FIXTURE.read_bytes(), "application/json")
    assert [r["path"] for r in records] == ["/tool/read", "/v1/messages"]
    tool, turn = records

    assert tool["time"] == "1767225601"
    assert tool["ip"] == "127.0.0.1" and tool["akto_vxlan_id"] == "5e55"
    assert tool["statusCode"] == "200" and tool["status"] == "OK"
    assert tool["publishToGuardrails"] is True and tool["source"] == "MIRRORING"
    headers = _json(tool["requestHeaders"])
    assert headers["host"] == "5e55.ai-agent.claude_cowork"
    assert headers["x-otel-event"] == "claude_code.tool_result"
    assert headers["x-akto-installer-akto_message_id"] == "p-fixture-1"
    assert headers["x-akto-installer-session_id"] == "5e55-fixture"
    assert headers["x-tool-name"] == "Read"
    request = _json(tool["requestPayload"])
    assert request["toolName"] == "Read"
    # No tool_input attribute: Akto sends the whole attribute map as the body.
    assert request["body"]["duration_ms"] == "7" and request["body"]["service.name"] == "cowork"
    assert _json(tool["responsePayload"]) == {"body": {"result": request["body"]}}
    tag = _json(tool["tag"])
    assert tag["ai-agent"] == "claude_cowork" and tag["mode"] == "observe"
    assert tag["tool_name"] == "Read" and tag["hook"] == "tool_result"

    # user_prompt + api_request of one prompt.id -> one assistant_response row; its
    # attributes are the api_request's (no session.id there), as in Akto.
    assert turn["time"] == "1767225602"
    assert _json(turn["requestPayload"]) == {"body": "summarise notes"}
    assert _json(turn["responsePayload"]) == {
        "model": "claude-test-model",
        "usage": {"input_tokens": 11, "output_tokens": 3},
    }
    turn_headers = _json(turn["requestHeaders"])
    assert turn_headers["host"] == "cowork.ai-agent.claude_cowork"
    assert turn_headers["x-otel-event"] == "claude_code.assistant_response"
    assert turn_headers["x-akto-installer-akto_session_id"] == ""
    assert _json(turn["tag"])["prompt_id"] == "p-fixture-1"


def test_the_fixture_maps_the_same_from_protobuf() -> None:
    request = json_format.Parse(FIXTURE.read_text(), ExportLogsServiceRequest())
    body = request.SerializeToString()
    from_pb = map_logs(body, "application/x-protobuf")
    assert from_pb == map_logs(FIXTURE.read_bytes(), "application/json")
    assert from_pb == map_logs(body, "")  # no content type: protobuf, as in Akto


def test_records_serialise_like_go() -> None:
    records = map_logs(FIXTURE.read_bytes(), "application/json")
    assert records
    for record in records:
        headers = record["requestHeaders"]
        # encoding/json: compact, keys sorted.
        assert headers == json.dumps(_json(headers), sort_keys=True, separators=(",", ":"))
    (turn,) = to_ingest_records(
        [_event("claude_code.user_prompt", **{"prompt.id": "p", "prompt": "<b> & </b>"})]
    )
    assert turn["requestPayload"] == '{"body":"\\u003cb\\u003e \\u0026 \\u003c/b\\u003e"}'


# ------------------------------------------------------------ Akto's own unit-test cases


def test_user_prompt_identity_fields_as_akto_derives_them() -> None:
    (record,) = to_ingest_records(
        [
            _event(
                "claude_code.user_prompt",
                **{
                    "prompt.id": "prompt-abc",
                    "prompt": "hello",
                    "session.id": "529ccd89-30b4-4f2a-9c1d-abcdef123456",
                    "user.id": "0571cbc5-1234-5678-90ab-cdef12345678",
                    "user.email": "user@example.com",
                    "os.type": "darwin",
                },
            )
        ]
    )
    assert record["path"] == "/v1/messages"
    assert record["akto_vxlan_id"] == "0571cbc5" and record["ip"] == "user@example.com"
    tag = _json(record["tag"])
    assert tag["os"] == "mac" and tag["username"] == "user@example.com"
    assert tag["source"] == "ENDPOINT" and tag["akto_connector"] == "claude_cowork"
    headers = _json(record["requestHeaders"])
    assert headers["host"] == "0571cbc5.ai-agent.claude_cowork"
    assert headers["x-akto-installer-os"] == "mac"
    assert headers["x-claude_cowork-hook"] == "user_prompt"


def test_tool_rows_builtin_and_mcp() -> None:
    long_id = "0571cbc5b6d43849d7f66f42ae1e72d1"
    bash, mcp = to_ingest_records(
        [
            _event("claude_code.tool_result", tool_name="Bash", **{"user.id": long_id}),
            _event(
                "claude_code.tool_decision",
                tool_name="mcp__github__search_repos",
                **{"user.id": long_id},
            ),
        ]
    )
    assert bash["path"] == "/tool/bash"
    assert _json(bash["requestHeaders"])["host"] == "0571cbc5b6d4.ai-agent.claude_cowork"
    assert mcp["path"] == "/mcp"
    headers = _json(mcp["requestHeaders"])
    assert headers["host"] == "0571cbc5b6d4.claude_cowork.github"
    assert headers["x-mcp-server"] == "github"
    tag = _json(mcp["tag"])
    assert tag["mcp-server"] == "MCP Server" and "ai-agent" not in tag
    rpc = _json(mcp["requestPayload"])
    assert rpc["params"]["name"] == "search_repos"
    assert rpc["params"]["arguments"]["tool_name"] == "mcp__github__search_repos"


def test_internal_events_never_become_rows_and_turns_merge_tokens() -> None:
    p = {"prompt.id": "p1", "session.id": "sess-1", "user.id": "0571cbc5"}
    records = to_ingest_records(
        [
            _event("claude_code.user_prompt", 100, prompt="hello", **p),
            _event(
                "claude_code.api_request", 101, model="m", input_tokens="2", output_tokens="19", **p
            ),
            _event("claude_code.assistant_response", 102, response="hi there", model="m", **p),
            _event("claude_code.hook_execution_start", 103, **p),
            _event("claude_code.plugin_loaded", 104, **p),
            _event("claude_code.tool_decision", 105, tool_name="Bash", **p),
        ]
    )
    assert sorted(r["path"] for r in records) == ["/tool/bash", "/v1/messages"]
    turn = next(r for r in records if r["path"] == "/v1/messages")
    assert _json(turn["requestPayload"]) == {"body": "hello"}
    assert _json(turn["responsePayload"]) == {
        "model": "m",
        "content": [{"type": "text", "text": "hi there"}],
        "usage": {"input_tokens": 2, "output_tokens": 19},
    }


def test_event_name_from_the_body_and_the_adapter_choice() -> None:
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": []},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "body": {"stringValue": "claude_code.user_prompt"},
                                "attributes": [
                                    {"key": "prompt.id", "value": {"stringValue": "x"}},
                                    {"key": "prompt", "value": {"stringValue": "q"}},
                                ],
                            },
                            {"body": {"stringValue": "something else"}, "attributes": []},
                        ]
                    }
                ],
            }
        ]
    }
    events = decode_logs(json.dumps(body).encode(), "application/json")
    assert [e.event_name for e in events] == ["claude_code.user_prompt", "something else"]
    assert [e.source for e in events] == ["claude_code", "raw"]
    # The raw event has no id to merge by: Akto drops it.
    assert [r["path"] for r in to_ingest_records(events)] == ["/v1/messages"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\x00garbage", "application/x-protobuf"),
        (b"[1, 2]", "application/json"),
        (b"not json", "application/json"),
        (b'{"resourceLogs": {"x": 1}}', "application/json"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": ["x"]}]}]}', "application/json"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}',
            "json",
        ),
    ],
)
def test_bad_bodies_are_a_clear_error(body: bytes, content_type: str) -> None:
    with pytest.raises(OtlpDecodeError):
        map_logs(body, content_type)


# ------------------------------------------------------------ round trips from AKTO_DELIVERY=otlp


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


def _ship(receiver: OtlpReceiver, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (ep,) = entry_points(group="opentelemetry_logs_exporter", name="otlp_proto_http")
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(ep.load()(endpoint=f"{receiver.url}/v1/logs"))
    )
    logger = provider.get_logger("test")
    for n, record in enumerate(records):
        for event in log_events(record, record_id=f"r{n}", user_id="agent-7"):
            logger.emit(
                body=event.event_name, attributes=event.attributes, event_name=event.event_name
            )
    provider.shutdown()
    assert receiver.log_requests
    body = b"".join(b for _, b, _ in receiver.log_requests)
    return map_logs(body, "application/x-protobuf")


def test_round_trip_of_the_hooks_records(receiver: OtlpReceiver) -> None:
    wire = contract.WireContext().with_session("sess-9", "prompt-9")
    records = [
        contract.tool_result_record(wire, "Bash", {"command": "ls"}, {"stdout": "a.txt"}),
        contract.tool_request_record(
            wire, "mcp__files__delete", {"path": "/"}, blocked_reason="Too broad"
        ),
        contract.turn_record(wire, "list files", "a.txt"),
    ]
    mapped = _ship(receiver, records)
    by_path = {r["path"]: r for r in mapped}
    assert sorted(by_path) == ["/mcp", "/tool/bash", "/v1/messages"]

    bash = by_path["/tool/bash"]
    assert _json(bash["requestPayload"]) == {"body": {"command": "ls"}, "toolName": "Bash"}
    assert _json(bash["responsePayload"]) == {"body": {"result": {"stdout": "a.txt"}}}
    mcp = _json(by_path["/mcp"]["requestPayload"])
    assert mcp["params"]["name"] == "delete"
    assert mcp["params"]["arguments"]["akto.guardrail.reason"] == "Too broad"
    assert mcp["params"]["arguments"]["decision"] == "reject"
    turn = by_path["/v1/messages"]
    assert _json(turn["requestPayload"]) == {"body": "list files"}
    assert _json(turn["responsePayload"])["content"] == [{"type": "text", "text": "a.txt"}]
    for record in mapped:
        headers = _json(record["requestHeaders"])
        assert headers["x-akto-installer-akto_session_id"] == "sess-9"
        assert headers["host"].startswith("agent.")  # the device prefix from user.id
        assert record["publishToGuardrails"] is True


def test_every_hook_record_kind_has_an_event() -> None:
    wire = contract.WireContext().with_session("s", "p")
    cases = {
        "user_prompt": contract.prompt_record(wire, "hi", blocked_reason="no"),
        "tool_decision": contract.tool_request_record(wire, "Read", {"file_path": "x"}),
        "tool_result": contract.tool_result_record(wire, "Read", {"file_path": "x"}, "text"),
    }
    for name, record in cases.items():
        events = log_events(record, record_id="id")
        assert [e.event_name for e in events] == [EVENT_PREFIX + name]
        assert events[0].attributes["akto.record.id"] == f"id/{name}"
    turn = log_events(contract.turn_record(wire, "q", "a", hook="SubagentStop"), record_id="t")
    assert [e.name for e in turn] == ["user_prompt", "assistant_response"]
    # A subagent's answer gets its own prompt.id, so Akto does not fold it into the main one.
    assert turn[0].attributes["prompt.id"] == turn[1].attributes["prompt.id"] == "p/t"


# ------------------------------------------------------------ the POST /v1/logs answer


def _provider(url: str, headers: dict[str, str] | None = None) -> LoggerProvider:
    (ep,) = entry_points(group="opentelemetry_logs_exporter", name="otlp_proto_http")
    provider = LoggerProvider(shutdown_on_exit=False)
    exporter = ep.load()(endpoint=f"{url}/v1/logs", headers=headers or {})
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider


def _emit_turn(provider: LoggerProvider) -> None:
    wire = contract.WireContext().with_session("sess-e2e", "prompt-e2e")
    logger = provider.get_logger("test")
    for event in log_events(contract.turn_record(wire, "hi", "hello"), record_id="r"):
        logger.emit(body=event.event_name, attributes=event.attributes, event_name=event.event_name)
    provider.shutdown()


def _otlp_rows(akto: EmulatorServer) -> list[dict[str, Any]]:
    return [r.record for r in akto.records if r.endpoint == "otlp-logs"]


def test_a_real_exporter_with_the_bearer_token_is_stored_as_akto_maps_it() -> None:
    with EmulatorServer(Policy(()), token="s3cret") as akto:
        _emit_turn(_provider(akto.url, {"Authorization": "Bearer s3cret"}))
        rows = _otlp_rows(akto)
    # One event per request (a simple processor): Akto merges per request, so the prompt
    # and the answer are two rows; the answer's row still has the prompt with it.
    assert [r["path"] for r in rows] == ["/v1/messages", "/v1/messages"]
    assert all(r["publishToGuardrails"] is True for r in rows)
    prompt, answer = rows
    assert _json(prompt["requestPayload"]) == {"body": "hi"}
    assert _json(answer["requestPayload"]) == {"body": "hi"}
    assert _json(answer["responsePayload"])["content"] == [{"type": "text", "text": "hello"}]


def test_a_wrong_or_missing_token_is_refused_and_nothing_is_stored() -> None:
    import urllib.error
    import urllib.request

    for headers in ({"Authorization": "Bearer wrong"}, {}):
        with EmulatorServer(Policy(()), token="s3cret") as akto:
            _emit_turn(_provider(akto.url, headers))
            request = urllib.request.Request(
                f"{akto.url}/v1/logs",
                data=FIXTURE.read_bytes(),
                headers={"Content-Type": "application/json", **headers},
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 401
            assert _otlp_rows(akto) == []


def test_json_bodies_get_a_json_answer_and_limits_are_akto_s() -> None:
    from akto_otel.emulator.otlp_ingest import MAX_BODY_BYTES, handle_logs_request

    ok = handle_logs_request(
        FIXTURE.read_bytes(), content_type="application/json", authorization=None, token=None
    )
    assert (ok.status, ok.body, ok.content_type) == (200, b"{}", "application/json")
    assert [r["path"] for r in ok.records] == ["/tool/read", "/v1/messages"]
    raw = handle_logs_request(
        FIXTURE.read_bytes(), content_type="application/json", authorization="t", token="t"
    )
    assert raw.status == 200  # Akto also takes the raw token
    big = handle_logs_request(
        b"\0" * (MAX_BODY_BYTES + 1),
        content_type="application/x-protobuf",
        authorization=None,
        token=None,
    )
    assert big.status == 413 and big.records == []
    bad = handle_logs_request(
        b"not json", content_type="application/json", authorization=None, token=None
    )
    assert bad.status == 400 and bad.records == []


def test_content_cut_to_the_contract_limits_is_marked_and_keeps_the_tool_name() -> None:
    wire = contract.WireContext().with_session("s", "p")
    huge = {"command": "x" * (600 * 1024)}
    (event,) = log_events(contract.tool_result_record(wire, "Bash", huge, "ok"), record_id="r")
    assert event.attributes["akto.truncated"] == "true"
    assert event.attributes["tool_name"] == "Bash"
    assert len(str(event.attributes["tool_input"])) < 300 * 1024
    many = ["ab"] * 200_000  # too large in its structure: only a preview is kept
    record = contract.tool_result_record(wire, "Bash", many, "ok")
    assert "x-akto-truncated" in record["requestPayload"]
    (cut,) = log_events(record, record_id="r")
    assert cut.attributes["akto.truncated"] == "true"
    assert cut.attributes["tool_name"] == "Bash"
    (plain,) = log_events(contract.tool_result_record(wire, "Bash", {"a": 1}, "ok"), record_id="r")
    assert "akto.truncated" not in plain.attributes
