"""The servers the benchmarks talk to, each in its own process (no shared GIL).

* :class:`EmulatorProcess`: ``python -m akto_otel.emulator`` (the package's Akto
  emulator, unmodified, default policy) on a free port.
* :class:`NginxProcess`: Debian's nginx answering the same fixed "allowed" verdict
  on ``/api/http-proxy``, one process, no logging; a second port speaks cleartext
  HTTP/2 (prior knowledge) and proxies to the first, so the body is read first.
* :func:`closed_port_url`: an address where nothing listens (Akto down).

All bind 127.0.0.1 and are stopped by their context manager.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from types import TracebackType
from typing import Any

from akto_otel.emulator.policy import allowed_result

from .common import proc_cpu_seconds

__all__ = [
    "ALLOWED_VERDICT_BODY",
    "EmulatorProcess",
    "NginxProcess",
    "closed_port_url",
    "free_port",
    "nginx_available",
]

#: The emulator's answer to an allowed /api/http-proxy check, byte for byte the same shape.
ALLOWED_VERDICT_BODY = json.dumps(
    {
        "success": True,
        "message": "guardrails evaluated",
        "data": {"guardrailsResult": allowed_result()},
    },
    separators=(",", ":"),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port was free a moment ago: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


def _wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


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


class EmulatorProcess(_Process):
    """The Akto emulator (``python -m akto_otel.emulator``) in a child process."""

    name = "emulator"

    def start(self) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "akto_otel.emulator", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://\S+", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.url = match.group(0)
        return self

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def take_records(self) -> int:
        """How many records the emulator holds; forgets them (keeps its memory flat)."""
        request = urllib.request.Request(f"{self.url}/_emulator/records", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as response:
            body: dict[str, Any] = json.loads(response.read())
        return int(body["cleared"])


_NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    http2_max_requests 100000000;
    tcp_nodelay on;
    client_body_buffer_size 1m;
    upstream verdicts {{
        server 127.0.0.1:{port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location = /api/http-proxy {{ return 200 '{verdict}'; }}
        location = /api/ingestData {{ return 200 '{{"success":true,"message":"ingested"}}'; }}
        location = /healthCheck {{ return 200 '{{"status":"ok"}}'; }}
    }}
    # HTTP/2 must read the request body before answering, or the client gets a
    # reset stream while still sending it: proxy (body buffered) to the port above.
    server {{
        listen 127.0.0.1:{h2_port} http2;
        location / {{
            proxy_pass http://verdicts;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_available() -> str | None:
    """The nginx binary, or None when it is not installed (apt-get install nginx-light).

    ``AKTO_BENCH_NGINX=off`` in the environment hides it (to run as without nginx).
    """
    if os.environ.get("AKTO_BENCH_NGINX", "").lower() == "off":
        return None
    found = shutil.which("nginx")
    if found is None and os.path.exists("/usr/sbin/nginx"):
        found = "/usr/sbin/nginx"
    return found


class NginxProcess(_Process):
    """nginx (one process, no master) serving the fixed allowed verdict."""

    name = "nginx"

    def __init__(self) -> None:
        super().__init__()
        self.h2_url = ""
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> NginxProcess:
        binary = nginx_available()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        last: Exception | None = None
        for _ in range(5):  # a free port can be taken between picking and binding
            self._dir = tempfile.TemporaryDirectory(prefix="akto-bench-nginx-")
            prefix = self._dir.name
            port, h2_port = free_port(), free_port()
            conf = os.path.join(prefix, "nginx.conf")
            with open(conf, "w", encoding="utf-8") as f:
                f.write(
                    _NGINX_CONF.format(
                        prefix=prefix, port=port, h2_port=h2_port, verdict=ALLOWED_VERDICT_BODY
                    )
                )
            self.proc = subprocess.Popen(
                [binary, "-p", prefix, "-c", conf],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                _wait_listening(port, 5.0)
                _wait_listening(h2_port, 5.0)
            except OSError as exc:
                last = exc
                self.stop()
                continue
            self.url = f"http://127.0.0.1:{port}"
            self.h2_url = f"http://127.0.0.1:{h2_port}"
            return self
        raise RuntimeError(f"nginx did not start: {last}")

    def __enter__(self) -> NginxProcess:
        return self.start()

    def stop(self) -> None:
        super().stop()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None


def nginx_version() -> str:
    binary = nginx_available()
    if binary is None:
        return "not installed"
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (result.stderr or result.stdout).strip().replace("nginx version: ", "")
