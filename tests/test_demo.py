"""README's first command: the offline demo runs and tells its story truthfully."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from akto_otel.demo import ANSWERS, LEAKING_ANSWER
from tests.test_docs import doc_block

COMMAND = shutil.which("akto-otel") or str(Path(sys.executable).parent / "akto-otel")


def _demo(tmp_path: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:  # a checkout run without installing it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    result = subprocess.run(
        [COMMAND, "demo", *args], capture_output=True, text=True, timeout=100, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _final_answer(out: str) -> tuple[str, str]:
    match = re.search(r'^(Final answer.*?): "(.*)"$', out, re.MULTILINE)
    assert match, out
    return match.group(1), match.group(2)


def _tool_verdicts(out: str) -> list[str]:
    verdicts = re.findall(r"execute_tool Bash .*verdict=(\w+)", out)
    assert verdicts, out
    return verdicts


@pytest.mark.timeout(120)
def test_demo_runs_offline_and_shows_the_story(tmp_path: Path) -> None:
    # README's first command, as written (the package is already installed here).
    install, _, command = doc_block("readme-demo").code.strip().partition(" && ")
    assert install == "pip install -e ." and command.split()[:2] == ["akto-otel", "demo"]
    out = _demo(tmp_path, *command.split()[2:])
    assert _tool_verdicts(out) == ["allow", "deny"]
    assert 'verdict=deny "Destructive shell command' in out
    assert out.count("akto.stop") >= 2  # the leaked token was regenerated
    label, answer = _final_answer(out)
    assert "regenerated" in label and "Response leaks a credential" in label
    assert answer == ANSWERS["default"] and "SECRET-TOKEN" not in answer
    assert "Summary:" in out
    # Nothing was exported, and it says so with the way to send it to a collector.
    assert "not exported" in out and "OTEL_EXPORTER_OTLP_ENDPOINT=" in out


@pytest.mark.timeout(120)
def test_deny_heavy_answer_claims_nothing_that_was_denied(tmp_path: Path) -> None:
    out = _demo(tmp_path, "--deny-heavy")
    assert _tool_verdicts(out) == ["deny", "deny"]
    _, answer = _final_answer(out)
    assert answer == ANSWERS["all-denied"]
    assert answer != LEAKING_ANSWER and "listed" not in answer
