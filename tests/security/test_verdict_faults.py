"""Answers that are not verdicts never open a guard (issue 22, item 2), through the real CLI.

A stand-in Akto on 127.0.0.1 answers the prompt check with a proper allow, so the
scripted model gets to ask for ``rm -rf``, and answers that tool call's check with a
200 whose body is not a readable verdict: an empty object, ``success: false``,
``data: null``, an empty or non-JSON body, an ``Allowed`` nobody can read, or
Akto's own ``failOpen: true`` (its engine did not judge). Before strict verdicts,
each of the JSON ones was read as allow and ``rm -rf`` ran under
``AKTO_FAIL_MODE=closed``; an unreadable ``Allowed`` next to ``behaviour: "block"``
ran in both modes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from akto_otel import AktoGuardrails
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, run_agent
from tests.conftest import SpanCapture
from tests.security.attack_kit import hook_of, options
from tests.standin_http import StandInServer

pytestmark = pytest.mark.timeout(180)

ALLOW = b'{"success": true, "message": "ok", "data": {"guardrailsResult": {"Allowed": true}}}'


def _result(**fields: Any) -> bytes:
    return json.dumps(
        {"success": True, "message": "guardrails evaluated", "data": {"guardrailsResult": fields}}
    ).encode()


class StandInAkto(StandInServer):
    """Akto's endpoints; the PreToolUse check gets ``tool_answer``, everything else an allow."""

    def __init__(self, tool_answer: bytes) -> None:
        super().__init__()
        self.tool_answer = tool_answer
        self.tool_checks = 0

    def answer(self, path: str, body: bytes) -> bytes | None:
        if path.startswith("/api/http-proxy") and "guardrails=true" in path:
            if hook_of(json.loads(body)) == "PreToolUse":
                self.tool_checks += 1
                return self.tool_answer
            return ALLOW
        return b'{"success": true, "message": "ingested"}'


@pytest.fixture
def target(workdir: Path) -> Iterator[Path]:
    path = workdir / "precious"
    path.mkdir()
    (path / "data.txt").write_text("keep me")
    yield path


async def _attack(
    answer: bytes, fail_mode: str, capture: SpanCapture, home: Path, workdir: Path, target: Path
) -> StandInAkto:
    scenario = Scenario(None, [ToolUse("Bash", {"command": f"rm -rf {target}"}), Text("done")])
    with StandInAkto(answer) as akto, FakeAnthropic(scenario) as fake:
        guard = AktoGuardrails(
            tracer_provider=capture.provider,
            meter_provider=capture.meter_provider,
            ingestion_url=akto.url,
            fail_mode=fail_mode,
            timeout=10.0,
            export_retry_timeout=1.0,
            export_shutdown_timeout=1.0,
        )
        async with guard.session(options(fake, home, workdir)) as opts:
            await run_agent("clean up", opts)
        guard.shutdown()
    assert akto.tool_checks >= 1, "the attack never reached the tool call's check"
    return akto


def _tool_verdict(capture: SpanCapture) -> dict[str, Any]:
    span = capture.one("execute_tool Bash")
    event = next(e for e in span.events if e.name == "akto.guardrail.verdict")
    return dict(event.attributes or {})


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"{}", id="empty-object"),
        pytest.param(
            b'{"success": false, "message": "guardrail engine error"}', id="success-false"
        ),
        pytest.param(b'{"data": null}', id="data-null"),
        pytest.param(b'{"success": true, "data": null}', id="success-data-null"),
        pytest.param(b'{"success": true}', id="success-no-data"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"<html>welcome to the proxy</html>", id="not-json"),
        pytest.param(_result(Allowed="deny"), id="allowed-deny-string"),
        pytest.param(_result(Allowed=[]), id="allowed-list"),
        pytest.param(_result(Allowed=None), id="allowed-null"),
        pytest.param(_result(Reason="r"), id="allowed-missing"),
        pytest.param(
            _result(Allowed=True, failOpen=True, error="engine down"), id="akto-fail-open"
        ),
    ],
)
async def test_fail_closed_denies_an_answer_that_is_not_a_verdict(
    answer: bytes, capture: SpanCapture, home: Path, workdir: Path, target: Path
) -> None:
    await _attack(answer, "closed", capture, home, workdir, target)
    assert (target / "data.txt").exists(), "rm -rf ran on an answer that is not a verdict"
    verdict = _tool_verdict(capture)
    assert verdict["akto.guardrail.decision"] == "error"
    assert verdict["akto.guardrail.fail_open"] is False


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
@pytest.mark.parametrize(
    "allowed",
    [
        pytest.param("deny", id="deny-string"),
        pytest.param([], id="list"),
        pytest.param(None, id="null"),
        pytest.param("missing", id="missing"),
    ],
)
async def test_an_unreadable_allowed_next_to_block_denies_in_both_modes(
    allowed: Any,
    fail_mode: str,
    capture: SpanCapture,
    home: Path,
    workdir: Path,
    target: Path,
) -> None:
    fields: dict[str, Any] = {"Reason": "Destructive command", "behaviour": "block"}
    if allowed != "missing":
        fields["Allowed"] = allowed
    await _attack(_result(**fields), fail_mode, capture, home, workdir, target)
    assert (target / "data.txt").exists(), "rm -rf ran next to behaviour: block"
    assert _tool_verdict(capture)["akto.guardrail.decision"] == "deny"


async def test_akto_fail_open_in_open_mode_allows_and_is_recorded_as_unjudged(
    capture: SpanCapture, home: Path, workdir: Path, target: Path
) -> None:
    answer = _result(Allowed=True, failOpen=True, error="engine down")
    await _attack(answer, "open", capture, home, workdir, target)
    assert not target.exists(), "fail-open mode lets the call through"
    verdict = _tool_verdict(capture)
    assert verdict["akto.guardrail.decision"] == "error"
    assert verdict["akto.guardrail.fail_open"] is True
    assert verdict["error.type"] == "akto_fail_open"
