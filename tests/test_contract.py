"""The wire contract: golden records, URLs, batch bodies, truncation, verdict parsing.

Also the exact answers beyond the goldens: every field of a parsed verdict, each
spelling the parser accepts, the JSON-safe stand-ins, the cut of long payloads,
paths, identifiers and URLs (part of the mutation-testing selection,
``nox -s mutation -- contract``, docs/reliability.md).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as search
from hypothesis import strategies as st

from akto_otel.config import Settings
from akto_otel.contract import (
    _LONG_STRING,
    MAX_PROXY_BODY_CHARS,
    MAX_PROXY_STRING_CHARS,
    PAYLOAD_LIMIT,
    Verdict,
    VerdictFault,
    WireContext,
    _long_ascii_string,
    dumps,
    encode_ingest_batch,
    encode_ingest_item,
    encode_record,
    fits_payload,
    health_check_url,
    http_proxy_url,
    ingest_data_url,
    ingest_record,
    parse_claude_tool,
    parse_verdict,
    payload_chars,
    prompt_record,
    read_verdict,
    tool_path,
    tool_request_record,
    tool_request_value,
    tool_result_record,
    tool_result_values,
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


@pytest.mark.parametrize("pad", [0, 4096], ids=["remembered", "too-long-to-remember"])
def test_read_verdict_gives_the_verdict_of_its_bytes_every_time(pad: int) -> None:
    deny = {**_gr(Allowed=False, behaviour="block", Reason="no"), "padding": "x" * pad}
    allow = {**_gr(Allowed=True), "padding": "x" * pad}
    for body in (deny, allow, deny):
        raw = json.dumps(body).encode()
        assert read_verdict(raw) == parse_verdict(body)
    # A fault is raised each time, never remembered as a verdict; not JSON is a ValueError.
    for _ in range(2):
        with pytest.raises(VerdictFault):
            read_verdict(json.dumps({"success": False, "padding": "x" * pad}).encode())
        with pytest.raises(ValueError):
            read_verdict(b"{not json" + b" " * pad)


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


_LONG = _LONG_STRING  # from here on a payload is escaped in bytes
_EVERY_ASCII = "".join(map(chr, range(128)))
_PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))
_piece = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
    st.text(min_size=1, max_size=12),
    st.sampled_from(["\\", '"', '\\"', "\n", "\x7f", "\x1f", "\u00e9", "\U0001f600"]),
)
_long_text = st.builds(
    lambda piece, extra: (piece * (_LONG // len(piece) + 2))[: _LONG - 1 + extra],
    _piece,
    st.integers(0, 3),
)
_field = st.one_of(
    _long_text, st.text(max_size=20), st.integers(), st.none(), st.lists(st.integers(), max_size=3)
)


@search(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["path", "requestPayload", "responsePayload", "ip", "metadata", "contextSource"]
        ),
        _field,
        max_size=6,
    )
)
def test_records_with_long_payloads_encode_as_json_dumps_does(record: dict[str, Any]) -> None:
    """The bytes path for long printable-ASCII payloads is byte for byte json.dumps,
    whatever sits in them and around them."""
    assert encode_record(record) == json.dumps(record).encode()
    assert encode_ingest_item(record) == json.dumps(ingest_record(record)).encode()
    published = {**ingest_record(record), "publishToGuardrails": True}
    assert encode_ingest_item(record, publish_to_guardrails=True) == json.dumps(published).encode()


@pytest.mark.parametrize("size", [_LONG - 1, _LONG, _LONG + 1, 1 << 20])
@pytest.mark.parametrize(
    "text",
    [_PRINTABLE, '\\"' * 3, '{"a": "b\\\\n\\"c"}', _EVERY_ASCII, "\u00e9" + _PRINTABLE],
    ids=["printable", "escapes", "json-text", "every-ascii", "non-ascii"],
)
def test_a_long_payload_of_any_ascii_encodes_as_json_dumps_does(text: str, size: int) -> None:
    long_text = (text * (size // len(text) + 1))[:size]
    for field in ("requestPayload", "responsePayload"):
        record = {"path": "/x", field: long_text, "ip": "1.2.3.4", "n": 1}
        assert encode_record(record) == json.dumps(record).encode()
        both = {"requestPayload": long_text, "responsePayload": long_text[::-1], "x": [1]}
        assert encode_record(both) == json.dumps(both).encode()
        assert encode_ingest_item(both) == json.dumps(ingest_record(both)).encode()


def test_a_long_sparse_payload_never_goes_through_jsons_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bytes path is taken, not only equal: json.dumps (a spy on the real one in
    contract's namespace) encodes the small fields around the payload, never the
    payload itself, for the http-proxy body, an ingest item and an observed item."""
    import collections
    import types

    from akto_otel import contract

    encoded: list[int] = []

    def dumps(value: Any) -> str:
        text = json.dumps(value)
        encoded.append(len(text))
        return text

    # A window's payload: JSON text, a backslash per escaped newline, a "quoted" word.
    line = "echo 'build step output with some ordinary text in it, \"quoted\"' >> log\n"
    payload = json.dumps({"body": [line * 400]})
    assert len(payload) > _LONG
    monkeypatch.setattr(contract, "json", types.SimpleNamespace(dumps=dumps))
    for field in ("requestPayload", "responsePayload"):
        record = {"path": "/x", field: payload, "ip": "1.2.3.4"}
        for body in (
            encode_record(record),
            encode_ingest_item(record),
            encode_ingest_item(record, publish_to_guardrails=True),
        ):
            assert json.loads(body)[field] == payload
        assert encoded and max(encoded) < 1000
        encoded.clear()
    ordered = collections.OrderedDict(path="/x", requestPayload=payload)
    assert encode_record(ordered) == json.dumps(ordered).encode()
    assert max(encoded) > len(payload)  # not a dict: json.dumps, whole


