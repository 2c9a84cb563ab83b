"""Local logging of akto_otel: level from AKTO_LOG_LEVEL, a file in AKTO_LOG_DIR when set.

Nothing happens at import; :func:`setup_logging` runs when a guard is built. The
file name matches the reference connector's (``akto-agent-sdk.log``). The token is
never logged; payloads only with ``AKTO_LOG_PAYLOADS=true``, and then redacted.

Repeated events (records dropped, a guardrail call failing 1,000 times a second)
inform without flooding: :class:`RateLimitedLog` writes the first of a kind at
once and then at most one line per interval saying how many happened since when;
:class:`RateLimitFilter` does the same for a logger's own lines, keyed by message
and arguments (so by URL and fault kind for a failing guardrail call).

Usage::

    setup_logging(Settings.from_env())
    drops = RateLimitedLog(logging.getLogger("akto_otel.processor"), interval=60.0)
    drops.log(logging.WARNING, "queue_full", "dropped %(count)d record(s) since %(since)s", 3)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from akto_otel.config import Settings

__all__ = ["LOG_FILE_NAME", "RateLimitFilter", "RateLimitedLog", "setup_logging"]

#: Seconds between two lines about the same repeated event.
DEFAULT_LOG_INTERVAL = 60.0
#: The logger of the guardrail client's failed calls.
GUARDRAIL_LOGGER = "akto_otel.guardrails"

LOG_FILE_NAME = "akto-agent-sdk.log"
_lock = threading.Lock()
_files: set[str] = set()


def setup_logging(settings: Settings) -> None:
    """Set the ``akto_otel`` logger's level and add the AKTO_LOG_DIR file handler once.

    A failing guardrail call is one line per minute per URL and fault kind, with
    how many failed since when (not one line per call).
    """
    logger = logging.getLogger("akto_otel")
    logger.setLevel(settings.log_level)
    calls = logging.getLogger(GUARDRAIL_LOGGER)
    with _lock:
        if not any(isinstance(f, RateLimitFilter) for f in calls.filters):
            calls.addFilter(RateLimitFilter())
    if not settings.log_dir:
        return
    path = os.path.join(os.path.expanduser(settings.log_dir), LOG_FILE_NAME)
    with _lock:
        if path in _files:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            logger.warning("cannot log to %s: %s", path, exc.strerror or type(exc).__name__)
            return
        handler.setLevel(settings.log_level)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        logger.addHandler(handler)
        _files.add(path)


@dataclass
class _Pending:
    count: int
    since: float  # wall clock of the first occurrence not yet told


class _Tally:
    """Per key: whether an occurrence is told now, and what was held back before it."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._told_at: dict[Any, float] = {}
        self._pending: dict[Any, _Pending] = {}

    def add(self, key: Any, count: int) -> _Pending | None:
        """Count ``count`` occurrences of ``key``; what to tell now (None: hold them back)."""
        now = self._clock()
        with self._lock:
            held = self._pending.get(key)
            if held is None:
                held = self._pending[key] = _Pending(0, time.time())
            held.count += count
            last = self._told_at.get(key)
            if last is not None and now - last < self._interval:
                return None
            self._told_at[key] = now
            return self._pending.pop(key)

    def drain(self) -> list[tuple[Any, _Pending]]:
        """Everything held back, to be told now."""
        with self._lock:
            pending, self._pending = self._pending, {}
            now = self._clock()
            for key in pending:
                self._told_at[key] = now
        return list(pending.items())


def _when(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RateLimitedLog:
    """Tells ``logger`` about a repeated event at most once per ``interval`` seconds per key.

    The first occurrence of a key is logged at once; later ones within the interval
    are counted, and the next line (or :meth:`flush`, at shutdown) says how many and
    since when. ``message`` is %-formatted with ``count``, ``since`` (UTC) and
    ``fields``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._tally = _Tally(interval, clock)
        self._lines: dict[Any, tuple[int, str, dict[str, Any], Mapping[str, Any] | None]] = {}

    def log(
        self,
        level: int,
        key: Any,
        message: str,
        count: int = 1,
        *,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Count ``count`` occurrences of ``key``; write a line if its interval has passed.

        ``extra`` becomes attributes of the log record (as ``logging``'s ``extra``).
        """
        if count <= 0:
            return
        self._lines[key] = (level, message, fields, extra)
        told = self._tally.add(key, count)
        if told is not None:
            self._write(level, message, told, fields, extra)

    def flush(self) -> None:
        """Write a line for every key with occurrences not yet told."""
        for key, told in self._tally.drain():
            level, message, fields, extra = self._lines[key]
            self._write(level, message, told, fields, extra)

    def _write(
        self,
        level: int,
        message: str,
        told: _Pending,
        fields: dict[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        values = {"count": told.count, "since": _when(told.since), **fields}
        self._logger.log(level, message, values, extra=extra)


class RateLimitFilter(logging.Filter):
    """Lets a logger's line through at most once per ``interval`` per (message, arguments).

    The line that goes through after a quiet spell ends with how many like it were
    held back and since when: a guardrail call failing the same way a thousand times
    a minute is one line a minute, with the count.
    """

    def __init__(
        self, *, interval: float = DEFAULT_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._tally = _Tally(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is written (with the count of its held-back twins)."""
        key = (record.msg, repr(record.args))
        told = self._tally.add(key, 1)
        if told is None:
            return False
        if told.count > 1:
            record.msg = f"{record.getMessage()} ({told.count} times since {_when(told.since)})"
            record.args = None
        return True
