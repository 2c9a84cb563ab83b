"""``python -m benchmarks``: run the figures, print a table per figure, judge the targets."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from . import (
    fig_concurrency,
    fig_e2e,
    fig_gateway,
    fig_ingest,
    fig_latency,
    fig_observe,
    fig_outage,
    fig_profile,
    fig_soak,
    fig_tracing,
    fig_windows,
)
from .common import Config, FigureResult, Table, Verdict, load_average
from .environment import Environment
from .workload import quiet_logs

__all__ = ["FIGURES", "main"]

Runner = Callable[[Config, Environment], FigureResult]

#: name -> (header, runner), in the order a full run prints them.
FIGURES: dict[str, tuple[str, Runner]] = {
    "latency": (fig_latency.HEADER, fig_latency.run),
    "concurrency": (fig_concurrency.HEADER, fig_concurrency.run),
    "tracing": (fig_tracing.HEADER, fig_tracing.run),
    "ingest": (fig_ingest.HEADER, fig_ingest.run),
    "observe": (fig_observe.HEADER, fig_observe.run),
    "windows": (fig_windows.HEADER, fig_windows.run),
    "outage": (fig_outage.HEADER, fig_outage.run),
    "e2e": (fig_e2e.HEADER, fig_e2e.run),
    "profile": (fig_profile.HEADER, fig_profile.run),
    "gateway": (fig_gateway.HEADER, fig_gateway.run),
    "soak": (fig_soak.HEADER, fig_soak.run),
}

_PACKAGES = ("aiohttp", "httpx", "opentelemetry-sdk", "claude-agent-sdk")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": cpus,
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in _PACKAGES},
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="akto_otel benchmark suite: guardrail latency, concurrency, tracing, "
        "ingestion, outage and end-to-end figures against local servers.",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny version of every figure")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated figures to run, of: {', '.join(FIGURES)}",
    )
    parser.add_argument("--json", default="", metavar="PATH", help="also save results as JSON")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds/repetitions of the repeated figures"
    )
    args = parser.parse_args(argv)
    if args.only:
        unknown = [n for n in args.only.split(",") if n.strip() not in FIGURES]
        if unknown:
            parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    return args


def _targets_table(results: list[FigureResult], quick: bool) -> Table:
    table = Table("Targets", ["target", "measured", "verdict", "detail"])
    verdicts: list[Verdict] = [v for r in results for v in r.verdicts]
    for v in verdicts:
        state = "n/a" if v.met is None else ("MET" if v.met else "MISSED")
        table.add(v.target, v.measured, state, v.detail)
    if quick:
        table.notes.append("--quick: tiny samples, these verdicts are not meaningful")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    quiet_logs()
    cfg = Config(quick=args.quick, repeats=max(1, args.repeats))
    names = [n.strip() for n in args.only.split(",")] if args.only else list(FIGURES)
    names = [n for n in FIGURES if n in names]
    info = machine_info()
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"akto_otel benchmarks: {command.strip()}")
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu_model']}; {info['implementation']} "
        f"{info['python']}; {info['platform']}"
    )
    print("packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    print(f"load average at start: {load_average()} (2 cores: above ~1 the figures are noisy)")
    print(flush=True)
    started = time.perf_counter()
    results: list[FigureResult] = []
    failed: list[str] = []
    env = Environment(cfg)
    try:
        for name in names:
            header, runner = FIGURES[name]
            t0 = time.perf_counter()
            try:
                result = runner(cfg, env)
            except Exception:
                failed.append(name)
                print(f"=== {header} ===\nFAILED:\n{traceback.format_exc()}", flush=True)
                continue
            result.seconds = time.perf_counter() - t0
            results.append(result)
            print(result.render() + "\n", flush=True)
    finally:
        env.close()
    targets = _targets_table(results, cfg.quick)
    print("=== Targets ===")
    print(targets.render())
    elapsed = time.perf_counter() - started
    print(f"\ntotal {elapsed:.0f} s; load average at end: {load_average()}")
    if failed:
        print(f"FAILED figures: {', '.join(failed)}")
    if args.json:
        document = {
            "command": command.strip(),
            "machine": info,
            "quick": cfg.quick,
            "seconds": elapsed,
            "figures": {r.name: r.as_dict() for r in results},
            "targets": targets.as_dict(),
            "failed": failed,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2, default=str)
        print(f"results saved to {args.json}")
    return 1 if failed else 0
