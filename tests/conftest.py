"""Shared fixtures: a real Akto emulator, in-memory span capture, the fake model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from akto_otel.emulator import EmulatorServer, Policy, Rule

TEST_RULES = (
    Rule(
        name="prompt-injection",
        hooks=("UserPromptSubmit",),
        target="request",
        pattern=r"ignore previous instructions",
        reason="Prompt injection detected",
    ),
    Rule(
        name="rm-rf",
        hooks=("PreToolUse",),
        target="request",
        pattern=r"rm -rf",
        reason="Destructive command",
    ),
    Rule(
        name="sudo-approval",
        hooks=("PreToolUse",),
        target="request",
        pattern=r"sudo ",
        behaviour="approval",
        reason="Needs a human",
    ),
    Rule(
        name="warn-env",
        hooks=("PreToolUse",),
        target="request",
        pattern=r"cat \.env",
        behaviour="warn",
        reason="Reads secrets",
    ),
    Rule(
        name="secret-out",
        hooks=("Stop", "SubagentStop"),
        target="response",
        pattern=r"SECRET-TOKEN",
        reason="Secret in response",
    ),
    Rule(
        name="mask-email",
        hooks=("PreToolUse",),
        target="request",
        pattern=r"[a-z]+@example\.com",
        mask="[EMAIL]",
        reason="masked",
    ),
)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer(Policy(TEST_RULES))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SpanCapture:
    """A real SDK TracerProvider exporting to memory, plus a metric reader."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, f"{name}: {[s.name for s in self.spans]}"
        return found[0]

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


@pytest.fixture
def capture() -> Iterator[SpanCapture]:
    cap = SpanCapture()
    yield cap
    cap.provider.shutdown()


class LogCapture:
    """What reached the process's global SDK ``LoggerProvider`` during one test."""

    def __init__(self, exporter: InMemoryLogRecordExporter) -> None:
        self.exporter = exporter

    @property
    def records(self) -> list[ReadableLogRecord]:
        return list(self.exporter.get_finished_logs())

    def events(self, name: str) -> list[ReadableLogRecord]:
        return [r for r in self.records if r.log_record.event_name == name]


@pytest.fixture
def content_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogCapture]:
    """A real SDK LoggerProvider, exporting to memory, as the one the package's content
    events see as global. The process's global provider is left alone (it can be set
    only once, and other tests need none); tests/test_configure.py checks the real
    global path in a fresh interpreter."""
    from akto_otel import spans

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    monkeypatch.setattr(spans, "get_logger_provider", lambda: provider)
    yield LogCapture(exporter)
    provider.shutdown()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A fresh 0700 directory with a short path under /tmp, for a Unix socket (its
    path must fit in 108 bytes; tmp_path's may not); removed afterwards."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="ak", dir="/tmp"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------ real-stack skips, said once

#: What a skip reason names -> what enables those tests (tests/test_stack_*.py skip with
#: these words when a real program is missing; CI has them and fails instead).
REAL_STACK_NEEDS = {
    "collector/build.sh": "bash collector/build.sh",
    "apt-get install prometheus": "apt-get install -y prometheus (as root)",
    "apt-get install chromium": "apt-get install -y chromium (as root)",
}


def _skip_reason(report: Any) -> str:
    longrepr = getattr(report, "longrepr", None)
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def real_stack_summary(reasons: Iterable[str]) -> str:
    """One line: how many real-stack tests were skipped and the commands that enable
    them; "" when none was."""
    needs: dict[str, None] = {}
    skipped = 0
    for reason in reasons:
        found = [command for words, command in REAL_STACK_NEEDS.items() if words in reason]
        if found:
            skipped += 1
            needs.update(dict.fromkeys(found))
    if not skipped:
        return ""
    tests = "test was" if skipped == 1 else "tests were"
    return (
        f"{skipped} real-stack {tests} skipped (a real collector, Jaeger, Prometheus or "
        f"Chromium is missing): run {' and '.join(needs)}, then python -m pytest again"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    reports = terminalreporter.stats.get("skipped", [])
    line = real_stack_summary(_skip_reason(report) for report in reports)
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)