@pytest.mark.parametrize(
    ("text", "bytes_path"),
    [
        ("x" * 11 + '"', True),  # one escape in 12: still sparse
        ("x" * 10 + '"\\', False),  # two in 12: json's loop is as fast there
        ('"' * 32, False),
        ("x" * 11 + "\n", False),  # a control character
        ("x" * 11 + "\u00e9", False),
    ],
)
def test_only_sparse_printable_ascii_takes_the_bytes_path(text: str, bytes_path: bool) -> None:
    """Dense quotes or backslashes cost bytes.replace 4x json's time (an attacker's
    payload of quotes): those, like any other string, are left to json.dumps."""
    long_text = text * (_LONG // len(text) + 1)
    escaped = _long_ascii_string(long_text)
    assert (escaped is not None) is bytes_path
    if escaped is not None:
        assert b'"' + escaped + b'"' == json.dumps(long_text).encode()
    record = {"requestPayload": long_text}
    assert encode_record(record) == json.dumps(record).encode()


@pytest.mark.parametrize(
    ("head", "rest", "rest_size"),
    [("x" * 11 + '"', '"', _LONG), ('"', "x" * 63 + '"', 16 * _LONG)],
    ids=["dense-after-a-sparse-head", "dense-head-then-sparse"],
)
def test_density_is_judged_on_the_head_first_then_on_the_whole(
    head: str, rest: str, rest_size: int
) -> None:
    """A sparse first 16 KiB does not let a dense remainder through the bytes path
    (judged on the whole); a dense head sends the payload to json.dumps at once, even
    when the whole would be sparse."""
    text = (head * _LONG)[:_LONG] + (rest * rest_size)[:rest_size]
    assert _long_ascii_string(text) is None
    record = {"responsePayload": text}
    assert encode_record(record) == json.dumps(record).encode()


def _gr_no_message(**fields: Any) -> dict[str, Any]:
    return {"success": True, "data": {"guardrailsResult": fields}}


# --------------------------------------------------------------------------- verdicts


def test_every_field_of_a_denial_is_read() -> None:
    meta = {"policy_name": "P", "rule_violated": "R", "severity": "HIGH"}
    verdict = parse_verdict(
        _gr_no_message(Allowed=False, Reason="bad", Behaviour=" Block ", Metadata=meta)
    )
    assert verdict == Verdict(
        decision="deny",
        allowed=False,
        behaviour="block",
        reason="bad",
        policy_name="P",
        rule_violated="R",
        severity="HIGH",
    )


def test_lower_case_keys_and_odd_types_are_read() -> None:
    verdict = parse_verdict(
        _gr_no_message(Allowed="false", reason={"why": 1}, behaviour="warn", Metadata=[1])
    )
    assert verdict == Verdict(decision="warn", allowed=True, behaviour="warn", reason='{"why": 1}')
    assert parse_verdict(_gr_no_message(Allowed=False, Reason=None)).reason == ""
    meta = {"policy_name": 7, "severity": None}
    assert parse_verdict(_gr_no_message(Allowed=False, Metadata=meta)).policy_name == "7"


@pytest.mark.parametrize(
    ("allowed", "decision"),
    [
        (True, "allow"),
        (" TRUE ", "allow"),
        ("true", "allow"),
        (False, "deny"),
        ("False", "deny"),
        (" false", "deny"),
    ],
)
def test_the_readable_spellings_of_allowed(allowed: Any, decision: str) -> None:
    assert parse_verdict(_gr_no_message(Allowed=allowed)).decision == decision


UNREADABLE_ALLOWED = [
    "1",
    "yes",
    "on",
    "0",
    "no",
    "off",
    "maybe",
    "deny",
    "",
    0,
    1,
    0.0,
    [],
    {},
    None,
]


@pytest.mark.parametrize("allowed", UNREADABLE_ALLOWED)
def test_an_unreadable_allowed_alone_is_a_fault(allowed: Any) -> None:
    with pytest.raises(VerdictFault) as info:
        parse_verdict(_gr_no_message(Allowed=allowed, Reason="r"))
    assert info.value.kind == "invalid_response"
    with pytest.raises(VerdictFault):
        parse_verdict(_gr_no_message(Reason="r"))  # missing


@pytest.mark.parametrize("behaviour", ["warn", "alert", "", "  "])
def test_an_unreadable_allowed_next_to_a_passing_behaviour_is_a_fault(behaviour: str) -> None:
    with pytest.raises(VerdictFault) as info:
        parse_verdict(_gr_no_message(Allowed="maybe", behaviour=behaviour))
    assert info.value.kind == "invalid_response"


@pytest.mark.parametrize("allowed", [*UNREADABLE_ALLOWED, "missing"])
@pytest.mark.parametrize(
    ("behaviour", "decision"),
    [("block", "deny"), (" Block ", "deny"), ("quarantine", "deny"), ("approval", "ask")],
)
def test_an_unreadable_allowed_next_to_a_blocking_behaviour_stops_it(
    allowed: Any, behaviour: str, decision: str
) -> None:
    fields: dict[str, Any] = {"Reason": "r", "Behaviour": behaviour}
    if allowed != "missing":
        fields["Allowed"] = allowed
    verdict = parse_verdict(_gr_no_message(**fields))
    assert (verdict.decision, verdict.allowed, verdict.reason) == (decision, False, "r")


@pytest.mark.parametrize("fail_open", ["true", " Yes ", "1", "on", True, 1])
def test_akto_failing_open_is_a_fault_not_an_allow(fail_open: Any) -> None:
    for fields in (
        {"Allowed": True},
        {"Allowed": False, "behaviour": "warn"},
        {"Allowed": True, "Modified": True, "ModifiedPayload": "m"},
    ):
        with pytest.raises(VerdictFault) as info:
            parse_verdict(_gr_no_message(**fields, failOpen=fail_open, error="engine down"))
        assert info.value.kind == "akto_fail_open"


@pytest.mark.parametrize("fail_open", ["false", "0", "no", "off", "maybe", False, 0, None, []])
def test_a_fail_open_flag_that_is_not_set_changes_nothing(fail_open: Any) -> None:
    assert parse_verdict(_gr_no_message(Allowed=True, failOpen=fail_open)) == Verdict(
        decision="allow", allowed=True
    )


def test_a_deny_next_to_fail_open_stays_a_deny() -> None:
    verdict = parse_verdict(
        _gr_no_message(Allowed=False, behaviour="block", Reason="r", failOpen=True)
    )
    assert (verdict.decision, verdict.fail_open, verdict.error) == ("deny", False, None)


@pytest.mark.parametrize(
    ("fields", "decision"),
    [
        (
            {"Allowed": False, "behaviour": "warn", "Modified": True, "ModifiedPayload": "m"},
            "modify",
        ),
        (
            {"Allowed": False, "behaviour": "alert", "Modified": True, "ModifiedPayload": "m"},
            "modify",
        ),
        (
            {"Allowed": False, "behaviour": "block", "Modified": True, "ModifiedPayload": "m"},
            "deny",
        ),
        ({"Allowed": True, "Modified": "false", "ModifiedPayload": "m"}, "allow"),
        ({"Allowed": True, "Modified": True, "ModifiedPayload": {"x": 1}}, "allow"),
        ({"Allowed": True, "Modified": True}, "allow"),
    ],
)
def test_a_mask_applies_only_to_a_passing_verdict_with_a_text_payload(
    fields: dict[str, Any], decision: str
) -> None:
    verdict = parse_verdict(_gr_no_message(**fields))
    assert verdict.decision == decision
    assert verdict.modified_payload == ("m" if decision == "modify" else None)
    assert verdict.allowed is (decision != "deny")


@pytest.mark.parametrize(
    ("request_side", "response_side", "top", "expected"),
    [
        ({"Allowed": True}, {"Allowed": False, "Reason": "out"}, {"Allowed": True}, "out"),
        ({"Allowed": False, "Reason": "in"}, {"Allowed": True}, {"Allowed": True}, "in"),
        (
            {"Allowed": False, "behaviour": "approval", "Reason": "a"},
            {"Allowed": False, "behaviour": "warn", "Reason": "w"},
            {"Allowed": True},
            "a",
        ),
        (
            {"Allowed": False, "behaviour": "warn", "Reason": "w"},
            {"Allowed": False, "behaviour": "alert", "Reason": "al"},
            {"Allowed": True},
            "w",
        ),
        (
            {"Allowed": True, "Modified": True, "ModifiedPayload": "m", "Reason": "mask"},
            {"Allowed": False, "behaviour": "warn", "Reason": "w"},
            {"Allowed": True},
            "mask",
        ),
        (
            {"Allowed": False, "behaviour": "warn", "Reason": "w"},
            {"Allowed": True},
            {"Allowed": False, "Reason": "top"},
            "top",
        ),
        (
            {"Allowed": False, "behaviour": "warn", "Reason": "w"},
            {"Allowed": True},
            {"Allowed": False, "behaviour": "warn", "Reason": "top"},
            "top",
        ),
        (
            {"Allowed": True, "Reason": "r1"},
            {"Allowed": True, "Reason": "r2"},
            {"Allowed": True, "Reason": "t"},
            "t",
        ),
    ],
)
def test_the_strictest_side_wins_and_the_top_level_wins_ties(
    request_side: dict[str, Any], response_side: dict[str, Any], top: dict[str, Any], expected: str
) -> None:
    body = _gr_no_message(**top, requestResult=request_side, responseResult=response_side)
    assert parse_verdict(body).reason == expected


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        ([1], "invalid_response", "verdict body is a list"),
        ({}, "invalid_response", "'success' is None, not true"),
        (
            {"data": {"guardrailsResult": {"Allowed": False}}},
            "invalid_response",
            "'success' is None, not true",
        ),
        ({"success": False, "message": "engine"}, "akto_error", "'success' is False, not true"),
        ({"success": "true", "data": {}}, "akto_error", "'success' is 'true', not true"),
        ({"success": 1, "data": {}}, "akto_error", "'success' is 1, not true"),
        ({"success": True}, "invalid_response", "verdict 'data' is a NoneType"),
        ({"success": True, "data": None}, "invalid_response", "verdict 'data' is a NoneType"),
        ({"success": True, "data": "x"}, "invalid_response", "verdict 'data' is a str"),
        ({"success": True, "data": []}, "invalid_response", "verdict 'data' is a list"),
        (
            {"success": True, "data": {"guardrailsResult": 3}},
            "invalid_response",
            "'guardrailsResult' is a int",
        ),
    ],
)
def test_a_body_that_is_not_a_verdict_says_why(body: Any, kind: str, message: str) -> None:
    with pytest.raises(VerdictFault) as info:
        parse_verdict(body)
    assert (info.value.kind, str(info.value)) == (kind, message)


