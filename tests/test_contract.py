"""The wire contract: golden records, URLs, batch bodies, truncation, verdict parsing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from akto_otel.contract import (
    MAX_PROXY_BODY_CHARS,
    MAX_PROXY_STRING_CHARS,
    VerdictFault,
    WireContext,
    dumps,
    encode_ingest_batch,
    encode_record,
    http_proxy_url,
    parse_verdict,
    prompt_record,
    tool_path,
    tool_request_record,
    tool_result_record,
    turn_record,
)

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "golden_records.json").read_text())
TIME_MS = 1_700_000_000_000
BUILDERS: dict[str, Any] = {
    "prompt": prompt_record,
    "tool_request": tool_request_record,
    "tool_result": tool_result_record,
    "turn": turn_record,
}


def _context(spec: dict[str, Any]) -> WireContext:
    spec = dict(spec)
    session_id = spec.pop("session_id", None)
    message_id = spec.pop("message_id", None)
    ctx = WireContext(**spec)
    return ctx.with_session(session_id, message_id) if (session_id or message_id) else ctx


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_record_matches_golden_byte_for_byte(case: dict[str, Any]) -> None:
    record = BUILDERS[case["kind"]](_context(case["context"]), **case["args"], time_ms=TIME_MS)
    expected = case["record"]
    assert list(record) == list(expected), "key order differs"
    assert record == expected
    # The reference connector sends json.dumps(record): same bytes, key order included.
    assert encode_record(record) == json.dumps(expected).encode()


def test_every_record_kind_is_covered_by_a_golden() -> None:
    """Every public record builder of the package, and every keyword that changes
    a record's shape, has a golden case: a builder added to ``contract`` without
    one fails here."""
    import inspect

    import akto_otel.contract as contract_module

    builders = {
        name.removesuffix("_record"): getattr(contract_module, name)
        for name in contract_module.__all__
        if name.endswith("_record") and name not in ("ingest_record", "encode_record")
    }
    assert builders, "contract exports no record builders"
    assert builders == BUILDERS
    cases_by_kind: dict[str, list[dict[str, Any]]] = {}
    for case in GOLDEN["cases"]:
        cases_by_kind.setdefault(case["kind"], []).append(case)
    for kind, builder in builders.items():
        assert cases_by_kind.get(kind), f"no golden record for {kind}"
        optional = {
            p.name
            for p in inspect.signature(builder).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name != "time_ms"
        }
        covered = {arg for case in cases_by_kind[kind] for arg in case["args"]}
        assert optional <= covered, f"{kind}: no golden case sets {sorted(optional - covered)}"


def test_time_defaults_to_now_in_epoch_milliseconds() -> None:
    record = prompt_record(WireContext(), "x")
    assert record["time"].isdigit() and len(record["time"]) == 13


@pytest.mark.parametrize(
    ("flags", "query"),
    [
        ({"guardrails": True}, "guardrails=true&akto_connector=c"),
        ({"response_guardrails": True}, "response_guardrails=true&akto_connector=c"),
        ({"ingest_data": True}, "akto_connector=c&ingest_data=true"),
        (
            {"guardrails": True, "response_guardrails": True, "ingest_data": True},
            "guardrails=true&response_guardrails=true&akto_connector=c&ingest_data=true",
        ),
        ({}, "akto_connector=c"),
    ],
)
def test_http_proxy_url_flag_order(flags: dict[str, bool], query: str) -> None:
    assert http_proxy_url("https://akto.example", "c", **flags) == (
        f"https://akto.example/api/http-proxy?{query}"
    )


def test_ingest_batch_drops_context_source_and_metadata() -> None:
    records = [prompt_record(WireContext(), f"p{i}", time_ms=TIME_MS) for i in range(3)]
    body = json.loads(encode_ingest_batch(records))
    assert list(body) == ["batchData"]
    assert len(body["batchData"]) == 3
    for sent, original in zip(body["batchData"], records, strict=False):
        assert "contextSource" not in sent and "metadata" not in sent
        assert sent == {k: v for k, v in original.items() if k not in ("contextSource", "metadata")}


def test_tool_path_normalization() -> None:
    ctx = WireContext()
    assert tool_path(ctx, "Read") == "/tool/Read"
    assert tool_path(ctx, "a  b!!c") == "/tool/a-b-c"
    assert tool_path(ctx, "~ok.name_1-") == "/tool/~ok.name_1"
    assert tool_path(ctx, "") == "/tool/unknown"
    assert tool_path(ctx, "***") == "/tool/unknown"
    assert tool_path(ctx, "mcp__srv__t") == "/mcp"
    # mcp__ without a tool segment is not MCP.
    assert tool_path(ctx, "mcp__srv") == "/tool/mcp__srv"
    assert tool_path(WireContext(non_mcp_tool_path_prefix="/"), "X") == "/tool/X"


def test_long_strings_are_truncated_not_rejected() -> None:
    huge = "A" * (3 * MAX_PROXY_STRING_CHARS)
    record = tool_result_record(WireContext(), "Bash", {"command": huge}, {"stdout": huge})
    for key in ("requestPayload", "responsePayload"):
        assert len(record[key]) <= MAX_PROXY_STRING_CHARS
        payload = json.loads(record[key])  # still valid JSON of the same shape
        assert "truncated" in json.dumps(payload)
    assert json.loads(record["requestPayload"])["body"]["toolName"] == "Bash"
    assert len(encode_record(record)) <= MAX_PROXY_BODY_CHARS


def test_non_ascii_heavy_text_is_measured_after_escaping() -> None:
    text = "\u4e2d" * MAX_PROXY_STRING_CHARS  # each becomes a 6-char \\uXXXX escape
    record = prompt_record(WireContext(), text)
    assert len(record["requestPayload"]) <= MAX_PROXY_STRING_CHARS
    assert json.loads(record["requestPayload"])["body"].startswith("\u4e2d")


def test_structure_too_large_becomes_a_preview() -> None:
    many = list(range(200_000))
    record = tool_request_record(WireContext(), "Bash", {"items": many})
    payload = json.loads(record["requestPayload"])
    assert payload["x-akto-truncated"] is True
    assert len(record["requestPayload"]) <= MAX_PROXY_STRING_CHARS


class _Odd:
    def __str__(self) -> str:
        return "odd-object"


def test_unencodable_values_become_json_safe() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    value = {
        "bytes": b"\xffhi",
        "set": {3, 1},
        "when": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
        "nan": float("nan"),
        "obj": _Odd(),
        "cycle": cyclic,
        1: "int key",
    }
    decoded = json.loads(dumps(value))
    assert decoded["bytes"] == "\ufffdhi"
    assert decoded["set"] == [1, 3]
    assert decoded["when"].startswith("2026-01-02")
    assert decoded["nan"] == "nan"
    assert decoded["obj"] == "odd-object"
    assert decoded["cycle"] == {"self": "[cycle]"}
    assert decoded["1"] == "int key"
    deep: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
    assert json.loads(dumps(deep))  # no RecursionError


# --------------------------------------------------------------------------- verdicts


def _gr(**fields: Any) -> dict[str, Any]:
    return {"success": True, "message": "ok", "data": {"guardrailsResult": fields}}


@pytest.mark.parametrize(
    ("body", "decision", "allowed"),
    [
        ({"success": True, "data": {}}, "allow", True),
        ({"success": True, "data": {"guardrailsResult": None}}, "allow", True),
        (_gr(Allowed=True), "allow", True),
        (_gr(Allowed=False, Reason="r", behaviour="block"), "deny", False),
        (_gr(Allowed=False, Reason="r"), "deny", False),
        (_gr(Allowed=False, Reason="r", Behaviour="Block"), "deny", False),
        (_gr(Allowed=False, behaviour="warn"), "warn", True),
        (_gr(Allowed=False, Behaviour="ALERT"), "alert", True),
        (_gr(Allowed=False, behaviour="approval"), "ask", False),
        (_gr(Allowed=False, behaviour="quarantine"), "deny", False),
        (_gr(Allowed="false", behaviour="block"), "deny", False),
        (_gr(Allowed="true"), "allow", True),
        (_gr(Allowed=None, behaviour="block"), "deny", False),
        (_gr(Allowed=True, Modified=True, ModifiedPayload='{"body": "***"}'), "modify", True),
        (_gr(Allowed=True, Modified=True, ModifiedPayload=""), "allow", True),
    ],
)
def test_parse_verdict(body: dict[str, Any], decision: str, allowed: bool) -> None:
    verdict = parse_verdict(body)
    assert (verdict.decision, verdict.allowed) == (decision, allowed)


def test_parse_verdict_reads_reason_behaviour_and_metadata() -> None:
    verdict = parse_verdict(
        _gr(
            Allowed=False,
            Reason="PII found",
            behaviour="block",
            Metadata={"policy_name": "pii", "rule_violated": "email", "severity": "HIGH"},
        )
    )
    assert verdict.reason == "PII found"
    assert verdict.behaviour == "block"
    assert (verdict.policy_name, verdict.rule_violated, verdict.severity) == (
        "pii",
        "email",
        "HIGH",
    )


def test_parse_verdict_masking() -> None:
    verdict = parse_verdict(_gr(Allowed=True, Modified=True, ModifiedPayload="x"))
    assert verdict.decision == "modify" and verdict.modified_payload == "x"
    warned = parse_verdict(_gr(Allowed=False, Modified=True, ModifiedPayload="x", behaviour="warn"))
    assert warned.decision == "modify" and warned.allowed


def test_parse_verdict_denial_with_a_mask_is_a_denial() -> None:
    # Allowed: false blocks unless the behaviour is warn/alert, whatever Modified says.
    verdict = parse_verdict(_gr(Allowed=False, Modified=True, ModifiedPayload="x"))
    assert verdict.decision == "deny" and not verdict.allowed


def test_parse_verdict_akto_fail_open_is_a_fault() -> None:
    # Akto's engine did not judge: the guard's fail mode decides (GuardrailClient._verdict).
    with pytest.raises(VerdictFault) as info:
        parse_verdict(_gr(Allowed=True, failOpen=True, error="engine down"))
    assert info.value.kind == "akto_fail_open"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({}, "invalid_response"),
        ({"success": False, "message": "guardrail engine error"}, "akto_error"),
        ({"data": None}, "invalid_response"),
        ({"success": True, "data": None}, "invalid_response"),
        (_gr(Allowed="deny"), "invalid_response"),
        (_gr(Allowed=[]), "invalid_response"),
        (_gr(Allowed=None), "invalid_response"),
        (_gr(Reason="no Allowed"), "invalid_response"),
    ],
)
def test_parse_verdict_a_reply_without_a_readable_result_is_a_fault(body: Any, kind: str) -> None:
    with pytest.raises(VerdictFault) as info:
        parse_verdict(body)
    assert info.value.kind == kind


def test_parse_verdict_nested_sides_strictest_wins() -> None:
    body = _gr(
        Allowed=True,
        Reason="",
        requestResult={"Allowed": True},
        responseResult={"Allowed": False, "Reason": "leak", "behaviour": "block"},
    )
    verdict = parse_verdict(body)
    assert verdict.decision == "deny" and verdict.reason == "leak"
    body = _gr(
        Allowed=False,
        Reason="req",
        behaviour="warn",
        requestResult={"Allowed": False, "behaviour": "warn", "Reason": "req"},
        responseResult={"Allowed": True},
    )
    assert parse_verdict(body).decision == "warn"


@pytest.mark.parametrize(
    "body",
    [
        [],
        "a string",
        42,
        None,
        {"data": "oops"},
        {"data": {"guardrailsResult": "nope"}},
        {"data": {"guardrailsResult": [1]}},
    ],
)
def test_parse_verdict_rejects_wrong_shapes(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_verdict(body)


def test_parse_verdict_tolerates_odd_field_types() -> None:
    verdict = parse_verdict(
        _gr(Allowed=False, Reason={"nested": 1}, behaviour=None, Metadata=["x"])
    )
    assert verdict.decision == "deny"
    assert verdict.reason == '{"nested": 1}'
    assert verdict.policy_name == ""


def test_absurd_identifiers_cannot_break_the_string_limit() -> None:
    huge = "s" * (2 * MAX_PROXY_STRING_CHARS)
    ctx = WireContext().with_session(huge, huge)
    for record in (
        prompt_record(ctx, "hi"),
        tool_request_record(ctx, huge, {"a": 1}),
        tool_request_record(ctx, f"mcp__{huge}__{huge}", {"a": 1}),
        tool_result_record(ctx, f"mcp__{huge}__t", {"a": 1}, {"b": 2}),
    ):
        for key, value in record.items():
            assert value is None or len(value) <= MAX_PROXY_STRING_CHARS, key
        json.loads(record["requestHeaders"])


def test_joining_items_encoded_once_is_the_batch_body() -> None:
    from akto_otel.contract import encode_ingest_item, join_ingest_items

    records = [
        tool_result_record(WireContext(), "Bash", {"c": i}, {"o": "\u00e9"}, time_ms=i)
        for i in range(4)
    ]
    assert join_ingest_items([encode_ingest_item(r) for r in records]) == encode_ingest_batch(
        records
    )
    assert join_ingest_items([encode_ingest_item(records[0])]) == encode_ingest_batch(records[:1])
