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


def test_quick_gateway_figure_measures_a_real_gateway_and_stops_it(tmp_path: Path) -> None:
    # The real collector (collector/build.sh), the OTLP sink and the load generator,
    # each in its own process; a tiny window.
    from tests.test_stack_real_programs import require_program

    require_program("otelcol")
    results = tmp_path / "gateway.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "gateway",
            "--json",
            str(results),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    figure = json.loads(results.read_text())["figures"]["gateway"]
    assert "skipped" not in " ".join(figure["notes"])
    runs = figure["data"]["throughput"]
    assert runs
    for run in runs.values():
        assert run["delivered"] > 0 and run["accepted"] > 0, run
        # gateway.yaml batches for Akto's 4 MiB limit: at most 6 events a request.
        assert run["requests"] > 0 and run["delivered"] <= 6 * run["requests"], run
        assert run["drain"]["delivered"] > 0, run
        assert run["memory"]["peak"] > 0
    disk = figure["data"]["disk_queue"]
    assert disk["accepted"] > 0 and disk["disk_bytes"] > disk["empty_bytes"], disk
    pids = [pid for run in runs.values() for pid in run["pids"]] + disk["pids"]
    assert pids
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _not_ours(pid), pid


def _not_ours(pid: int) -> bool:
    # A pid may be reused after ours exited: not ours unless its command line is one
    # of the figure's programs.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return not any(p in cmdline for p in (b"otelcol", b"otlp_sink", b"otlp_load"))