def test_nothing_ran_is_an_allow_that_did_not_run() -> None:
    with pytest.raises(VerdictFault):  # a result without Allowed is a fault...
        parse_verdict(_gr_no_message())
    # ... while no result at all, in a well-formed success, means nothing ran.
    assert parse_verdict({"success": True, "data": {"guardrailsResult": None}}) == Verdict.allow()
    assert parse_verdict({"success": True, "data": {}}) == Verdict(
        decision="allow", allowed=True, ran=False
    )


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({}, "deny"),  # the top level says nothing: the sides decide
        ({"Allowed": True}, "deny"),
        ({"Allowed": "??"}, "deny"),  # a deny on a side wins over a fault on the top
    ],
)
def test_a_deny_on_a_side_wins_over_a_fault_or_silence(top: dict[str, Any], expected: str) -> None:
    body = _gr_no_message(
        **top,
        requestResult={"Allowed": "??"},
        responseResult={"Allowed": False, "behaviour": "block", "Reason": "leak"},
    )
    assert parse_verdict(body).decision == expected


def test_an_approval_on_a_side_wins_over_a_fault() -> None:
    body = _gr_no_message(
        requestResult={"Allowed": False, "behaviour": "approval"},
        responseResult={"Allowed": "??"},
    )
    assert parse_verdict(body).decision == "ask"


