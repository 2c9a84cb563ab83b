"""The servers of one run, started once and shared by the figures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from .common import Config, summarize
from .servers import EmulatorProcess, NginxProcess, nginx_available

__all__ = ["Environment", "ServerHandle"]


@dataclass(frozen=True)
class ServerHandle:
    name: str
    url: str
    h2_url: str | None
    cpu_seconds: Callable[[], float]


class Environment:
    """The emulator (always) and nginx (when installed), each in its own process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.emulator = EmulatorProcess().start()
        self.nginx: NginxProcess | None = None
        self.nginx_missing_reason = ""
        if cfg.server != "emulator":
            if nginx_available() is None:
                self.nginx_missing_reason = "not installed (apt-get install nginx-light)"
            else:
                try:
                    self.nginx = NginxProcess().start()
                except RuntimeError as exc:
                    self.nginx_missing_reason = str(exc)
        if cfg.server == "nginx" and self.nginx is None:
            raise RuntimeError(f"--server nginx: {self.nginx_missing_reason}")
        self.chosen = ""
        self.choice_reason = ""

    def emulator_handle(self) -> ServerHandle:
        return ServerHandle("emulator", self.emulator.url, None, self.emulator.cpu_seconds)

    def servers(self) -> list[ServerHandle]:
        handles = [self.emulator_handle()]
        if self.nginx is not None:
            handles.append(
                ServerHandle("nginx", self.nginx.url, self.nginx.h2_url, self.nginx.cpu_seconds)
            )
        return handles

    def after_load(self, server: ServerHandle) -> None:
        """Let the emulator forget what it stored (its memory stays flat over the run)."""
        if server.name == "emulator":
            self.clear_emulator()

    def clear_emulator(self) -> int:
        with contextlib.suppress(OSError):
            return self.emulator.take_records()
        return 0

    def choose(self, measured: dict[str, dict[str, float]], preference: str) -> str:
        if preference in ("emulator", "nginx"):
            self.chosen = preference
            self.choice_reason = "chosen with --server"
        elif "nginx" not in measured:
            self.chosen = "emulator"
            self.choice_reason = "nginx not available"
        else:
            emu = measured["emulator"]["floor_p50_us"]
            ngx = measured["nginx"]["floor_p50_us"]
            if ngx < emu * 0.95:
                self.chosen = "nginx"
                self.choice_reason = f"lower floor p50: {ngx:.0f} µs vs emulator {emu:.0f} µs"
            else:
                self.chosen = "emulator"
                self.choice_reason = (
                    f"nginx not faster: floor p50 {ngx:.0f} µs vs emulator {emu:.0f} µs"
                )
        return self.chosen

    def guard_server(self) -> ServerHandle:
        """The server of the guardrail-call figures (measured choice unless --server)."""
        if not self.chosen:
            self._quick_choice()
        for handle in self.servers():
            if handle.name == self.chosen:
                return handle
        return self.emulator_handle()

    def _quick_choice(self) -> None:
        from .contenders import FLOOR, guardrail_specs
        from .harness import run_sequential

        async def floor_p50(url: str) -> float:
            spec = next(s for s in guardrail_specs(url, None) if s.name == FLOOR)
            assert spec.build is not None
            floor = await spec.build()
            await floor.setup()
            samples = await run_sequential(floor, 300, 50)
            await floor.close()
            return summarize(samples).p50

        measured = {h.name: {"floor_p50_us": asyncio.run(floor_p50(h.url))} for h in self.servers()}
        self.choose(measured, self.cfg.server)

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        self.emulator.stop()
