"""Figure 7: one scale-out gateway (collector/gateway.yaml): records/s, CPU, memory, disk.

Three processes on 127.0.0.1, free ports, all stopped after:

* the real collector built by ``collector/build.sh`` running the committed
  ``collector/gateway.yaml`` unchanged (its own disk queue in a temp dir; only its
  own metrics port is moved off 8888);
* :mod:`benchmarks.standin` as Akto's ``POST /v1/logs``: it decodes each request
  to count records and answers at once (the emulator maps every event in Python and
  would bound the figure itself);
* :mod:`benchmarks.otlp_load` as the agent collectors: pre-encoded Claude Code
  events (what ``AKTO_DELIVERY=otlp`` emits) over OTLP gRPC, 8 calls in flight,
  back to back.

Measured over a fixed window after a warm-up: records/s the sink received, records/s
the gateway's receiver accepted (its own ``otelcol_receiver_accepted_log_records``),
each process's CPU (``/proc/<pid>/stat``) per second and per 10k delivered records,
the gateway's peak RSS (``VmHWM``). The load then stops and the gateway drains its
backlog for a while: records/s of the exporter side alone. Then a second gateway
whose Akto is down
(connection refused) takes load for a moment: its disk queue's bytes per queued
record (``st_blocks`` of the queue directory), for outage sizing. All three share
the machine's cores: the CPU columns show which side bounds the rate. Without the
built collector the figure says "skipped: collector not built".

Run alone::

    python -m benchmarks --only gateway
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import Config, FigureResult, Table, load_average, proc_cpu_seconds
from .environment import Environment
from .servers import StandIn, closed_port_url, free_port, stop

__all__ = ["HEADER", "run"]

HEADER = "Figure 7: one gateway (collector/gateway.yaml): records/s, CPU, RSS, disk queue"
ROOT = Path(__file__).resolve().parents[1]
GATEWAY_CONFIG = ROOT / "collector" / "gateway.yaml"
BATCH = 64  # log records per request from the load generator
_READY_S = 30.0
_STOP_S = 15.0


def collector_binary() -> Path | None:
    """The collector ``collector/build.sh`` builds, or None when it is not built."""
    try:
        out = subprocess.run(
            ["bash", str(ROOT / "collector" / "build.sh"), "--paths"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^otelcol=(.+)$", out, re.MULTILINE)
    if match is None:
        return None
    path = Path(match.group(1))
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), b""
    except OSError:
        return 0, b""


def memory_bytes(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak RSS), ``RssAnon`` and ``RssFile`` of process ``pid``, in bytes.

    The collector's disk queue is a memory-mapped file: its pages count in RSS as
    ``RssFile`` (the kernel can drop them), the Go heap as ``RssAnon``.
    """
    wanted = {"VmHWM:": "peak", "RssAnon:": "anon", "RssFile:": "file"}
    found = dict.fromkeys(wanted.values(), 0)
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key = line.split(None, 1)[0] if line.strip() else ""
                if key in wanted:
                    found[wanted[key]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return found


def disk_bytes(directory: Path) -> int:
    """Bytes the files under ``directory`` occupy on disk (allocated blocks)."""
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_blocks * 512
    return total


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (or ``name_total``) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] in (name, f"{name}_total"):
            with contextlib.suppress(ValueError):
                total += float(value)
    return total


@dataclass
class _Gateway:
    proc: subprocess.Popen[bytes]
    otlp: str
    telemetry: str
    queue: Path
    log: Path

    def metric(self, name: str) -> float:
        status, body = _get(self.telemetry)
        return metric(body.decode(), name) if status == 200 else float("nan")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@contextlib.contextmanager