@pytest.mark.parametrize(
    "sides",
    [
        ({"Allowed": True}, {"Allowed": "??"}),
        ({"Allowed": False, "behaviour": "warn"}, {"Allowed": True, "failOpen": True}),
        ({"Allowed": True, "Modified": True, "ModifiedPayload": "m"}, {"Reason": "no Allowed"}),
    ],
)
def test_a_fault_on_any_side_beats_a_pass(sides: tuple[dict[str, Any], dict[str, Any]]) -> None:
    with pytest.raises(VerdictFault):
        parse_verdict(_gr_no_message(requestResult=sides[0], responseResult=sides[1]))
    with pytest.raises(VerdictFault):
        parse_verdict(_gr_no_message(Allowed=True, requestResult=sides[0], responseResult=sides[1]))


def test_failure_verdicts() -> None:
    assert Verdict.failure("timeout", fail_closed=True) == Verdict(
        decision="error",
        allowed=False,
        reason="Akto guardrails unavailable (timeout)",
        error="timeout",
        ran=False,
    )
    opened = Verdict.failure("x", fail_closed=False, reason="why")
    assert (opened.allowed, opened.fail_open, opened.reason) == (True, True, "why")
    assert Verdict.allow(ran=True).ran is True
    assert Verdict.allow().with_latency(0.5).latency_s == 0.5


