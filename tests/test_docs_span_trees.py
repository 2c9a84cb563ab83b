"""The span trees docs/observability.md shows are the ones a real session makes.

Each ``span-tree-*`` block is rendered here from an in-memory exporter after a real
session (SDK, bundled CLI, scripted fake model, emulator): one per span mode and one
with the guardrail conventions' opt-in. A block that differs fails; to rewrite the
blocks from the session instead::

    AKTO_OTEL_WRITE_DOCS=1 python -m pytest tests/test_docs_span_trees.py -n 0
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from akto_otel import AktoGuardrails, semconv
from akto_otel.emulator import EmulatorServer
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env, run_agent
from tests.conftest import SpanCapture
from tests.test_docs import DOCS, doc_block

pytestmark = pytest.mark.timeout(120)

DOC = DOCS / "observability.md"
#: An allowed command, a denied one, an answer: what a user sees most.
SCENARIO = Scenario(
    None,
    [
        ToolUse("Bash", {"command": "echo hello"}),
        ToolUse("Bash", {"command": "rm -rf build"}),
        Text("Done."),
    ],
)
#: The app's own span in guard mode: whatever span is current when the session starts.
APP_SPAN = "handle request"
#: Attributes shown by name only: their values change from run to run (ids, ports,
#: durations) or are free text.
_NAME_ONLY = frozenset(
    {
        semconv.GEN_AI_CONVERSATION_ID,
        semconv.GEN_AI_TOOL_CALL_ID,
        semconv.AKTO_PROMPT_ID,
        semconv.SERVER_PORT,
        semconv.AKTO_TOOL_DURATION_MS,
        semconv.AKTO_GUARDRAIL_REASON,
    }
)
_WIDTH = 96


def _attributes(attributes: Any) -> list[str]:
    shown = []
    for key in sorted(attributes or {}):
        value = attributes[key]
        if key in _NAME_ONLY:
            shown.append(key)
        elif isinstance(value, bool):
            shown.append(f"{key}={str(value).lower()}")
        else:
            shown.append(f"{key}={value}" if value != "" else f'{key}=""')
    return shown


def render(spans: list[ReadableSpan]) -> str:
    """The spans as a tree: name (kind, status when ERROR), attributes, events."""
    ids = {s.context.span_id for s in spans}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, lead: str, branch: str, rest: str) -> None:
        kind = span.kind.name
        status = ", ERROR" if span.status.status_code is StatusCode.ERROR else ""
        lines.append(f"{lead}{branch}{span.name} ({kind}{status})")
        below = sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0)
        body = lead + rest + ("│   " if below else "    ")
        details = [", ".join(_attributes(span.attributes))]
        for event in span.events:
            details.append(f"event {event.name}: " + ", ".join(_attributes(event.attributes)))
        for detail in details:
            wrapped = textwrap.wrap(
                detail, _WIDTH - len(body), subsequent_indent="  ", break_on_hyphens=False
            )
            for line in wrapped:
                lines.append((body + line).rstrip())
        for index, child in enumerate(below):
            last = index == len(below) - 1
            walk(child, lead + rest, "└── " if last else "├── ", "    " if last else "│   ")

    for root in sorted(children.get(None, []), key=lambda s: s.start_time or 0):
        walk(root, "", "", "")
    return "\n".join(lines) + "\n"


async def _session(
    emulator: EmulatorServer, home: Path, workdir: Path, **settings: Any
) -> list[ReadableSpan]:
    capture = SpanCapture()
    guard = AktoGuardrails(
        tracer_provider=capture.provider,
        meter_provider=capture.meter_provider,
        ingestion_url=emulator.url,
        timeout=3.0,
        export_retry_timeout=1.0,
        export_shutdown_timeout=2.0,
        **settings,
    )
    app = capture.provider.get_tracer("my-app")
    with FakeAnthropic(SCENARIO) as fake:
        options = ClaudeAgentOptions(
            env=offline_agent_env(fake, home), cwd=str(workdir), allowed_tools=["Bash"]
        )
        if settings.get("spans") == "guard":
            with app.start_as_current_span(APP_SPAN):
                async with guard.session(options) as guarded:
                    await run_agent("tidy up", guarded)
        else:
            async with guard.session(options) as guarded:
                await run_agent("tidy up", guarded)
    guard.shutdown()
    spans = capture.spans
    capture.provider.shutdown()
    return spans


def _rewrite(name: str, text: str) -> None:
    """Put ``text`` in the doc's ``<!-- doc-test: name -->`` block."""
    lines = DOC.read_text().splitlines(keepends=True)
    marker = next(i for i, line in enumerate(lines) if line.strip() == f"<!-- doc-test: {name} -->")
    start = marker + 2  # past the opening fence
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    DOC.write_text("".join([*lines[:start], text, *lines[end:]]))


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("span-tree-full", {}),
        ("span-tree-guard", {"spans": "guard"}),
        ("span-tree-semconv", {"semconv_security": True}),
    ],
)
async def test_the_docs_span_tree_is_the_one_a_real_session_makes(
    emulator: EmulatorServer, home: Path, workdir: Path, name: str, settings: dict[str, Any]
) -> None:
    tree = render(await _session(emulator, home, workdir, **settings))
    if os.environ.get("AKTO_OTEL_WRITE_DOCS") == "1":
        _rewrite(name, tree)
    assert doc_block(name).code == tree, f"{name} is stale: AKTO_OTEL_WRITE_DOCS=1 rewrites it"


def test_the_documented_regeneration_command_is_this_modules() -> None:
    command = doc_block("span-tree-regenerate").code.strip()
    assert command and command in (__doc__ or "")


def test_render_draws_the_tree_of_the_spans() -> None:
    """The renderer itself: nesting, order, kinds, errors and name-only attributes."""
    capture = SpanCapture()
    tracer = capture.provider.get_tracer("t")
    with tracer.start_as_current_span("root", attributes={"gen_ai.conversation.id": "x"}):
        with tracer.start_as_current_span("first", attributes={"a": True}) as first:
            first.add_event("seen", {"b": 1})
        with tracer.start_as_current_span("second") as second:
            second.set_status(StatusCode.ERROR)
            with tracer.start_as_current_span("leaf", attributes={"c": ""}):
                pass
    assert render(capture.spans) == (
        "root (INTERNAL)\n"
        "│   gen_ai.conversation.id\n"
        "├── first (INTERNAL)\n"
        "│       a=true\n"
        "│       event seen: b=1\n"
        "└── second (INTERNAL, ERROR)\n"
        "    └── leaf (INTERNAL)\n"
        '            c=""\n'
    )
