"""The emulator cannot be stalled: linear-time default rules, judging off the event loop
under a time budget, and request heads that must arrive in time.

Real emulators on free ports, httpx and raw sockets, the real guardrail client; no mocks.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from akto_otel.config import Settings
from akto_otel.emulator import EmulatorServer, Policy, Rule, default_policy
from akto_otel.guardrails import GuardrailClient
from tests.test_emulator import make_record

PROXY = "/api/http-proxy?guardrails=true&response_guardrails=true"
MIB = 1 << 20
#: The default email pattern before it was made linear: quadratic in a run of letters.
QUADRATIC_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
#: The default ``rm -rf`` pattern before it was made linear: quadratic in a run of flags.
QUADRATIC_RM = r"\brm\s+-(?:[a-z]*r[a-z]*f|[a-z]*f[a-z]*r)[a-z]*\b"


def _record(hook: str, text: str) -> dict[str, Any]:
    """A record whose tool input (or, for Stop, answer) is ``text``."""
    if hook == "Stop":
        return make_record("Stop", "q", response_body=text)
    if hook == "PreToolUse":
        return make_record(hook, {"command": text}, tool="Bash")
    return make_record(hook, text)


def _repeat(unit: str) -> Callable[[int], str]:
    return lambda n: (unit * (n // len(unit) + 1))[:n]


def _prefixed(prefix: str, unit: str, suffix: str = "") -> Callable[[int], str]:
    return lambda n: prefix + unit * max(1, (n - len(prefix) - len(suffix)) // len(unit)) + suffix


#: Per default rule, texts that make a backtracking pattern of that shape super-linear.
ADVERSARIAL: dict[str, dict[str, Callable[[int], str]]] = {
    "prompt-injection": {
        "spaces after ignore": _prefixed("ignore", " ", "x"),
        "ignore all the, unfinished": _repeat("ignore all the  "),
        "spaces before instructions": _prefixed("ignore all the previous", " ", "x"),
    },
    "destructive-shell-command": {
        "r without f": _prefixed("rm -", "r"),
        "f without r": _prefixed("rm -", "f"),
        "rf then no boundary": _prefixed("rm -", "rf", "_"),
        "repeated rm -": _repeat("rm -r "),
    },
    "dotenv-file-access": {
        "long suffix no quote": _prefixed(" .env.", "a", "!"),
        "repeated .env.": _repeat("=.env.a-"),
    },
    "secret-in-response": {
        "almost a key": _repeat("AKIA" + "A" * 15 + " "),
        "almost a token": _repeat("SECRET-TOKE"),
    },
    "mask-email": {
        "letters, no at": _repeat("a"),
        "dotted, no at": _repeat("a."),
        "local parts, bad domain": _repeat("a" * 64 + "@" + "1" * 200 + " "),
        "at then digits": _prefixed("a@", "1"),
        "glued ats": _repeat("a@"),
        "dotted domains, no tld": _repeat("a@" + "a." * 100),
        "long tld, then a glued at": _prefixed("a@b.", "c", "1@"),
        "glued addresses": _repeat("a@b.cc1"),
    },
}

_HOOK = {
    "prompt-injection": "UserPromptSubmit",
    "destructive-shell-command": "PreToolUse",
    "dotenv-file-access": "PreToolUse",
    "secret-in-response": "Stop",
    "mask-email": "PreToolUse",
}

_CASES = [(rule, name) for rule, family in ADVERSARIAL.items() for name in family]


def _best_of(repeats: int, action: Callable[[], object], *, give_up_s: float) -> float:
    """The least CPU time of ``repeats`` runs; stops early once one run exceeds ``give_up_s``.

    CPU time of this thread, not wall time: on a shared 2-core machine the wall clock
    measures the neighbours, while the CPU a match costs is what grows with its input.
    """
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        action()
        elapsed = time.thread_time() - start
        best = min(best, elapsed)
        if elapsed > give_up_s:
            break
    return best


def test_every_default_rule_has_adversarial_inputs() -> None:
    names = {rule.name for rule in default_policy().rules}
    assert set(ADVERSARIAL) == names
    assert set(_HOOK) == names


@pytest.mark.parametrize(("rule_name", "family"), _CASES)
def test_default_rules_match_in_linear_time(rule_name: str, family: str) -> None:
    """Four times the text may cost at most ~8 times as long (linear: 4x, quadratic: 16x).

    The best of several runs filters out a loaded machine's pauses; a text that already
    takes longer than a linear pattern could need fails without the larger run.
    """
    rule = next(r for r in default_policy().rules if r.name == rule_name)
    make = ADVERSARIAL[rule_name][family]
    small, large = make(32 * 1024), make(128 * 1024)

    def work(text: str) -> Callable[[], object]:
        return lambda: (rule.regex.search(text), rule.regex.subn("#", text))

    t_small = _best_of(5, work(small), give_up_s=0.5)
    assert t_small < 0.5, f"{rule_name}/{family}: 32 KiB took {t_small:.2f}s"
    t_large = _best_of(5, work(large), give_up_s=8 * max(t_small, 0.002) + 0.05)
    assert t_large < 8 * max(t_small, 0.002) + 0.01, (
        f"{rule_name}/{family}: 32 KiB {t_small * 1000:.1f} ms, 128 KiB {t_large * 1000:.1f} ms"
    )


@pytest.mark.parametrize(("rule_name", "family"), _CASES)
def test_a_1mib_adversarial_input_is_judged_within_a_second(rule_name: str, family: str) -> None:
    """The whole default policy judges one 1 MiB adversarial record in under a second
    of CPU (about 0.35 s measured for the slowest family on the loaded 2-core machine)."""
    policy = default_policy()
    hook = _HOOK[rule_name]
    record = _record(hook, ADVERSARIAL[rule_name][family](MIB))
    side = "response" if hook == "Stop" else "request"
    elapsed = _best_of(2, lambda: policy.evaluate(record, side), give_up_s=1.0)
    assert elapsed < 1.0, f"{rule_name}/{family}: {elapsed:.2f}s"


def test_the_linear_email_rule_masks_what_the_old_one_masked() -> None:
    """Same characters masked as the quadratic pattern, glued addresses included."""
    old = re.compile(QUADRATIC_EMAIL, re.IGNORECASE)
    rule = next(r for r in default_policy().rules if r.name == "mask-email")
    texts = [
        "write to jane.doe@example.com today",
        "a@b.com,x@y.org;z@w.net",
        "a@b.com.x@y.com",
        "a@b.com1x@y.com",
        "x.a@b.com-q@r.org-z@w.net",
        "a@b.cc@d.com",
        "see a@b.com.Then x@y.com",
        "no address @ here.com",
        "UPPER.Case+tag@Example.ORG",
    ]
    for text in texts:
        old_kept = old.sub(lambda m: "\0" * len(m.group()), text)
        new_kept = rule.regex.sub(lambda m: "\0" * len(m.group()), text)
        assert new_kept == old_kept, text


def _default_rule(name: str) -> Rule:
    return next(r for r in default_policy().rules if r.name == name)


def _masked_positions(pattern: re.Pattern[str], text: str) -> list[bool]:
    return [ch == "\0" for ch in pattern.sub(lambda m: "\0" * len(m.group()), text)]


#: Whole addresses among the pieces, so glued and chained addresses come up often.
_EMAIL_PIECES = st.sampled_from(
    ["a@b.com", "x.y@z.org", "a", "Z", "1", ".", "-", "+", "%", "@", " ", ",", "cc", "\u017f"]
)
_RM_PIECES = st.sampled_from(
    ["rm -", "rm ", "rf", "fr", "r", "f", "R", "F", "-", " ", "\t", "_", "1", "x", "\u212a"]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_EMAIL_PIECES, max_size=24).map("".join))
def test_the_linear_email_rule_masks_exactly_what_the_quadratic_one_did(text: str) -> None:
    old = re.compile(QUADRATIC_EMAIL, re.IGNORECASE)
    new = _default_rule("mask-email").regex
    assert _masked_positions(new, text) == _masked_positions(old, text)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_RM_PIECES, max_size=16).map("".join))
def test_the_linear_rm_rule_matches_exactly_where_the_quadratic_one_did(text: str) -> None:
    old = re.compile(QUADRATIC_RM, re.IGNORECASE)
    new = _default_rule("destructive-shell-command").regex
    assert [m.span() for m in new.finditer(text)] == [m.span() for m in old.finditer(text)]


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(default_policy()) as srv:
        yield srv


@pytest.mark.timeout(60)
def test_an_adversarial_tool_input_does_not_stall_the_emulator(server: EmulatorServer) -> None:
    """The attack: one model-made tool input that the email rule used to chew on for
    minutes; the next call (``rm -rf``) then timed out and fail-open let it run."""
    stall = _record("PreToolUse", "a" * 200_000)
    answers: list[httpx.Response] = []
    with (
        httpx.Client(base_url=server.url, timeout=30) as first,
        httpx.Client(base_url=server.url, timeout=2.0) as second,
    ):
        assert second.get("/healthCheck").status_code == 200  # connected before the attack
        sender = threading.Thread(target=lambda: answers.append(first.post(PROXY, json=stall)))
        sender.start()
        time.sleep(0.5)  # the stalling record is being judged now
        follow_up = second.post(PROXY, json=_record("PreToolUse", "rm -rf /"))
        verdict = follow_up.json()["data"]["guardrailsResult"]
        assert verdict["Allowed"] is False
        assert verdict["Metadata"]["policy_name"] == "destructive-shell-command"
        sender.join(timeout=5.0)
    assert answers, "the adversarial record got no answer within 5 s"
    assert answers[0].json()["data"]["guardrailsResult"]["Allowed"] is True


def _slow_policy() -> Policy:
    """A user's policy with a quadratic pattern: about a second of CPU on 5,000 letters."""
    return Policy((Rule("slow", ("PreToolUse",), "request", QUADRATIC_EMAIL, mask="#"),))


