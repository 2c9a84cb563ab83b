"""The contenders of figures 1 and 2, built on the loop that measures them.

Every contender posts the same PreToolUse record (or the same hook input) to the
same server, and is checked once before it is timed: a contender that gets no
"allow" verdict is an error, never a fast number.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from akto_otel.config import Settings
from akto_otel.contract import encode_record, http_proxy_url
from akto_otel.guardrails import GuardrailClient

from .clients import (
    AiohttpGuardrailClient,
    FloorClient,
    RawStreamTransport,
    StreamGuardrailClient,
    aiohttp_transport,
    have_aiohttp,
    have_h2,
    have_httpx_aiohttp,
    http2_transport,
)
from .harness import Contender
from .reference import ReferenceConnector
from .workload import (
    hook_callbacks,
    make_guard,
    make_provider,
    post_tool_input,
    pre_tool_input,
    tool_record,
)

__all__ = [
    "CHECK_DEFAULT",
    "CHECK_STREAM",
    "FLOOR",
    "H2",
    "HOOK_DEFAULT",
    "HOOK_STREAM",
    "REFERENCE",
    "Spec",
    "check_contender",
    "errors_of",
    "guardrail_specs",
    "settings_for",
]

FLOOR = "floor: raw asyncio streams"
REFERENCE = "reference: urllib+to_thread"
CHECK_DEFAULT = "check: httpx (package)"
HOOK_DEFAULT = "hook: PreToolUse (package)"
CHECK_STREAM = "check: stream post [candidate]"
HOOK_STREAM = "hook: PreToolUse, stream post [candidate]"
H2 = "check: httpx HTTP/2 (h2c, +proxy hop)"


@dataclass(frozen=True)
class Spec:
    """A contender to build, or the reason it cannot run here."""

    name: str
    build: Callable[[], Awaitable[Contender]] | None
    why_not: str = ""


class _Errors:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def settings_for(url: str) -> Settings:
    """The settings every guardrail contender uses (5 s timeout, as the default)."""
    return Settings(ingestion_url=url, timeout=5.0)


def check_contender(name: str, client: GuardrailClient, note: str = "") -> Contender:
    """``client.check(record)`` with the PreToolUse record, checked to be allowed once."""
    record = tool_record()
    errors = _Errors()

    async def call(_: int) -> None:
        verdict = await client.check(record)
        if verdict.error is not None:
            errors.count += 1

    async def setup() -> None:
        verdict = await client.check(record)
        if verdict.decision != "allow" or verdict.error is not None:
            raise RuntimeError(f"{name}: expected an allow verdict, got {verdict}")

    return Contender(
        name, call, setup=setup, close=client.aclose, note=note, extra={"errors": errors}
    )


def _hook_contender(name: str, url: str, client: GuardrailClient | None) -> Contender:
    provider = make_provider()
    guard = make_guard(settings_for(url), provider=provider, client=client)
    hooks = hook_callbacks(guard)
    pre = hooks["PreToolUse"]
    post = hooks["PostToolUse"]
    pre_inputs = [pre_tool_input(f"bench-session-{w}") for w in range(256)]
    post_inputs = [post_tool_input(f"bench-session-{w}", with_result=False) for w in range(256)]
    ids = itertools.count()
    current = [""] * 256
    errors = _Errors()

    async def call(w: int) -> None:
        tool_use_id = f"toolu_{next(ids)}"
        current[w] = tool_use_id
        output = await pre(pre_inputs[w], tool_use_id, {})
        if output:
            errors.count += 1

    async def after(w: int) -> None:
        # PostToolUse without a result: ends the execute_tool span, sends nothing.
        await post(post_inputs[w], current[w], {})

    async def setup() -> None:
        output = await pre(pre_inputs[0], "toolu_setup", {})
        await post(post_inputs[0], "toolu_setup", {})
        if output:
            raise RuntimeError(f"{name}: expected an empty (allow) output, got {output}")

    async def close() -> None:
        await guard.aclose()
        guard.shutdown()
        provider.shutdown()

    return Contender(name, call, after=after, setup=setup, close=close, extra={"errors": errors})


def guardrail_specs(url: str, h2_url: str | None) -> list[Spec]:
    """Every contender of the guardrail call against the server at ``url``."""
    record = tool_record()
    proxy_url = http_proxy_url(url, "claude_agent_sdk", guardrails=True)
    body = encode_record(record)

    async def floor() -> Contender:
        client = FloorClient(proxy_url, body)

        async def call(_: int) -> None:
            await client.post()

        async def setup() -> None:
            answer = await client.post()
            if b'"Allowed":true' not in answer:
                raise RuntimeError(f"floor: unexpected answer {answer[:200]!r}")

        return Contender(FLOOR, call, setup=setup, close=client.aclose)

    async def reference() -> Contender:
        ref = ReferenceConnector(url)
        inputs = [pre_tool_input(f"bench-session-{w}") for w in range(256)]
        ids = itertools.count()

        async def call(w: int) -> None:
            await ref.pre_tool_use(inputs[w], f"toolu_{next(ids)}", {})

        async def setup() -> None:
            result = await ref.post_json_async(
                ref.url(guardrails=True, ingest_data=False),
                ref.tool_request_record("Bash", inputs[0]["tool_input"]),
            )
            if not (isinstance(result, dict) and result["data"]["guardrailsResult"]["Allowed"]):
                raise RuntimeError(f"reference: unexpected answer {result!r}")

        return Contender(
            REFERENCE,
            call,
            setup=setup,
            note="new connection per call; default executor",
            extra={"errors": lambda: ref.failures},
        )

    async def check_default() -> Contender:
        return check_contender(CHECK_DEFAULT, GuardrailClient(settings_for(url)))

    async def check_keepalive() -> Contender:
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        return check_contender(
            "check: httpx keepalive=128", GuardrailClient(settings_for(url), limits=limits)
        )

    async def check_raw_transport() -> Contender:
        client = GuardrailClient(settings_for(url), transport=RawStreamTransport())
        return check_contender("check: httpx + raw-stream transport", client)

    async def check_aiohttp_transport() -> Contender:
        client = GuardrailClient(settings_for(url), transport=aiohttp_transport())
        return check_contender("check: httpx + aiohttp transport", client)

    async def check_h2() -> Contender:
        assert h2_url is not None
        client = GuardrailClient(settings_for(h2_url), transport=http2_transport())
        return check_contender(H2, client, note="nginx h2c port, proxied to the h1 port")

    async def check_aiohttp() -> Contender:
        return check_contender("check: aiohttp post", AiohttpGuardrailClient(settings_for(url)))

    async def check_stream() -> Contender:
        return check_contender(CHECK_STREAM, StreamGuardrailClient(settings_for(url)))

    async def hook_default() -> Contender:
        return _hook_contender(HOOK_DEFAULT, url, None)

    async def hook_stream() -> Contender:
        return _hook_contender(HOOK_STREAM, url, StreamGuardrailClient(settings_for(url)))

    specs = [
        Spec(FLOOR, floor),
        Spec(REFERENCE, reference),
        Spec(CHECK_DEFAULT, check_default),
        Spec(HOOK_DEFAULT, hook_default),
        Spec("check: httpx keepalive=128", check_keepalive),
        Spec("check: httpx + raw-stream transport", check_raw_transport),
        Spec(
            "check: httpx + aiohttp transport",
            check_aiohttp_transport if have_httpx_aiohttp() else None,
            "pip install httpx-aiohttp",
        ),
        Spec(
            H2,
            check_h2 if (h2_url and have_h2()) else None,
            "needs nginx (h2c) and pip install h2" if not h2_url else "pip install h2",
        ),
        Spec(
            "check: aiohttp post",
            check_aiohttp if have_aiohttp() else None,
            "pip install aiohttp",
        ),
        Spec(CHECK_STREAM, check_stream),
        Spec(HOOK_STREAM, hook_stream),
    ]
    return specs


def errors_of(contender: Contender) -> int:
    """Calls of ``contender`` that got no verdict (they must be 0 for a valid number)."""
    errors: Any = contender.extra.get("errors")
    return int(errors()) if errors is not None else 0
