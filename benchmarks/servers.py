"""The server the benchmarks talk to, in its own process (no shared GIL).

* :class:`StubProcess`: ``python -m benchmarks.stub_server`` (fixed answers, near-zero
  cost; see :mod:`benchmarks.stub_server`) on a free port.
* :func:`closed_port_url`: an address where nothing listens (Akto down).

Both bind 127.0.0.1; the process is stopped by its context manager.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request
from types import TracebackType
from typing import Any

from .common import proc_cpu_seconds
from .stub_server import ALLOWED_VERDICT_BODY

__all__ = ["ALLOWED_VERDICT_BODY", "StubProcess", "closed_port_url", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port was free a moment ago: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


class _Process:
    name = "server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class StubProcess(_Process):
    """The stub Akto (``python -m benchmarks.stub_server``) in a child process."""

    name = "stub"

    def start(self) -> StubProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.stub_server", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://\S+", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the stub server did not start: {line!r}")
        self.url = match.group(0)
        return self

    def __enter__(self) -> StubProcess:
        return self.start()

    def take_records(self) -> int:
        """How many records the server counted since the last call; resets the count."""
        request = urllib.request.Request(f"{self.url}/_emulator/records", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as response:
            body: dict[str, Any] = json.loads(response.read())
        return int(body["cleared"])