async def _guard_verdict(url: str, record: dict[str, Any], fail_mode: str) -> Any:
    client = GuardrailClient(
        Settings.from_env({}, ingestion_url=url, timeout=30.0, fail_mode=fail_mode)
    )
    try:
        return await client.check(record, request=True)
    finally:
        await client.aclose()


@pytest.mark.timeout(90)
def test_a_judgement_over_budget_is_a_fault_answer_and_the_guard_denies() -> None:
    """Over budget: 503 with ``success: false`` (nothing judged), counted; a fail-closed
    guard denies. (A pattern that backtracks holds the GIL, so the 503 comes when the
    match ends: the budget decides what the answer is, not when it comes.)"""
    with EmulatorServer(_slow_policy(), judge_budget_s=0.05) as srv:
        record = _record("PreToolUse", "a" * 5_000)
        answer = httpx.post(srv.url + PROXY, json=record, timeout=60)
        assert answer.status_code == 503
        assert answer.json()["success"] is False
        assert srv.judge_timeouts == 1
        assert srv.records == []
        closed = asyncio.run(_guard_verdict(srv.url, record, "closed"))
        assert closed.allowed is False
        assert closed.decision == "error"
        assert srv.judge_timeouts == 2
        # The server recovers: with the default policy (and a budget a loaded CI machine
        # meets) the next record is judged, not faulted.
        srv.policy = default_policy()
        srv.judge_budget_s = 10.0
        fine = httpx.post(srv.url + PROXY, json=_record("PreToolUse", "ls"), timeout=30)
        assert fine.status_code == 200, fine.text
        assert fine.json()["data"]["guardrailsResult"]["Allowed"] is True


