"""What one command hook costs: the forwarder's run per event, against a real server.

Starts ``akto-otel serve`` (no Akto: fail-open, so the server answers at once) on a
Unix socket in a fresh private directory, then runs the command that
``akto-otel claude-settings --transport command`` prints for Notification (an
observed event: answered ``{}`` with no Akto call) ``--runs`` times through
``sh -c``, as the CLI does, and prints the median and the 90th percentile of the
wall time per event; next to it, the same interpreter starting with nothing to do
(``-I -S -c pass``) and importing the package (``import akto_otel.serve``), which is
what the forwarder avoids.

    python -m benchmarks.forwarder_cost [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from akto_otel.serve import claude_command_settings

ROOT = Path(__file__).resolve().parent.parent


def _times(argv: list[str], runs: int, stdin: bytes = b"") -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, input=stdin, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def _line(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"{name:<44} median {statistics.median(ordered) * 1000:6.1f} ms   p90 {p90 * 1000:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="akf", dir="/tmp"))
    folder.chmod(0o700)
    path = folder / "hook.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "OTEL_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "akto_otel.cli",
            "serve",
            "--port",
            "0",
            "--socket",
            str(path),
            "--secret-file",
            str(folder / "secret"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        hook = claude_command_settings(path)["hooks"]["Notification"][0]["hooks"][0]
        event = json.dumps(
            {"session_id": "bench", "hook_event_name": "Notification", "message": "hi"}
        ).encode()
        _times(["sh", "-c", hook["command"]], 5, event)  # warm the page cache
        print(f"{args.runs} runs each, {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        print(_line("command hook (sh -c forwarder -> server)", _times(
            ["sh", "-c", hook["command"]], args.runs, event
        )))  # fmt: skip
        print(_line("python -I -S -c pass", _times(
            [sys.executable, "-I", "-S", "-c", "pass"], args.runs
        )))  # fmt: skip
        print(_line("python -c 'import akto_otel.serve'", _times(
            [sys.executable, "-c", "import akto_otel.serve"], max(10, args.runs // 10)
        )))  # fmt: skip
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