# --------------------------------------------------------------------------- JSON encoding


def test_json_safe_stand_ins() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    value = {
        None: 1,
        True: 2,
        2.5: 3,
        float("inf"): 4,
        (1, 2): 5,
        "f": float("-inf"),
        "b": bytearray(b"ab"),
        "m": memoryview(b"cd"),
        "t": (1, "x"),
        "fs": frozenset({"b", "a"}),
        "u": Unprintable(),
        "ok": [True, None, 1, 1.5],
    }
    decoded = json.loads(dumps(value))
    assert decoded == {
        "null": 1,
        "true": 2,
        "2.5": 3,
        "inf": 4,
        "(1, 2)": 5,
        "f": "-inf",
        "b": "ab",
        "m": "cd",
        "t": [1, "x"],
        "fs": ["a", "b"],
        "u": "<unprintable Unprintable>",
        "ok": [True, None, 1, 1.5],
    }
    assert json.loads(dumps({Unprintable(): 1, "n": math.nan})) == {
        "<unprintable Unprintable>": 1,
        "n": "nan",
    }


def test_a_value_seen_twice_is_not_a_cycle_and_depth_is_capped_at_64() -> None:
    shared = [1]
    assert json.loads(dumps({"a": shared, "b": shared, "s": {1}})) == {
        "a": [1],
        "b": [1],
        "s": [1],
    }
    deep: Any = "leaf"
    for _ in range(70):
        deep = [deep]
    decoded: Any = json.loads(dumps([deep, {1}]))  # the set forces the safe path
    depth = 0
    node = decoded[0]
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert (node, depth) == ("[max depth]", 63)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert json.loads(dumps({"c": cyclic, "s": {1}})) == {"c": ["[cycle]"], "s": [1]}


