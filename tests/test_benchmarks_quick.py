"""The benchmark suite runs end to end in quick mode (no timing assertions here)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import servers
from benchmarks.runner import FIGURES

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)


def _run_module(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` from the repository root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_quick_run_prints_every_figure(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = _run_module("benchmarks", "--quick", "--json", str(results), timeout=540)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for header, _ in FIGURES.values():
        assert f"=== {header} ===" in proc.stdout, f"missing figure {header!r}"
    assert "=== Targets ===" in proc.stdout
    assert "FAILED" not in proc.stdout
    document = json.loads(results.read_text())
    assert set(document["figures"]) == set(FIGURES)
    assert document["quick"] is True
    # The 1 MiB command's CPU pieces, timed in process next to the yardstick.
    pieces = document["figures"]["windows"]["data"]["in_process_us"]
    assert len(pieces) == 3
    assert min(pieces.values()) > 0


def test_tail_sources_runs_every_variant_against_the_stand_in() -> None:
    proc = _run_module("benchmarks.tail_sources", "--rounds", "1", "--calls", "30", timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = [line.split("  ")[0].strip() for line in proc.stdout.splitlines()]
    for variant in ("stdlib", "hook", "hook, no record", "hook, collector off"):
        assert any(row.startswith(variant) for row in rows), proc.stdout


def test_unknown_figure_is_rejected() -> None:
    proc = _run_module("benchmarks", "--only", "nope", timeout=120)
    assert proc.returncode == 2
    assert "unknown figure" in proc.stderr


def test_quick_gateway_figure_measures_a_real_gateway_and_stops_it(tmp_path: Path) -> None:
    # The real collector (collector/build.sh), the stand-in sink and the load generator,
    # each in its own process; a tiny window.
    from tests.test_stack_real_programs import require_program

    require_program("otelcol")
    results = tmp_path / "gateway.json"
    proc = _run_module(
        "benchmarks", "--quick", "--only", "gateway", "--json", str(results), timeout=240
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
    return not any(p in cmdline for p in (b"otelcol", b"benchmarks.standin", b"otlp_load"))


def test_quick_soak_accounts_for_every_record_exactly_once(tmp_path: Path) -> None:
    # Real CLIs, the emulator behind the fault proxy and the agent in processes of
    # their own; 30 s of phases up, down, up, slow, up, 5xx.
    results = tmp_path / "soak.json"
    proc = _run_module(
        "benchmarks", "--quick", "--only", "soak", "--json", str(results), timeout=300
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    document = json.loads(results.read_text())
    assert document["failed"] == []
    data = document["figures"]["soak"]["data"]
    assert {phase for _, phase in data["timeline"]} == {"up", "down", "slow", "5xx"}
    assert data["sessions"].get("completed", 0) > 0, data["sessions"]
    assert not data["sessions"].get("failed"), data["errors"]
    acc = data["accounting"]
    assert acc["sent"] > 0, acc
    assert acc["sent"] == acc["acknowledged"] + acc["dropped"] + acc["failed"], acc
    assert acc["exported"] == acc["acknowledged"], acc
    assert acc["received"] == acc["acknowledged"] + acc["duplicated"], acc
    assert acc["queued_at_end"] == 0 and acc["unaccounted"] == 0, acc
    assert acc["exact"] is True, acc
    for probe in (data["start"], data["end"]):
        assert probe["rss"] > 0 and probe["fds"] > 0 and probe["tasks"] >= 1, probe
        assert probe["threads"] >= probe["own_threads"] >= 1, probe


def test_soak_accounting_is_exact_only_when_every_record_is_acknowledged_or_lost() -> None:
    from benchmarks.fig_soak import accounting

    def counts(unique: int, duplicates: int = 0) -> dict[str, int]:
        return {
            "ingest_unique": unique,
            "ingest_records": unique + duplicates,
            "duplicates": duplicates,
            "emulator_dropped": 0,
        }

    def stats(exported: int, dropped: int = 0, failed: int = 0) -> dict[str, int]:
        return {"exported": exported, "dropped": dropped, "failed": failed, "retried": 0}

    assert accounting(10, stats(8, 1, 1), 0, counts(8))["exact"] is True
    twice = accounting(10, stats(10), 0, counts(10, duplicates=3))
    assert twice["exact"] is True and twice["duplicated"] == 3
    # One record the exporter counts as delivered never arrived.
    lost = accounting(10, stats(10), 0, counts(9))
    assert lost["exact"] is False and lost["unaccounted"] == 1
    # One record counted dropped arrived anyway: counted twice.
    both = accounting(10, stats(9, dropped=1), 0, counts(10))
    assert both["exact"] is False and both["unaccounted"] == -1
    # Still queued at the end: not yet accounted for.
    assert accounting(10, stats(9), 1, counts(9))["exact"] is False
    # The emulator forgot records: its count cannot vouch for them.
    forgot = {**counts(10), "emulator_dropped": 1}
    assert accounting(10, stats(10), 0, forgot)["exact"] is False


def test_soak_phases_cycle_through_every_fault_in_the_quick_and_the_full_run() -> None:
    from benchmarks.fig_soak import PHASES, phase_schedule

    quick = phase_schedule(30.0, 5.0)
    assert [name for _, name in quick] == ["up", "down", "up", "slow", "up", "5xx"]
    full = phase_schedule(600.0, 30.0)
    assert len(full) == 20 and full[-1] == (570.0, "down")
    assert {name for _, name in full} == set(PHASES)


def test_free_ports_stay_below_the_ephemeral_range_and_apart_per_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port handed to another process is never one a connect() could take first,
    and two xdist workers never hand out the same one."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    slices = []
    for worker in ("gw0", "gw1", "gw3"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
        slices.append(set(servers._port_slice()))
    assert len(slices) == 3
    assert all(ports and max(ports) < low for ports in slices)
    assert not (slices[0] & slices[1]) and not (slices[1] & slices[2])
    port = servers.free_port()
    assert port < low
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free, as promised


def test_escape_density_prints_both_encoders_for_every_payload() -> None:
    result = _run_module("benchmarks.escape_density", timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rows = [line for line in result.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 10, result.stdout
    assert all(line.count(" ms") == 2 for line in rows), result.stdout
