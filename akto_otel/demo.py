"""The offline demo: a real Claude Agent SDK session, guarded and traced.

It starts the Akto emulator (default policy) and the scripted fake Anthropic API on
127.0.0.1, runs one session through the bundled Claude Code CLI that makes an
allowed tool call, a tool call the policy denies, and an answer that leaks a token
and gets regenerated, then prints the trace as a tree with the verdicts.

Usage::

    akto-otel demo            # offline, no API key
    akto-otel demo --live     # the real model (needs ANTHROPIC_API_KEY)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["DEMO_PROMPT", "DemoResult", "format_tree", "run_demo"]

DEMO_PROMPT = "Tidy up the build folder, then tell me the deploy token."


def demo_scenario() -> Any:
    from akto_otel.testing import Scenario, Text, ToolUse

    return Scenario(
        r"(?i)tidy up the build folder",
        [
            ToolUse("Bash", {"command": "ls -la build", "description": "List the build folder"}),
            ToolUse("Bash", {"command": "rm -rf build", "description": "Delete the build folder"}),
            Text("Done, the build folder is gone. The deploy token is SECRET-TOKEN-4242."),
            Text(
                "I listed the build folder; deleting it was blocked by policy. "
                "I can't share deploy tokens."
            ),
        ],
    )


@dataclass
class DemoResult:
    spans: list[ReadableSpan]
    records: int
    final_text: str
    seconds: float

    def decisions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for span in self.spans:
            for event in span.events:
                if event.name == "akto.guardrail.verdict" and event.attributes:
                    decision = str(event.attributes.get("akto.guardrail.decision"))
                    counts[decision] = counts.get(decision, 0) + 1
        return counts


def _label(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    parts = [span.name]
    duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    parts.append(f"{duration:.1f} ms")
    for event in span.events:
        if event.name == "akto.guardrail.verdict" and event.attributes:
            decision = event.attributes.get("akto.guardrail.decision")
            reason = event.attributes.get("akto.guardrail.reason")
            text = f"verdict={decision!s}"
            if reason:
                text += f' "{reason!s}"'
            parts.append(text)
    if attrs.get("akto.stop.gave_up"):
        parts.append("gave up regenerating")
    if "error.type" in attrs and not any(p.startswith("verdict=") for p in parts):
        parts.append(f"error={attrs['error.type']!s}")
    return "  ".join(parts)


def format_tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree, children in start order."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        key = parent if parent in by_id else None
        children.setdefault(key, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        lines.append("  " * depth + ("└─ " if depth else "") + _label(span))
        kids = sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time or 0)
        for kid in kids:
            walk(kid, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time or 0):
        walk(root, 0)
    return "\n".join(lines)


async def _session(live: bool, out: TextIO) -> DemoResult:
    from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ResultMessage, TextBlock

    from akto_otel.emulator import EmulatorServer, default_policy
    from akto_otel.hooks import AktoGuardrails
    from akto_otel.testing import FakeAnthropic, offline_agent_env, run_agent

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    start = time.perf_counter()
    with EmulatorServer(default_policy()) as akto, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        (work / "build").mkdir(parents=True)
        (work / "build" / "app.bin").write_bytes(b"\0" * 16)
        guard = AktoGuardrails(
            tracer_provider=provider, ingestion_url=akto.url, timeout=5.0, agent_name="demo-agent"
        )
        out.write(f"Akto emulator on {akto.url} (default policy)\n")
        if live:
            env = {"HOME": str(Path(tmp) / "home")}
            fake = None
        else:
            fake = FakeAnthropic(demo_scenario()).start()
            env = offline_agent_env(fake, Path(tmp) / "home")
            out.write(f"Fake Anthropic API on {fake.url} (scripted model)\n")
        try:
            options = ClaudeAgentOptions(env=env, cwd=str(work), allowed_tools=["Bash"])
            async with guard.session(options) as guarded:
                messages = await run_agent(DEMO_PROMPT, guarded)
        finally:
            if fake is not None:
                fake.stop()
        guard.force_flush()
        await guard.aclose()
        records = len(akto.records)
    final = ""
    for message in messages:
        if isinstance(message, ResultMessage) and message.result:
            final = message.result
        elif isinstance(message, AssistantMessage):
            texts = [b.text for b in message.content if isinstance(b, TextBlock)]
            if texts:
                final = " ".join(texts)
    return DemoResult(
        spans=list(exporter.get_finished_spans()),
        records=records,
        final_text=final,
        seconds=time.perf_counter() - start,
    )


def run_demo(*, live: bool = False, out: TextIO = sys.stdout) -> DemoResult:
    """Run the demo session and print the trace; returns what it saw."""
    if live and not os.environ.get("ANTHROPIC_API_KEY"):
        raise SystemExit("--live needs ANTHROPIC_API_KEY")
    out.write(f'Prompt: "{DEMO_PROMPT}"\n')
    result = asyncio.run(_session(live, out))
    out.write("\nTrace:\n" + format_tree(result.spans) + "\n")
    out.write(f'\nFinal answer: "{result.final_text}"\n')
    decisions = ", ".join(f"{n} {d}" for d, n in sorted(result.decisions().items()))
    out.write(
        f"\nSummary: {len(result.spans)} spans, guardrail verdicts: {decisions or 'none'}; "
        f"{result.records} records reached Akto; {result.seconds:.1f} s\n"
    )
    return result
