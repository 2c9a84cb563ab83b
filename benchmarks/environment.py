"""The server of one run, started once in its own process and shared by the figures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from .common import Config
from .servers import StubProcess

__all__ = ["Environment", "ServerHandle"]


@dataclass(frozen=True)
class ServerHandle:
    name: str
    url: str
    cpu_seconds: Callable[[], float]


class Environment:
    """The stub Akto (:mod:`benchmarks.stub_server`) in its own process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stub = StubProcess().start()

    def guard_server(self) -> ServerHandle:
        """The server of the guardrail-call figures."""
        return ServerHandle("stub server", self.stub.url, self.stub.cpu_seconds)

    def after_load(self, server: ServerHandle) -> None:
        """Reset the server's record count between figures."""
        self.clear_stub()

    def clear_stub(self) -> int:
        """Records the server received since the last clear (0 if it cannot be asked)."""
        with contextlib.suppress(OSError):
            return self.stub.take_records()
        return 0

    def close(self) -> None:
        self.stub.stop()
