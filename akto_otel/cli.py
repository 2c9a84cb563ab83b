"""The ``akto-otel`` command: ``demo``, ``emulator`` and ``doctor``.

Usage::

    akto-otel demo [--live]
    akto-otel emulator --port 9090 [--policy policy.yaml] [--token T]
    akto-otel doctor
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _doctor() -> int:
    from akto_otel.config import Settings
    from akto_otel.errors import AktoConfigError
    from akto_otel.guardrails import GuardrailClient

    try:
        settings = Settings.from_env()
    except AktoConfigError as exc:
        print(f"configuration error: {exc}")
        return 2
    shown = {k: v for k, v in vars(settings).items() if k != "token"}
    shown["token"] = "(set)" if settings.token else "(not set)"
    for key, value in shown.items():
        print(f"{key:28} {value}")
    if not settings.ingestion_url:
        print(
            "\nAKTO_DATA_INGESTION_URL is not set: hooks will fail "
            f"{settings.fail_mode} without asking Akto."
        )
        return 1
    healthy = asyncio.run(GuardrailClient(settings).health())
    print(f"\n{settings.ingestion_url}/healthCheck: {'ok' if healthy else 'UNREACHABLE'}")
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="akto-otel", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a guarded, traced agent session offline")
    demo.add_argument("--live", action="store_true", help="use the real model (needs a key)")
    emulator = sub.add_parser("emulator", help="run the local Akto-compatible server")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=9090)
    emulator.add_argument("--policy", help="policy file (JSON or YAML); default policy if absent")
    emulator.add_argument("--token", help="require this Authorization token")
    sub.add_parser("doctor", help="show the settings and check that Akto answers")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from akto_otel.demo import run_demo

        result = run_demo(live=args.live)
        return 0 if result.spans else 1
    if args.command == "emulator":
        from akto_otel.emulator import run_emulator

        run_emulator(args.port, args.policy, args.token, host=args.host)
        return 0
    return _doctor()


if __name__ == "__main__":
    sys.exit(main())
