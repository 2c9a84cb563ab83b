"""The benchmark suite runs end to end in quick mode (no timing assertions here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.runner import FIGURES

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)


def test_quick_run_prints_every_figure(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for header, _ in FIGURES.values():
        assert f"=== {header} ===" in proc.stdout, f"missing figure {header!r}"
    assert "=== Targets ===" in proc.stdout
    assert "FAILED" not in proc.stdout
    document = json.loads(results.read_text())
    assert set(document["figures"]) == set(FIGURES)
    assert document["quick"] is True


def test_unknown_figure_is_rejected() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown figure" in proc.stderr
