"""Shared pieces of the benchmark suite: statistics, tables, results, process probes."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "Cell",
    "Config",
    "FigureResult",
    "Summary",
    "Table",
    "Verdict",
    "fmt_ratio",
    "fmt_us",
    "load_average",
    "median_by",
    "percentile",
    "proc_cpu_seconds",
    "rotated",
    "rss_bytes",
    "seconds_per_call",
    "summarize",
]

Cell = str | float | int | None
_T = TypeVar("_T")


@dataclass(frozen=True)
class Config:
    """What one run of the suite does."""

    quick: bool = False
    repeats: int = 3

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def pickf(self, full: float, quick: float) -> float:
        return quick if self.quick else full


def rotated(items: Sequence[_T], shift: int) -> list[_T]:
    """``items`` starting at ``shift`` (mod length): rounds rotate the contenders' order,
    so slow drifts of a shared machine hit all of them."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def median_by(items: Sequence[_T], key: Callable[[_T], float]) -> _T:
    """The median item by ``key`` (the lower one of an even count)."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def seconds_per_call(
    fn: Callable[[], object],
    *,
    number: int,
    repeat: int,
    pick: Callable[[list[float]], float] = min,
) -> float:
    """``fn`` timed alone: ``repeat`` rounds of ``number`` calls (``timeit``), the
    round ``pick`` chooses (default the best), in seconds per call."""
    return pick(timeit.repeat(fn, number=number, repeat=repeat)) / number


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[index])


@dataclass(frozen=True)
class Summary:
    """Latency summary in microseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    minimum: float

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "p50_us": self.p50,
            "p90_us": self.p90,
            "p99_us": self.p99,
            "mean_us": self.mean,
            "min_us": self.minimum,
        }


def summarize(samples_ns: Sequence[int]) -> Summary:
    """Summarize nanosecond samples into microsecond percentiles."""
    values = sorted(samples_ns)
    if not values:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan)
    return Summary(
        n=len(values),
        p50=percentile(values, 0.50) / 1000,
        p90=percentile(values, 0.90) / 1000,
        p99=percentile(values, 0.99) / 1000,
        mean=statistics.fmean(values) / 1000,
        minimum=values[0] / 1000,
    )


def fmt_us(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if value >= 10_000:
        return f"{value / 1000:,.1f} ms"
    if value >= 100:
        return f"{value:,.0f} µs"
    return f"{value:,.1f} µs"


def fmt_ratio(value: float | None) -> str:
    if value is None or math.isnan(value) or math.isinf(value):
        return "n/a"
    return f"{value:.2f}x"


@dataclass
class Table:
    """A printable table: string cells, a title and notes."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        self.rows.append([_cell(c) for c in cells])

    def render(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
        lines = [self.title]

        def line(cells: Sequence[str]) -> str:
            parts = []
            for i, cell in enumerate(cells):
                parts.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
            return "  ".join(parts).rstrip()

        lines.append(line(self.columns))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(line(row) for row in self.rows)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _cell(value: Cell) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


@dataclass(frozen=True)
class Verdict:
    """One target of the issue, judged on a measured value."""

    target: str
    measured: str
    met: bool | None  # None: not measured (a dependency missing)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FigureResult:
    """What a figure produced: tables to print, raw data, verdicts."""

    name: str
    header: str
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def render(self) -> str:
        out = [f"=== {self.header} ==="]
        out.extend(t.render() + "\n" for t in self.tables)
        out.extend(f"* {n}" for n in self.notes)
        out.append(f"({self.name}: {self.seconds:.1f} s)")
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "header": self.header,
            "tables": [t.as_dict() for t in self.tables],
            "data": self.data,
            "verdicts": [v.as_dict() for v in self.verdicts],
            "notes": self.notes,
            "seconds": self.seconds,
        }


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    # After the command name: state is fields[0]; utime and stime are stat fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes() -> int:
    """This process's resident set size (VmRSS), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