def test_payload_size_is_measured_escaped_and_the_limit_is_inclusive() -> None:
    assert payload_chars({"body": "é"}) == len('{"body": "\\u00e9"}')
    exact = "a" * (PAYLOAD_LIMIT - len('{"body": ""}'))
    assert fits_payload({"body": exact}) and not fits_payload({"body": exact + "a"})
    record = prompt_record(WireContext(), exact)
    assert json.loads(record["requestPayload"]) == {"body": exact}


def test_long_strings_are_cut_with_a_marker_that_counts_what_was_cut() -> None:
    record = tool_request_record(WireContext(), "Bash", {"a": "x" * 300_000, "b": "short"})
    payload = json.loads(record["requestPayload"])
    cap = PAYLOAD_LIMIT // 2
    assert payload["body"]["a"] == "x" * cap + f"...[truncated {300_000 - cap} chars]"
    assert payload["body"]["b"] == "short" and payload["toolName"] == "Bash"


def test_a_structure_too_large_to_cut_is_a_preview_of_a_quarter() -> None:
    record = tool_request_record(WireContext(), "Bash", list(range(200_000)))
    payload = json.loads(record["requestPayload"])
    assert set(payload) == {"x-akto-truncated", "preview"}
    assert payload["x-akto-truncated"] is True
    assert len(payload["preview"]) == PAYLOAD_LIMIT // 4
    assert payload["preview"].startswith('{"body": [0, 1, 2')


# --------------------------------------------------------------------------- records and tools


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("mcp__srv__tool", (True, "srv", "tool")),
        ("mcp__srv__a__b", (True, "srv", "a__b")),
        ("mcp__srv", (False, "", "")),
        ("mcp____tool", (False, "", "")),
        ("mcp__srv__", (False, "", "")),
        ("Bash", (False, "", "")),
    ],
)
def test_parse_claude_tool(name: str, parsed: tuple[bool, str, str]) -> None:
    assert parse_claude_tool(name) == parsed


@pytest.mark.parametrize(
    ("prefix", "name", "path"),
    [
        ("/tool", "Bash", "/tool/Bash"),
        ("tools/", "Web Fetch!", "/tools/Web-Fetch"),
        ("  ", "Bash", "/tool/Bash"),
        ("/", "x", "/tool/x"),
        ("/t", "--a//b--", "/t/a-b"),
        ("/t", "", "/t/unknown"),
        ("/t", "!!!", "/t/unknown"),
        ("/t", "a.b_c~d", "/t/a.b_c~d"),
    ],
)
def test_tool_paths(prefix: str, name: str, path: str) -> None:
    assert tool_path(WireContext(non_mcp_tool_path_prefix=prefix), name) == path
    assert tool_path(WireContext(mcp_ingest_path="/m"), "mcp__s__t") == "/m"


def test_identifiers_are_capped_at_1024_characters() -> None:
    ctx = WireContext().with_session("s" * 1025, "m" * 1024)
    record = turn_record(ctx, "q", "a")
    headers = json.loads(record["requestHeaders"])
    assert headers["x-akto-installer-akto_session_id"] == "s" * 1024
    assert headers["x-akto-installer-akto_message_id"] == "m" * 1024
    assert tool_path(WireContext(), "n" * 2000) == "/tool/" + "n" * 1024
    bare = json.loads(turn_record(WireContext().with_session(None, ""), "q", "a")["requestHeaders"])
    assert bare == {
        "host": "api.anthropic.com",
        "x-claude-hook": "Stop",
        "content-type": "application/json",
    }