def _gateway(binary: Path, work: Path, name: str, akto_url: str) -> Iterator[_Gateway]:
    grpc, health, telemetry = free_port(), free_port(), free_port()
    queue = work / f"{name}-queue"
    log = work / f"{name}.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "AKTO_OTLP_URL": akto_url,
        "AKTO_API_TOKEN": "bench-token",
        "AKTO_GATEWAY_QUEUE_DIR": str(queue),
        "AKTO_GATEWAY_OTLP_GRPC": f"127.0.0.1:{grpc}",
        "AKTO_GATEWAY_HEALTH": f"127.0.0.1:{health}",
    }
    # Only the collector's own metrics move (the default :8888 may be taken).
    telemetry_arg = (
        "--config=yaml:service::telemetry::metrics::readers: "
        f"[{{pull: {{exporter: {{prometheus: {{host: 127.0.0.1, port: {telemetry}}}}}}}}}]"
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config={GATEWAY_CONFIG}",
                telemetry_arg,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    gateway = _Gateway(
        proc, f"127.0.0.1:{grpc}", f"http://127.0.0.1:{telemetry}/metrics", queue, log
    )
    try:
        deadline = time.monotonic() + _READY_S
        while _get(f"http://127.0.0.1:{health}/", 2.0)[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{gateway.log_tail()}")
            time.sleep(0.2)
        yield gateway
    finally:
        stop(proc, group=True)


def _load(target: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.otlp_load",
            "--target",
            target,
            "--seconds",
            str(seconds),
            "--batch",
            str(BATCH),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _load_result(proc: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError("the load generator did not finish") from None
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"the load generator failed: {err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _prime(target: str, sink: StandIn, deadline_s: float = 90.0) -> None:
    """One second of load, then wait until the sink has seen a record: the window is
    measured on a pipeline that delivers (on a loaded machine the first export can
    come later than a fixed warm-up)."""
    _load_result(_load(target, 1.0), 1.0)
    start = time.monotonic()
    while sink.log_counts()["records"] == 0:
        if time.monotonic() - start > deadline_s:
            raise RuntimeError(f"the gateway delivered nothing within {deadline_s:g} s")
        time.sleep(0.2)


def _throughput(
    binary: Path,
    work: Path,
    name: str,
    times: tuple[float, float, float],
) -> dict[str, Any]:
    """Flood one gateway for ``warmup + window`` s, then watch it drain for ``drain`` s."""
    warmup, window, drain = times
    with StandIn() as sink, _gateway(binary, work, name, sink.url) as gw:
        _prime(gw.otlp, sink)
        primed = gw.metric("otelcol_receiver_accepted_log_records")
        load = _load(gw.otlp, warmup + window + 1.0)
        try:
            time.sleep(warmup)
            # The window starts once the generator sends (on a loaded machine its
            # start-up can outlast the warm-up).
            started = time.monotonic()
            while gw.metric("otelcol_receiver_accepted_log_records") <= primed:
                if load.poll() is not None or time.monotonic() - started > 60.0:
                    raise RuntimeError("the load generator sent nothing")
                time.sleep(0.1)
            s0, a0 = sink.log_counts(), gw.metric("otelcol_receiver_accepted_log_records")
            cpu0 = {
                "gateway": proc_cpu_seconds(gw.proc.pid),
                "sink": proc_cpu_seconds(sink.pid),
                "load": proc_cpu_seconds(load.pid),
            }
            t0 = time.perf_counter()
            time.sleep(window)
            s1, a1 = sink.log_counts(), gw.metric("otelcol_receiver_accepted_log_records")
            cpu1 = {
                "gateway": proc_cpu_seconds(gw.proc.pid),
                "sink": proc_cpu_seconds(sink.pid),
                "load": proc_cpu_seconds(load.pid),
            }
            elapsed = time.perf_counter() - t0
            queue = gw.metric("otelcol_exporter_queue_size")
            memory = memory_bytes(gw.proc.pid)
            generator = _load_result(load, warmup + window)
            # No inflow now: what the exporter delivers from the backlog on its own.
            d0, g0, t2 = sink.log_counts(), proc_cpu_seconds(gw.proc.pid), time.perf_counter()
            time.sleep(drain)
            d1, g1 = sink.log_counts(), proc_cpu_seconds(gw.proc.pid)
            drained_s = time.perf_counter() - t2
            left = gw.metric("otelcol_exporter_queue_size")
        finally:
            if load.poll() is None:
                stop(load)
    delivered = s1["records"] - s0["records"]
    return {
        "seconds": elapsed,
        "delivered": delivered,
        "accepted": a1 - a0,
        "requests": s1["requests"] - s0["requests"],
        "wire_bytes": s1["bytes"] - s0["bytes"],
        "cpu": {k: cpu1[k] - cpu0[k] for k in cpu0},
        "queue_at_end": queue,
        "memory": memory,
        "drain": {
            "seconds": drained_s,
            "delivered": d1["records"] - d0["records"],
            "cpu": g1 - g0,
            "queue_left": left,
        },
        "generator": generator,
        "pids": [gw.proc.pid, sink.pid, load.pid],
    }


def _disk_queue(binary: Path, work: Path, seconds: float) -> dict[str, Any]:
    """Load a gateway whose Akto refuses connections: bytes its disk queue takes."""
    with _gateway(binary, work, "outage-gateway", closed_port_url()) as gw:
        empty = disk_bytes(gw.queue)
        generator = _load_result(_load(gw.otlp, seconds), seconds)
        # The receiver counts what it accepted; the queue file holds it once written.
        accepted = gw.metric("otelcol_receiver_accepted_log_records")
        deadline = time.monotonic() + 10
        while gw.metric("otelcol_exporter_queue_size") <= 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # past the queue's 1 s batch timeout
        used = disk_bytes(gw.queue)
        queued = gw.metric("otelcol_exporter_queue_size")
    return {
        "accepted": accepted,
        "queue_size": queued,
        "disk_bytes": used,
        "empty_bytes": empty,
        "generator": generator,
        "pids": [gw.proc.pid],
    }


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def _per_10k(seconds: float, records: float) -> str:
    return f"{seconds / records * 10_000:.2f}" if records else "n/a"


def _throughput_tables(runs: dict[str, dict[str, Any]], window: float, warmup: float) -> Table:
    names = list(runs)
    table = Table(
        f"one gateway, {window:g} s window after {warmup:g} s warm-up",
        ["measure", *names],
    )

    def row(label: str, cell: Any) -> None:
        table.add(label, *(cell(runs[n]) for n in names))

    def rate(r: dict[str, Any], key: str) -> str:
        return f"{r[key] / r['seconds']:,.0f}"

    row("records/s delivered at the sink (Akto's /v1/logs)", lambda r: rate(r, "delivered"))
    row("records/s accepted by the gateway's receiver", lambda r: rate(r, "accepted"))
    row(
        "records/s delivered draining the backlog, no inflow",
        lambda r: (
            f"{r['drain']['delivered'] / r['drain']['seconds']:,.0f}"
            + ("" if r["drain"]["queue_left"] > 0 else " (queue emptied)")
        ),
    )
    row("requests/s at the sink", lambda r: rate(r, "requests"))
    row(
        "records per request at the sink",
        lambda r: f"{r['delivered'] / r['requests']:.1f}" if r["requests"] else "n/a",
    )
    row(
        "bytes per record on the wire to Akto (protobuf, no gzip)",
        lambda r: f"{r['wire_bytes'] / r['delivered']:,.0f}" if r["delivered"] else "n/a",
    )
    for process, label in (
        ("gateway", "gateway"),
        ("sink", "sink (Akto's stand-in)"),
        ("load", "load generator"),
    ):
        row(f"{label} CPU s per s", lambda r, p=process: f"{r['cpu'][p] / r['seconds']:.2f}")
        row(
            f"{label} CPU s per 10k records delivered",
            lambda r, p=process: _per_10k(r["cpu"][p], r["delivered"]),
        )
    row(
        "gateway CPU s per s draining", lambda r: f"{r['drain']['cpu'] / r['drain']['seconds']:.2f}"
    )
    row(
        "gateway CPU s per 10k records draining",
        lambda r: _per_10k(r["drain"]["cpu"], r["drain"]["delivered"]),
    )
    row("gateway peak RSS (VmHWM)", lambda r: _mib(r["memory"]["peak"]))
    row("gateway RSS at the end: heap (RssAnon)", lambda r: _mib(r["memory"]["anon"]))
    row("gateway RSS at the end: queue file (RssFile)", lambda r: _mib(r["memory"]["file"]))
    row("gateway exporter queue size at the end", lambda r: f"{r['queue_at_end']:,.0f}")
    row(
        "load generator requests refused",
        lambda r: (
            f"{r['generator']['failed']:,} of "
            f"{r['generator']['failed'] + r['generator']['requests']:,}"
        ),
    )
    return table


def run(cfg: Config, env: Environment) -> FigureResult:
    result = FigureResult("gateway", HEADER)
    binary = collector_binary()
    if binary is None:
        result.notes.append("skipped: collector not built (run collector/build.sh)")
        return result
    warmup, window, drain = cfg.pickf(3.0, 1.0), cfg.pickf(15.0, 1.5), cfg.pickf(10.0, 1.0)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="akto-bench-gateway-") as tmp:
        work = Path(tmp)
        runs = {"gateway.yaml": _throughput(binary, work, "gateway", (warmup, window, drain))}
        disk = _disk_queue(binary, work, cfg.pickf(3.0, 1.0))
    table = _throughput_tables(runs, window, warmup)
    bytes_per_event = runs["gateway.yaml"]["generator"]["bytes_per_record"]
    table.notes.append(
        f"load: {BATCH} Claude Code events per OTLP gRPC request (tool_result, user_prompt, "
        f"assistant_response; {bytes_per_event:,.0f} bytes each encoded), 8 calls in flight, "
        "as fast as the gateway answers"
    )
    table.notes.append(
        "the receiver accepts into the disk queue faster than the exporter drains it: the "
        "queue grows during the window, and the delivered rate is what one gateway sustains "
        "while also taking that inflow; after the load stops, the gateway drains its backlog "
        f"for {drain:g} s with no inflow: the exporter side alone"
    )
    table.notes.append(
        "CPU s per s near 1.00 for one process, or the three together near the cores the "
        "machine leaves them (load average), means CPU bound; well below, the exporter's "
        "requests in flight (num_consumers x 6 records per request / request time) bound it"
    )
    table.notes.append(f"load average before: {load_before}; after: {load_average()}")
    result.tables.append(table)
    queued = disk["accepted"]
    grown = disk["disk_bytes"] - disk["empty_bytes"]
    queue_table = Table("disk queue while Akto is down (connection refused)", ["measure", "value"])
    queue_table.add("records accepted into the queue", f"{queued:,.0f}")
    queue_table.add("queue directory on disk (allocated)", _mib(disk["disk_bytes"]))
    queue_table.add("disk bytes per queued record", f"{grown / queued:,.0f}" if queued else "n/a")
    result.tables.append(queue_table)
    result.data = {"throughput": runs, "disk_queue": disk}
    return result
