"""Windows carry what the tool and the model see, and planning never fails open.

Issue 21, items 1 and 4. A window is judged by Akto after Akto decodes the record
(parses the payload JSON and reads its strings). The properties here decode every
window the way Akto (and the emulator) does and check, for any nested input:

- every window string is a piece of one string a decoder reads from the content
  (the tool name, a key, a value, a scalar's JSON text), never JSON text;
- every substring of such a string no longer than the overlap (escaped) lies
  whole, decoded, in one window;
- each record fits the payload limit and the number of windows grows with the
  content's size, not with any one name in it.

Planning that fails (an unreadable value, an absurd name) is a deny whatever the
fail mode. On the code before issue 21 the windows were pieces of the input's
JSON text and the first property fails on the first escape.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akto_otel import contract
from akto_otel.config import Settings
from akto_otel.contract import Verdict, WireContext
from akto_otel.emulator import EmulatorServer, Policy, Rule
from akto_otel.guardrails import GuardrailClient
from akto_otel.windows import Limits, Plan, escaped_len, judge, plan_tool_call, plan_tool_result
from tests.conftest import SpanCapture
from tests.security.attack_kit import guard

EMOJI = "\U0001f600"
WIRE = WireContext()

characters = st.one_of(
    st.sampled_from(["\t", "\n", '"', "\\", "/", "é", EMOJI, "\x00", "\x1f", "\u2028", "a", " "]),
    st.characters(categories=["Cs"]),  # lone surrogates, and pairs of them side by side
    st.characters(),
)
texts = st.text(characters, max_size=40)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(texts, inner, max_size=5)),
    max_leaves=12,
)
names = st.one_of(
    st.sampled_from(["Bash", "Write", "mcp__ops__dump", "mcp__db__run"]),
    st.text(characters, min_size=1, max_size=30),
)


def decoded_strings(value: Any) -> list[str]:
    """The strings a JSON decoder reads from ``value``: keys, string values and the
    JSON text of other scalars, after a round trip through JSON (as Akto sees them)."""
    out: list[str] = []
    stack = [json.loads(json.dumps(value))]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                out.append(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            out.append(item)
        else:
            out.append(json.dumps(item))
    return [s for s in out if s]


def window_strings(plan: Plan, field: str) -> list[list[str]]:
    """The strings of each window record, decoded as Akto decodes the payload."""
    windows = []
    for record in plan.records:
        payload = json.loads(record[field])
        if "jsonrpc" in payload:
            inner = payload.get("result", {}).get("output")
            if inner is None:
                inner = payload["params"]["arguments"]["input"]
        elif "toolName" in payload:
            inner = payload["body"]
        else:
            inner = payload["body"]["result"]
        assert isinstance(inner, list), "a window carries decoded strings, not JSON text"
        windows.append(inner)
    return windows


def assert_covered(strings: list[str], windows: list[list[str]], overlap: int) -> None:
    pieces = [w for window in windows for w in window]
    for piece in pieces:
        assert any(piece in s for s in strings), f"{piece!r} is no piece of what the tool sees"
    for s in strings:
        for start in range(len(s)):
            for end in range(start + 1, len(s) + 1):
                if escaped_len(s[start:end]) > overlap:
                    break
                assert any(s[start:end] in p for p in pieces), (s[start:end], pieces)


def _limits(overhead: int, capacity: int, overlap: int) -> tuple[Limits, int]:
    limits = Limits(payload=overhead + capacity, overlap=overlap, max_total=10**7)
    return limits, min(overlap, (capacity - 4 - 1) // 2)


def _call_overhead(name: str) -> int:
    return len(contract.dumps(contract.tool_request_value(name[:1024], [])))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, values, st.integers(16, 160), st.integers(0, 40))
def test_tool_call_windows_are_decoded_strings_and_cover_them(
    name: str, value: Any, capacity: int, overlap: int
) -> None:
    limits, effective = _limits(_call_overhead(name), capacity, overlap)
    plan = plan_tool_call(WIRE, name, value, limits)
    assert not plan.failed and not plan.too_large and plan.records
    assert all(len(r["requestPayload"]) <= limits.payload for r in plan.records)
    whole = contract.dumps(contract.tool_request_value(name, value))
    if len(whole) <= limits.payload:  # judged whole, as the contract encodes it
        assert [r["requestPayload"] for r in plan.records] == [whole]
        return
    strings = decoded_strings([name, value])
    assert_covered(strings, window_strings(plan, "requestPayload"), effective)
    # Bounded by the content: two windows in a row hold more than one window's room,
    # and a long string's pieces advance by the window less the overlap (less one
    # character, at most 12 escaped, that does not fit).
    advance = max(1, capacity - 4 - effective - 12)
    assert len(plan.records) <= 2 * plan.size // advance + 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, values, st.integers(16, 160), st.integers(0, 40))
def test_tool_result_windows_are_decoded_strings_and_cover_them(
    name: str, output: Any, capacity: int, overlap: int
) -> None:
    overhead = len(contract.dumps(contract.tool_result_values(name[:1024], {}, [])[1]))
    limits, effective = _limits(overhead, capacity, overlap)
    plan = plan_tool_result(WIRE, name, {"q": "x"}, output, limits)
    assert not plan.failed and not plan.too_large and plan.records
    assert all(len(r["responsePayload"]) <= limits.payload for r in plan.records)
    if len(contract.dumps(contract.tool_result_values(name, {}, output)[1])) <= limits.payload:
        return  # judged whole, as the contract encodes it
    assert_covered(decoded_strings(output), window_strings(plan, "responsePayload"), effective)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=6), st.integers(16, 80))
def test_what_the_emulator_received_decodes_to_what_the_tool_sees(
    parts: list[str], capacity: int
) -> None:
    """The same property on the records a real emulator received over HTTP."""
    value = {"command": "".join(parts) * 3, "args": parts}
    limits, effective = _limits(_call_overhead("Bash"), capacity, 16)
    plan = plan_tool_call(WIRE, "Bash", value, limits)

    async def send() -> list[dict[str, Any]]:
        with EmulatorServer(Policy(())) as akto:
            client = GuardrailClient(Settings(ingestion_url=akto.url, timeout=10.0))
            try:
                verdict = await judge(lambda r: client.check(r, request=True), plan, limits)
            finally:
                await client.aclose()
            assert verdict.decision == "allow"
            return [r.record for r in akto.records]

    received = asyncio.run(send())
    assert len(received) == len(plan.records)
    if not plan.windowed:
        return
    got = Plan(tuple(received), plan.size)
    assert_covered(
        decoded_strings(["Bash", value]), window_strings(got, "requestPayload"), effective
    )


# --------------------------------------------------------------------------- examples


def test_a_tab_in_a_padded_command_reaches_akto_as_a_tab() -> None:
    command = EMOJI * 22_000 + "; rm\t-rf /x"
    plan = plan_tool_call(WIRE, "Bash", {"command": command}, Limits())
    assert plan.windowed
    pieces = [p for w in window_strings(plan, "requestPayload") for p in w]
    assert any("rm\t-rf /x" in p for p in pieces)
    assert not any("\\t" in p or "\\ud83d" in p for p in pieces)


def test_a_long_value_fills_the_rest_of_a_window() -> None:
    # The first piece of a long value shares its window with the short strings before it.
    plan = plan_tool_call(WIRE, "Bash", {"command": "a" * 600_000}, Limits())
    first = window_strings(plan, "requestPayload")[0]
    assert first[:2] == ["Bash", "command"] and len(first) == 3
    assert len(plan.records) == 3


def test_windows_grow_with_the_content_not_with_a_name() -> None:
    for size in (300_000, 2_000_000):
        name = "n" * size
        plan = plan_tool_call(WIRE, name, {"command": "ls"}, Limits())
        assert not plan.failed and plan.windowed
        assert len(plan.records) <= size // 200_000 + 2
        assert all(len(r["requestPayload"]) <= contract.PAYLOAD_LIMIT for r in plan.records)
        assert all(len(json.loads(r["requestPayload"])["toolName"]) == 1024 for r in plan.records)
        pieces = [p for w in window_strings(plan, "requestPayload") for p in w]
        assert sum(len(p) for p in pieces if set(p) == {"n"}) >= size
        assert "ls" in pieces


def test_depth_hides_nothing() -> None:
    # contract.dumps stands in "[max depth]" for what it cannot encode; windows read it all.
    deep: Any = "rm -rf /"
    for _ in range(5_000):
        deep = [deep]
    plan = plan_tool_call(WIRE, "Bash", {"command": deep}, Limits())
    assert not plan.failed
    pieces = [p for w in window_strings(plan, "requestPayload") for p in w]
    assert "rm -rf /" in pieces


def test_a_huge_input_is_too_large_before_it_is_read() -> None:
    limits = Limits(max_total=1 << 20)
    plan = plan_tool_call(WIRE, "Bash", {"command": "x" * (2 << 20)}, limits)
    assert plan.too_large and plan.records == () and plan.size > 1 << 20
    many = plan_tool_result(WIRE, "Bash", {}, ["é"] * 200_000, limits)
    assert many.too_large


class _Unreadable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


async def test_a_plan_that_fails_is_a_deny_and_nothing_is_sent() -> None:
    value = {"command": "x" * 300_000, "extra": _Unreadable()}
    plan = plan_tool_call(WIRE, "Bash", value, Limits())
    assert plan.failed and plan.records == ()

    async def never(record: dict[str, Any]) -> Verdict:
        raise AssertionError("nothing is sent")

    verdict = await judge(never, plan, Limits())
    assert verdict.decision == "deny" and not verdict.allowed and verdict.error == "plan_failed"
    assert plan_tool_result(WIRE, "Bash", {}, value, Limits()).failed


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_planning_failures_deny_whatever_the_fail_mode(
    fail_mode: str, capture: SpanCapture
) -> None:
    with EmulatorServer(Policy(())) as akto:
        g = guard(akto, capture, fail_mode=fail_mode, tool_response_guardrails=True)
        hooks = {e: m[0].hooks[0] for e, m in g.hooks().items()}
        bad = {"command": "x" * 300_000, "extra": _Unreadable()}
        out = await hooks["PreToolUse"](
            {"session_id": "s", "tool_name": "Bash", "tool_input": bad}, "t1", {}
        )
        post = await hooks["PostToolUse"](
            {"session_id": "s", "tool_name": "Bash", "tool_input": {}, "tool_response": bad},
            "t2",
            {},
        )
        g.shutdown()
        judged = [r for r in akto.records if r.endpoint != "ingestData"]
    assert out["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert post != {}, "a tool output that could not be planned passed"
    assert judged == [], "a content that could not be planned is never sent"


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_an_absurd_tool_name_is_judged_in_windows_and_denied_on_a_match(
    fail_mode: str, capture: SpanCapture
) -> None:
    # The CLI refuses names over 128 characters today; the guard must not rely on it.
    name = "mcp__ops__" + "x" * 300_000 + "rm -rf /"
    rm = Rule("rm", ("PreToolUse",), "request", r"rm -rf /", reason="destructive")
    with EmulatorServer(Policy((rm,))) as akto:
        g = guard(akto, capture, fail_mode=fail_mode)
        hooks = {e: m[0].hooks[0] for e, m in g.hooks().items()}
        out = await hooks["PreToolUse"](
            {"session_id": "s", "tool_name": name, "tool_input": {"q": "1"}}, "t1", {}
        )
        g.shutdown()
        judged = [r for r in akto.records if r.hook == "PreToolUse"]
    assert out["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert 2 <= len(judged) <= 3


def test_the_emulator_matches_decoded_values_not_json_text() -> None:
    record = contract.tool_request_record(WIRE, "Bash", {"command": 'rm\t-rf "/x" \\y'})
    tab = Rule("tab", (), "request", r"rm\t-rf")
    quote = Rule("quote", (), "request", r'-rf "/x" \\y')
    escaped = Rule("escaped", (), "request", r"rm\\t-rf")
    json_text = Rule("json", (), "request", r'"command": "')
    for rule, denied in ((tab, True), (quote, True), (escaped, False), (json_text, False)):
        result = Policy((rule,)).evaluate(record, "request")
        assert result["Allowed"] is (not denied), rule.name
    plain = {**record, "requestPayload": "not json: rm\t-rf"}
    assert Policy((tab,)).evaluate(plain, "request")["Allowed"] is False