def test_a_context_keeps_its_values_through_with_session() -> None:
    ctx = WireContext(
        akto_host="h",
        client_ip="1.2.3.4",
        vxlan_id="9",
        connector_value="c",
        context_source="ENDPOINT",
        mcp_ingest_path="/m",
        non_mcp_tool_path_prefix="/p",
    )
    assert ctx.with_session("s", None) == WireContext(
        akto_host="h",
        client_ip="1.2.3.4",
        vxlan_id="9",
        connector_value="c",
        context_source="ENDPOINT",
        mcp_ingest_path="/m",
        non_mcp_tool_path_prefix="/p",
        extra_request_headers=(("x-akto-installer-akto_session_id", "s"),),
    )


def test_payload_values_of_tool_records() -> None:
    assert tool_request_value("Bash", {"c": 1}) == {"body": {"c": 1}, "toolName": "Bash"}
    rpc = {"jsonrpc": "2.0", "method": "tools/call", "id": 1}
    assert tool_request_value("mcp__s__t", None) == {
        **rpc,
        "params": {"name": "t", "arguments": {}},
    }
    assert tool_request_value("mcp__s__t", "x") == {
        **rpc,
        "params": {"name": "t", "arguments": {"input": "x"}},
    }
    assert tool_result_values("Bash", {"c": 1}, "out") == (
        {"body": {"toolName": "Bash", "toolArgs": {"c": 1}}},
        {"body": {"result": "out"}},
    )
    request, response = tool_result_values("mcp__s__t", {"a": 1}, [1])
    assert request == {**rpc, "params": {"name": "t", "arguments": {"a": 1}}}
    assert response == {"jsonrpc": "2.0", "id": 1, "result": {"output": [1]}}
    assert tool_result_values("mcp__s__t", {}, {"content": []})[1]["result"] == {"content": []}


# --------------------------------------------------------------------------- URLs


def test_urls() -> None:
    assert http_proxy_url("https://a", "c") == "https://a/api/http-proxy?akto_connector=c"
    assert http_proxy_url(
        "https://a", "c", guardrails=True, response_guardrails=True, ingest_data=True
    ) == (
        "https://a/api/http-proxy?guardrails=true&response_guardrails=true"
        "&akto_connector=c&ingest_data=true"
    )
    assert ingest_data_url("https://a") == "https://a/api/ingestData"
    assert health_check_url("https://a") == "https://a/healthCheck"


def test_a_context_from_settings_carries_every_wire_value() -> None:
    settings = Settings(
        akto_host="h",
        agent_id="9",
        connector_value="c",
        mode="atlas",
        mcp_ingest_path="/m",
        non_mcp_tool_path_prefix="/p",
    )
    assert WireContext.from_settings(settings, client_ip="1.2.3.4") == WireContext(
        akto_host="h",
        client_ip="1.2.3.4",
        vxlan_id="9",
        connector_value="c",
        context_source="ENDPOINT",
        mcp_ingest_path="/m",
        non_mcp_tool_path_prefix="/p",
    )
    assert WireContext.from_settings(Settings()) == WireContext()


def test_a_string_exactly_at_the_cut_length_is_kept_whole() -> None:
    cap = PAYLOAD_LIMIT // 4  # the second round: three long strings do not fit at half
    value = {"a": "x" * cap, "b": "y" * 300_000, "c": ["z" * 300_000, 1]}
    body = json.loads(tool_request_record(WireContext(), "Bash", value)["requestPayload"])["body"]
    assert body["a"] == "x" * cap
    assert body["b"] == "y" * cap + f"...[truncated {300_000 - cap} chars]"
    assert body["c"] == ["z" * cap + f"...[truncated {300_000 - cap} chars]", 1]


