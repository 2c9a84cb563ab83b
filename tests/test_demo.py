"""README's first command: the offline demo runs and shows a deny and a regeneration."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(120)
def test_demo_runs_offline_and_shows_the_story(tmp_path: Path) -> None:
    command = shutil.which("akto-otel") or str(Path(sys.executable).parent / "akto-otel")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [command, "demo"], capture_output=True, text=True, timeout=100, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert 'verdict=deny "Destructive shell command' in out
    assert out.count("akto.stop") >= 2  # the leaked token was regenerated
    assert "Final answer:" in out and "SECRET-TOKEN" not in out.split("Final answer:")[1]
    assert "Summary:" in out
