"""The server of one run, started once in its own process and shared by the figures."""

from __future__ import annotations

import contextlib

from .common import Config
from .servers import StandIn

__all__ = ["Environment"]


class Environment:
    """The stand-in server (:mod:`benchmarks.standin`) in its own process."""

    name = "stub server"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stub = StandIn()
        self.url = self.stub.url

    def cpu_seconds(self) -> float:
        return self.stub.cpu_seconds()

    def clear_stub(self) -> int:
        """Records the server received since the last clear (0 if it cannot be asked)."""
        with contextlib.suppress(OSError):
            return self.stub.take_records()
        return 0

    def close(self) -> None:
        self.stub.stop()
