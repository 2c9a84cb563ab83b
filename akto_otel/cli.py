"""The ``akto-otel`` command: ``demo``, ``emulator`` and ``doctor``.

Usage::

    akto-otel demo [--live]
    akto-otel demo --prometheus 9464 [--runs N] [--pause S] [--linger S] [--deny-heavy]
                   [--fault akto-down] [--fault akto-slow]
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
    from akto_otel.redaction import redact_url

    shown = {k: v for k, v in vars(settings).items() if k != "token"}
    shown["ingestion_url"] = redact_url(settings.ingestion_url)
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
    print(f"\n{shown['ingestion_url']}/healthCheck: {'ok' if healthy else 'UNREACHABLE'}")
    return 0 if healthy else 1


def _demo(args: argparse.Namespace) -> int:
    from akto_otel.demo import deny_heavy_policy, run_demo, run_local_stack

    policy = None
    if args.deny_heavy:
        policy = deny_heavy_policy()
    elif args.policy:
        from akto_otel.emulator import load_policy

        policy = load_policy(args.policy)
    if args.prometheus is not None:
        result = run_local_stack(
            args.prometheus,
            runs=args.runs,
            linger=args.linger,
            host=args.prometheus_host,
            policy=policy,
            faults=args.fault,
            akto_url=args.akto_url,
            live=args.live,
            pause=args.pause,
        )
    else:
        result = run_demo(
            live=args.live,
            runs=args.runs,
            policy=policy,
            faults=args.fault,
            akto_url=args.akto_url,
            pause=args.pause,
        )
    return 0 if result.spans else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="akto-otel", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a guarded, traced agent session offline")
    demo.add_argument("--live", action="store_true", help="use the real model (needs a key)")
    demo.add_argument(
        "--prometheus",
        type=int,
        metavar="PORT",
        help="local stack mode: serve the metrics on http://127.0.0.1:PORT/metrics",
    )
    demo.add_argument(
        "--prometheus-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address for --prometheus (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    demo.add_argument(
        "--runs", type=int, default=1, metavar="N", help="run the session N times (default 1)"
    )
    demo.add_argument(
        "--pause",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long between runs (lets a scraper see each run's increments)",
    )
    demo.add_argument(
        "--linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --prometheus: keep serving the metrics this long after the runs",
    )
    policy = demo.add_mutually_exclusive_group()
    policy.add_argument(
        "--deny-heavy", action="store_true", help="the emulator denies every tool call"
    )
    policy.add_argument("--policy", metavar="FILE", help="emulator policy file (JSON or YAML)")
    demo.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=["akto-down", "akto-slow"],
        help="add one run against an unreachable (akto-down) or slow (akto-slow) Akto",
    )
    demo.add_argument(
        "--akto-url", metavar="URL", help="use this Akto instead of the built-in emulator"
    )
    emulator = sub.add_parser("emulator", help="run the local Akto-compatible server")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=9090)
    emulator.add_argument("--policy", help="policy file (JSON or YAML); default policy if absent")
    emulator.add_argument("--token", help="require this Authorization token")
    sub.add_parser("doctor", help="show the settings and check that Akto answers")
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.linger and args.prometheus is None:
            parser.error("--linger needs --prometheus PORT")
        return _demo(args)
    if args.command == "emulator":
        from akto_otel.emulator import run_emulator

        run_emulator(args.port, args.policy, args.token, host=args.host)
        return 0
    return _doctor()


if __name__ == "__main__":
    sys.exit(main())
