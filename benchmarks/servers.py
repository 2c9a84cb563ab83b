"""The processes the benchmarks start, and how they stop.

* :class:`StandIn`: ``python -m benchmarks.standin`` (Akto's routes and the OTLP
  logs sink, fixed answers at near-zero cost) on a free port.
* :func:`closed_port_url`: an address where nothing listens (Akto down).
* :func:`run_child`: ``python -m benchmarks.<module>`` to the end, its last line as JSON.
* :func:`stop`: SIGTERM (or stdin closed), a bounded wait, then SIGKILL.

Everything binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .common import proc_cpu_seconds
from .standin import ALLOWED_VERDICT_BODY

__all__ = [
    "ALLOWED_VERDICT_BODY",
    "StandIn",
    "closed_port_url",
    "free_port",
    "get_json",
    "run_child",
    "stop",
]


_LOWEST_PORT = 10000


def _port_slice() -> range:
    """The ports this process hands out: below the kernel's ephemeral range, this
    pytest-xdist worker's share of them (the whole of them outside xdist)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        ephemeral_low = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    index = int(worker) if worker.isdigit() else 0
    workers = max(int(count), 1) if count.isdigit() else 1
    share = (ephemeral_low - _LOWEST_PORT) // max(workers, index + 1)
    if share < 64:  # a machine whose ephemeral range starts low: no room to share
        return range(0)
    start = _LOWEST_PORT + index * share
    return range(start, start + share)


def _next_ports() -> Iterator[int]:
    ports = _port_slice()
    if not ports:
        return
    first = random.randrange(len(ports))  # two runs side by side seldom meet
    while True:
        for offset in range(len(ports)):
            yield ports[(first + offset) % len(ports)]


_ports: Iterator[int] | None = None  # made on first use, once xdist has named the worker


def free_port() -> int:
    """A port on 127.0.0.1 free at this moment, for a program in another process.

    Not port 0's answer: that comes from the ephemeral range, where every outgoing
    connection on the machine draws its local port, so a parallel test's connect()
    can take it before the other program binds it (CI saw Jaeger exit with "address
    already in use"). These come from below that range, which connect() never draws
    from, each xdist worker from its own slice, and each is checked by binding it.
    """
    global _ports
    if _ports is None:
        _ports = _next_ports()
    for port in itertools.islice(_ports, 512):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port was free a moment ago: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


def get_json(url: str, method: str = "GET") -> Any:
    """One blocking request (no thread pool: the soak counts threads); its JSON answer."""
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def stop(proc: subprocess.Popen[Any], *, group: bool = False, wait: float = 15.0) -> None:
    """End ``proc`` (its whole process group with ``group``): stdin closed if it is a
    pipe (the soak's servers stop on EOF), else SIGTERM; after ``wait`` s, SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, OSError):
            if proc.stdin is not None:
                proc.stdin.close()
            elif group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.terminate()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            proc.wait(wait)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def run_child(module: str, *args: object, timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.<module> args`` to its end; its last output line, as JSON."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *map(str, args)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{module} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class StandIn:
    """The stand-in server (:mod:`benchmarks.standin`) in a child process of its own."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.standin", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://\S+", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the stand-in server did not start: {line!r}")
        self.url = match.group(0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def take_records(self) -> int:
        """Akto records the server counted since the last call; resets the count."""
        return int(get_json(f"{self.url}/_emulator/records", "DELETE")["cleared"])

    def log_counts(self) -> dict[str, int]:
        """``{"records", "requests", "bytes"}`` received at ``/v1/logs`` so far."""
        counts: dict[str, int] = get_json(f"{self.url}/_count")
        return counts

    def stop(self) -> None:
        stop(self.proc, wait=5.0)

    def __enter__(self) -> StandIn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
