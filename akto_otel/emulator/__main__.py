"""``python -m akto_otel.emulator [--port N] [--host H] [--policy FILE] [--token T]
[--max-records N]``."""

from __future__ import annotations

import argparse
import sys

from akto_otel.cli import port_argument

from . import DEFAULT_MAX_RECORDS, PolicyError, run_emulator


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m akto_otel.emulator", description="Run a local Akto emulator."
    )
    parser.add_argument(
        "--port", type=port_argument, default=8080, help="port (0: pick a free one)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--policy", default=None, help="JSON or YAML policy file")
    parser.add_argument("--token", default=None, help="require this Authorization header")
    parser.add_argument(
        "--max-records",
        type=int,
        default=DEFAULT_MAX_RECORDS,
        help="records kept for /_emulator/records (older ones are dropped)",
    )
    args = parser.parse_args(argv)
    if args.max_records < 1:
        parser.error("--max-records must be at least 1")
    try:
        run_emulator(
            args.port, args.policy, args.token, host=args.host, max_records=args.max_records
        )
    except (PolicyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
