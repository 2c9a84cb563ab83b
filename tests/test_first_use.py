"""What a new user meets first: a guard that says when its spans go nowhere, clear
errors for a misspelled keyword or a dict where options belong.

The warning cases run in a fresh interpreter: the global TracerProvider can be set once
and each warning is logged once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import ClaudeAgentOptions

import akto_otel
from akto_otel import AktoGuardrails
from tests.conftest import SpanCapture, real_stack_summary

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)

_TWO_GUARDS = """
import akto_otel
akto_otel.AktoGuardrails()
akto_otel.AktoGuardrails()
print("built")
"""
_CONFIGURED = """
import akto_otel
akto_otel.configure()
akto_otel.AktoGuardrails()
print("built")
"""


def _stderr_of(code: str, env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AKTO_"))}
    full.update(env, AKTO_DATA_INGESTION_URL="http://127.0.0.1:9", OTEL_METRICS_EXPORTER="none")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=90,
        env=full,
        check=False,
    )
    assert result.returncode == 0 and "built" in result.stdout, result.stderr[-3000:]
    return result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
        {"OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_a_guard_with_no_sdk_provider_warns_once_that_spans_go_nowhere(
    env: dict[str, str],
) -> None:
    stderr = _stderr_of(_TWO_GUARDS, env)
    warnings = [line for line in stderr.splitlines() if "akto_otel.configure()" in line]
    assert len(warnings) == 1, stderr
    assert next(iter(env)) in warnings[0]


@pytest.mark.parametrize(
    ("code", "env"),
    [
        (_TWO_GUARDS, {}),
        (_TWO_GUARDS, {"OTEL_TRACES_EXPORTER": "none"}),
        (_CONFIGURED, {"OTEL_TRACES_EXPORTER": "console"}),
    ],
    ids=["nothing-asked", "exporter-none", "configure-called"],
)
def test_no_warning_when_nothing_is_lost(code: str, env: dict[str, str]) -> None:
    assert "akto_otel.configure()" not in _stderr_of(code, env)


@pytest.mark.parametrize(
    ("build", "wrong", "right"),
    [
        (AktoGuardrails, "fail_mod", "fail_mode"),
        (AktoGuardrails, "tracer_providr", "tracer_provider"),
        (AktoGuardrails, "ingestion_uri", "ingestion_url"),
        (akto_otel.configure, "fail_mod", "fail_mode"),
        (akto_otel.configure, "sync_mod", "sync_mode"),
    ],
)
def test_a_misspelled_keyword_is_refused_with_the_one_meant(
    build: Any, wrong: str, right: str
) -> None:
    with pytest.raises(TypeError) as caught:
        build(**{wrong: "closed"})
    message = str(caught.value)
    assert repr(wrong) in message and f"did you mean {right!r}" in message, message


def test_an_unrelated_keyword_is_refused_without_a_guess() -> None:
    with pytest.raises(TypeError) as caught:
        AktoGuardrails(zzzz=1)
    assert "'zzzz'" in str(caught.value) and "did you mean" not in str(caught.value)


async def test_options_given_as_a_dict_are_a_clear_type_error(capture: SpanCapture) -> None:
    guard = AktoGuardrails(tracer_provider=capture.provider, ingestion_url="http://127.0.0.1:9")
    given: Any = {"allowed_tools": ["Bash"]}
    with pytest.raises(TypeError, match="ClaudeAgentOptions"):
        guard.instrument(given)
    with pytest.raises(TypeError, match="ClaudeAgentOptions"):
        async with guard.session(given):
            pass
    with pytest.raises(TypeError, match="ClaudeAgentOptions"):
        async for _ in guard.query("hi", given):
            pass
    # The real thing still works.
    assert guard.instrument(ClaudeAgentOptions(allowed_tools=["Bash"])).hooks


def test_pytest_ends_with_one_line_on_the_real_stack_tests_it_skipped(tmp_path: Path) -> None:
    """A run where the real programs are missing says so once, with the commands."""
    (tmp_path / "test_stack.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def test_collector():
                pytest.skip("otelcol is not built (/x missing): run collector/build.sh")

            def test_jaeger():
                pytest.skip("jaeger is not built (/y missing): run collector/build.sh")

            def test_prometheus():
                pytest.skip("prometheus not found (Debian: apt-get install prometheus)")

            def test_other():
                pytest.skip("needs os.fork")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-o",
            "addopts=",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "real-stack" in line]
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("3 real-stack tests were skipped")
    assert "bash collector/build.sh" in lines[0] and "apt-get install -y prometheus" in lines[0]


def test_a_run_with_nothing_missing_says_nothing_about_the_real_stack() -> None:
    assert real_stack_summary(["needs os.fork", "bundled Claude CLI missing"]) == ""