def test_json_safe_mappings_count_depth_and_forget_what_they_left() -> None:
    deep: Any = "leaf"
    for _ in range(70):
        deep = {"k": deep}
    node: Any = json.loads(dumps({"d": deep, "s": {1}}))["d"]
    depth = 0
    while isinstance(node, dict):
        node, depth = node["k"], depth + 1
    assert (node, depth) == ("[max depth]", 63)
    shared = {"x": 1}
    assert json.loads(dumps({"a": shared, "b": shared, "s": {1}})) == {
        "a": {"x": 1},
        "b": {"x": 1},
        "s": [1],
    }
    assert json.loads(dumps({"s": {1, "a"}})) == {"s": ["a", 1]}  # sorted by repr


def test_an_empty_tool_prefix_falls_back_to_tool() -> None:
    assert tool_path(WireContext(non_mcp_tool_path_prefix=""), "Bash") == "/tool/Bash"


def test_a_blocked_prompt_without_a_reason_gets_the_default_one() -> None:
    record = prompt_record(WireContext(), "p", blocked_reason="")
    body = json.loads(json.loads(record["responsePayload"])["body"])
    assert body == {"x-blocked-by": "Akto Proxy", "reason": "Policy violation"}


@pytest.mark.parametrize("modified", ["1", "yes", " ON ", "true", True, 1])
def test_every_spelling_of_modified(modified: Any) -> None:
    verdict = parse_verdict(_gr_no_message(Allowed=True, Modified=modified, ModifiedPayload="m"))
    assert (verdict.decision, verdict.modified_payload) == ("modify", "m")


def test_no_modified_flag_is_no_mask_and_an_alert_keeps_its_reason() -> None:
    assert parse_verdict(_gr_no_message(Allowed=True, ModifiedPayload="m")).decision == "allow"
    alert = parse_verdict(_gr_no_message(Allowed=False, behaviour="alert", Reason="r"))
    assert (alert.decision, alert.allowed, alert.reason) == ("alert", True, "r")


def test_nan_and_infinity_are_never_bare_json() -> None:
    assert dumps({"n": math.nan, "i": math.inf}) == '{"n": "nan", "i": "inf"}'


def test_a_prefix_loses_only_its_trailing_slashes() -> None:
    assert tool_path(WireContext(non_mcp_tool_path_prefix="/apiX//"), "Bash") == "/apiX/Bash"


def test_a_blocked_answer_without_a_reason_gets_the_default_one() -> None:
    record = turn_record(WireContext(), "q", "a", blocked_reason="")
    body = json.loads(json.loads(record["responsePayload"])["body"])
    assert body == {"x-blocked-by": "Akto Proxy", "reason": "Policy violation"}


def test_the_default_time_is_now_in_milliseconds() -> None:
    before = int(time.time() * 1000)
    stamp = int(prompt_record(WireContext(), "x")["time"])
    after = int(time.time() * 1000)
    assert before <= stamp <= after


def test_a_cut_payload_exactly_at_the_limit_is_kept_at_that_cut() -> None:
    def payload(k: int) -> str:
        value = {"a": "x" * k, "b": "y" * 300_000}
        return str(tool_request_record(WireContext(), "Bash", value)["requestPayload"])

    k = PAYLOAD_LIMIT - len(payload(0))
    assert len(payload(k)) == PAYLOAD_LIMIT
    assert json.loads(payload(k))["body"]["a"] == "x" * k  # the first cut, not a deeper one


def test_with_latency_copies_every_field_but_the_latency() -> None:
    import dataclasses

    verdict = Verdict(
        decision="modify",
        allowed=True,
        behaviour="mask",
        reason="r",
        modified_payload="***",
        policy_name="p",
        rule_violated="v",
        severity="HIGH",
        akto_allowed=True,
    )
    timed = verdict.with_latency(1.5)
    assert timed == dataclasses.replace(verdict, latency_s=1.5)
    assert timed.akto_allowed is True and type(timed) is Verdict
    assert verdict.latency_s == 0.0  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        timed.latency_s = 2.0  # type: ignore[misc]