def test_budget_and_timeouts_must_be_positive() -> None:
    for name in ("judge_budget_s", "head_timeout_s", "body_timeout_s"):
        with pytest.raises(ValueError, match=name):
            EmulatorServer(**{name: 0.0})


# --------------------------------------------------------------------------- request heads


def _half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /api/http-proxy HTTP/1.1\r\nHost: x\r\nContent-Le")
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True once the server closed the connection (whatever it sent first)."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(4096) == b"":
                return True
        return False
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        sock.close()


@pytest.mark.timeout(60)
def test_300_half_open_request_heads_are_closed_and_the_emulator_still_answers() -> None:
    head_timeout = 1.0
    with EmulatorServer(default_policy(), head_timeout_s=head_timeout) as srv:
        opened = time.monotonic()
        sockets = [_half_open(srv.port) for _ in range(300)]
        record = _record("PreToolUse", "ls -la")
        answer = httpx.post(srv.url + PROXY, json=record, timeout=5)
        assert answer.status_code == 200
        assert answer.json()["data"]["guardrailsResult"]["Allowed"] is True
        deadline = opened + head_timeout + 5.0
        with ThreadPoolExecutor(max_workers=32) as pool:
            closed = list(
                pool.map(
                    lambda s: _closed_within(s, max(0.1, deadline - time.monotonic())), sockets
                )
            )
        assert closed.count(True) == 300, f"{closed.count(False)} of 300 still open"
        assert httpx.get(srv.url + "/healthCheck", timeout=2).status_code == 200


@pytest.mark.timeout(60)
def test_a_body_that_never_arrives_is_a_408_and_the_connection_closes() -> None:
    """408 once ``body_timeout_s`` is over; aiohttp then drains the rest for its lingering
    time (10 s) before it closes, so the connection is gone within both."""
    with EmulatorServer(default_policy(), body_timeout_s=0.5) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/http-proxy?guardrails=true HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"path"'
            )
            sock.settimeout(5)
            status_line = sock.recv(4096).split(b"\r\n", 1)[0]
            assert status_line.split(b" ")[1] == b"408"
            assert _closed_within(sock, 15.0)
        assert srv.records == []
        assert httpx.get(srv.url + "/healthCheck", timeout=2).status_code == 200
