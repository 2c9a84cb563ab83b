"""The contenders of figures 1 and 2, built on the loop that measures them.

Every contender posts the same PreToolUse record (or the same hook input) to the
same server, and is checked once before it is timed: a contender that gets no
"allow" verdict is an error, never a fast number.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from akto_otel.config import Settings
from akto_otel.contract import encode_record, http_proxy_url
from akto_otel.guardrails import GuardrailClient

from .clients import AiohttpClient, FloorClient, StdlibClient
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
    "AIOHTTP",
    "CHECK_DEFAULT",
    "FLOOR",
    "HOOK_DEFAULT",
    "HOOK_FOLDED",
    "REFERENCE",
    "STDLIB",
    "Spec",
    "check_contender",
    "errors_of",
    "folded_hook_spec",
    "guardrail_specs",
    "hook_contender",
    "settings_for",
]

FLOOR = "floor: raw asyncio streams"
REFERENCE = "Akto connector as published"
STDLIB = "stdlib: urllib, cached opener, thread"
AIOHTTP = "bare aiohttp ClientSession.post"
CHECK_DEFAULT = "check: GuardrailClient.check (package)"
HOOK_DEFAULT = "hook: PreToolUse (package)"
HOOK_FOLDED = "hook, AKTO_GUARDRAIL_SPANS=false"


@dataclass(frozen=True)
class Spec:
    """A contender to build on the loop that measures it."""

    name: str
    build: Callable[[], Awaitable[Contender]]


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


def hook_contender(
    name: str,
    url: str,
    client: GuardrailClient | None,
    *,
    guardrail_spans: bool = True,
    hold_spans: bool = False,
    record: bool = True,
) -> Contender:
    """The package's PreToolUse callback (``call``) and the span-closing PostToolUse
    (``after``), spans to a fresh SDK provider (``hold_spans``: see ``make_provider``).

    ``record``: PostToolUse carries the tool's (empty) result, so it queues a record
    for Akto; without it the tool returned nothing and nothing is queued."""
    provider = make_provider(hold_spans=hold_spans)
    settings = dataclasses.replace(settings_for(url), guardrail_spans=guardrail_spans)
    guard = make_guard(settings, provider=provider, client=client)
    hooks = hook_callbacks(guard)
    pre = hooks["PreToolUse"]
    post = hooks["PostToolUse"]
    pre_inputs = [pre_tool_input(f"bench-session-{w}") for w in range(256)]
    post_inputs = [post_tool_input(f"bench-session-{w}", with_result=False) for w in range(256)]
    if not record:
        for post_input in post_inputs:
            del post_input["tool_response"]
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
        # PostToolUse with an empty result: ends the execute_tool span and queues its
        # record, which the processor's worker delivers while later calls run.
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


def _post_contender(name: str, client: FloorClient | StdlibClient | AiohttpClient) -> Contender:
    async def call(_: int) -> None:
        await client.post()

    async def setup() -> None:
        answer = await client.post()
        if b'"Allowed":true' not in answer:
            raise RuntimeError(f"{name}: unexpected answer {answer[:200]!r}")

    return Contender(name, call, setup=setup, close=client.aclose)


def folded_hook_spec(url: str) -> Spec:
    """The package hook with its guardrail call folded into the tool span."""

    async def build() -> Contender:
        return hook_contender(HOOK_FOLDED, url, None, guardrail_spans=False)

    return Spec(HOOK_FOLDED, build)


def guardrail_specs(url: str) -> list[Spec]:
    """Every contender of the guardrail call against the server at ``url``."""
    proxy_url = http_proxy_url(url, "claude_agent_sdk", guardrails=True)
    body = encode_record(tool_record())

    async def floor() -> Contender:
        return _post_contender(FLOOR, FloorClient(proxy_url, body))

    async def stdlib() -> Contender:
        return _post_contender(STDLIB, StdlibClient(proxy_url, body))

    async def bare_aiohttp() -> Contender:
        return _post_contender(AIOHTTP, AiohttpClient(proxy_url, body))

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
            note="new SSL context + connection per call; default executor",
            extra={"errors": lambda: ref.failures},
        )

    async def check_default() -> Contender:
        return check_contender(CHECK_DEFAULT, GuardrailClient(settings_for(url)))

    async def hook_default() -> Contender:
        return hook_contender(HOOK_DEFAULT, url, None)

    return [
        Spec(FLOOR, floor),
        Spec(REFERENCE, reference),
        Spec(STDLIB, stdlib),
        Spec(AIOHTTP, bare_aiohttp),
        Spec(CHECK_DEFAULT, check_default),
        Spec(HOOK_DEFAULT, hook_default),
    ]


def errors_of(contender: Contender) -> int:
    """Calls of ``contender`` that got no verdict (they must be 0 for a valid number)."""
    errors: Any = contender.extra.get("errors")
    return int(errors()) if errors is not None else 0
