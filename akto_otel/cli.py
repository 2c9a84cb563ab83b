"""The ``akto-otel`` command: ``demo``, ``emulator``, ``serve``, ``claude-settings`` and ``doctor``.

Usage::

    akto-otel --version
    akto-otel demo [--live]
    akto-otel demo --prometheus 9464 [--runs N] [--pause S] [--linger S] [--deny-heavy]
                   [--fault akto-down] [--fault akto-slow]
    akto-otel emulator [--port 18090] [--policy policy.yaml] [--token T]
    akto-otel serve [--host 127.0.0.1] [--port 18091] [--secret-file PATH]
                    [--socket PATH | --no-socket] [--max-connections N]
    akto-otel claude-settings [--transport http|command] [--url URL] [--secret-file PATH]
                              [--socket PATH] [--timeout S]
    akto-otel doctor

Errors are one line on stderr: exit 2 for a bad argument or input file (usage, policy),
1 for a failure of the environment (a port in use, a missing optional extra).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from akto_otel.version import __version__

__all__ = ["DEFAULT_EMULATOR_PORT", "main"]

#: The emulator's default port: unusual on purpose (not Prometheus's 9090, not an
#: OTLP or exporter port); ``--port 0`` takes any free port and prints it.
DEFAULT_EMULATOR_PORT = 18090

_DESCRIPTION = (
    "Akto guardrails and OpenTelemetry tracing for the Claude Agent SDK: an offline "
    "demo, a local Akto-compatible emulator, and a check of your settings."
)
_EPILOG = (
    "Run 'akto-otel COMMAND --help' for a command's options. Exit codes: 0 success; "
    "1 a failure of the environment (port in use, optional extra missing, Akto not "
    "usable); 2 a bad argument, input file or setting."
)
_YAML_HINT = "pip install -e '.[yaml]' from the checkout, or use a JSON policy file"
_PROMETHEUS_HINT = "pip install -e '.[prometheus]' from the checkout"


class _CommandError(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def port_argument(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0 picks a free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535; 0 picks a free one)")
    return port


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _load_policy(path: str) -> Any:
    from akto_otel.emulator import PolicyError, load_policy

    if path.lower().endswith((".yaml", ".yml")) and not _importable("yaml"):
        raise _CommandError(f"{path}: a YAML policy needs PyYAML: {_YAML_HINT}", 1)
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise _CommandError(str(exc), 2) from None


def _listen_error(exc: OSError, what: str, host: str, port: int) -> _CommandError:
    if exc.errno == errno.EADDRINUSE:
        return _CommandError(
            f"cannot {what} on {host}:{port}: the port is in use (pick another one)", 1
        )
    return _CommandError(f"cannot {what} on {host}:{port}: {exc.strerror or exc}", 1)


def _doctor() -> int:
    from akto_otel.doctor import run_doctor

    return run_doctor(os.environ)


def _demo(args: argparse.Namespace) -> int:
    from akto_otel.demo import deny_heavy_policy, run_demo, run_local_stack

    policy = None
    # The scripted model's answer follows what the policy denies (--deny-heavy: both).
    outcome = "all-denied" if args.deny_heavy and not args.akto_url else "default"
    if args.deny_heavy:
        policy = deny_heavy_policy()
    elif args.policy:
        policy = _load_policy(args.policy)
    if args.prometheus is not None:
        if not _importable("opentelemetry.exporter.prometheus"):
            raise _CommandError(
                f"--prometheus needs the OpenTelemetry Prometheus exporter: {_PROMETHEUS_HINT}", 1
            )
        try:
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
                outcome=outcome,
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise _listen_error(
                exc, "serve the metrics", args.prometheus_host, args.prometheus
            ) from None
    else:
        result = run_demo(
            live=args.live,
            runs=args.runs,
            policy=policy,
            faults=args.fault,
            akto_url=args.akto_url,
            pause=args.pause,
            outcome=outcome,
        )
    return 0 if result.spans else 1


def _emulator(args: argparse.Namespace) -> int:
    from akto_otel.emulator import run_emulator

    if args.policy:
        _load_policy(args.policy)  # a bad file is one line here, not a traceback below
    try:
        run_emulator(args.port, args.policy, args.token, host=args.host)
    except OSError as exc:
        raise _listen_error(exc, "listen", args.host, args.port) from None
    return 0


def _secret_path(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from akto_otel.serve import default_secret_path

    return Path(args.secret_file) if args.secret_file else default_secret_path()


def _socket_path(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from akto_otel.serve import default_socket_path

    return Path(args.socket).absolute() if args.socket else default_socket_path()


def _serve(args: argparse.Namespace) -> int:
    from akto_otel.errors import AktoConfigError
    from akto_otel.serve import ServeError, run_serve

    try:
        run_serve(
            args.host,
            args.port,
            _secret_path(args),
            max_body=args.max_body,
            max_concurrency=args.max_concurrency,
            max_connections=args.max_connections,
            socket_path=None if args.no_socket else _socket_path(args),
            other_users=args.allow_other_users,
        )
    except ServeError as exc:
        raise _CommandError(str(exc), 1) from None
    except AktoConfigError as exc:
        raise _CommandError(str(exc), 2) from None
    except OSError as exc:
        raise _listen_error(exc, "listen", args.host, args.port) from None
    return 0


def _claude_settings(args: argparse.Namespace) -> int:
    import json

    from akto_otel.config import Settings
    from akto_otel.decision import Rules
    from akto_otel.errors import AktoConfigError
    from akto_otel.serve import (
        DEFAULT_PORT,
        ServeError,
        blocking_events,
        claude_command_settings,
        claude_settings,
        load_secret,
    )

    try:
        rules = Rules.from_settings(Settings.from_env())
        if args.transport == "command":
            settings = claude_command_settings(
                _socket_path(args), blocking_events(rules), timeout=args.timeout
            )
        else:
            secret = load_secret(_secret_path(args))
            url = args.url or f"http://127.0.0.1:{DEFAULT_PORT}"
            settings = claude_settings(url, secret, blocking_events(rules), timeout=args.timeout)
    except AktoConfigError as exc:
        raise _CommandError(str(exc), 2) from None
    except ServeError as exc:
        raise _CommandError(str(exc), 1) from None
    print(json.dumps(settings, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="akto-otel", description=_DESCRIPTION, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"akto-otel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a guarded, traced agent session offline and print its trace",
        description=(
            "Run a real Claude Agent SDK session (the bundled CLI) against a scripted "
            "model and the built-in Akto emulator: an allowed tool call, a denied one, "
            "and an answer regenerated after a denial. Prints the trace as a tree; "
            "nothing leaves the machine unless OTEL_EXPORTER_OTLP_ENDPOINT is set."
        ),
    )
    demo.add_argument(
        "--live",
        action="store_true",
        help="use the real Anthropic model instead of the scripted one (needs ANTHROPIC_API_KEY)",
    )
    demo.add_argument(
        "--prometheus",
        type=int,
        metavar="PORT",
        help="local stack mode: serve the metrics on http://127.0.0.1:PORT/metrics "
        f"(needs the [prometheus] extra: {_PROMETHEUS_HINT})",
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
    policy.add_argument(
        "--policy", metavar="FILE", help="emulator policy file (JSON, or YAML with PyYAML)"
    )
    demo.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=["akto-down", "akto-slow"],
        help="add one run against an unreachable (akto-down) or slow (akto-slow) Akto; repeatable",
    )
    demo.add_argument(
        "--akto-url", metavar="URL", help="use this Akto instead of the built-in emulator"
    )

    emulator = sub.add_parser(
        "emulator",
        help="run the local Akto-compatible server in the foreground",
        description=(
            "Serve Akto's data-ingestion endpoints (/api/http-proxy, /api/ingestData, "
            "/healthCheck) with a regex policy, and list what it received on "
            "/_emulator/records. Ctrl-C stops it."
        ),
    )
    emulator.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    emulator.add_argument(
        "--port",
        type=port_argument,
        default=DEFAULT_EMULATOR_PORT,
        metavar="PORT",
        help=f"port to listen on (default {DEFAULT_EMULATOR_PORT}; 0 picks a free port "
        "and prints it)",
    )
    emulator.add_argument(
        "--policy",
        metavar="FILE",
        help="policy file (JSON, or YAML with PyYAML); the packaged default policy if absent",
    )
    emulator.add_argument(
        "--token",
        metavar="TOKEN",
        help="require this exact Authorization header on /api/* (as Akto does with auth on)",
    )

    serve = sub.add_parser(
        "serve",
        help="answer Claude Code's HTTP hooks with the guard (run it, then claude-settings)",
        description=(
            "Serve Claude Code's HTTP hooks: each event is judged and traced exactly as "
            "the SDK hooks do (AKTO_* and OTEL_* settings). Every request on the TCP port "
            "must carry the shared secret (made at first start, mode 0600); the Unix socket "
            "(for 'claude-settings --transport command') takes only your own user's "
            "connections. SIGINT or SIGTERM finishes the requests in flight, ends the "
            "sessions' spans and flushes the records."
        ),
    )
    serve.add_argument(
        "--host", default="127.0.0.1", metavar="HOST", help="address (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=port_argument,
        default=18091,
        metavar="PORT",
        help="port (default 18091; 0 picks a free port and prints it)",
    )
    serve.add_argument(
        "--secret-file",
        metavar="PATH",
        help="the shared secret (default $XDG_CONFIG_HOME/akto-otel/hook-secret)",
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=32 * 1024 * 1024,
        metavar="BYTES",
        help="refuse (413) a larger hook request (default 32 MiB)",
    )
    serve.add_argument(
        "--max-concurrency",
        type=int,
        default=64,
        metavar="N",
        help="hook requests judged at once; 4N more wait, beyond that 503 (default 64)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=512,
        metavar="N",
        help="open connections at most, and at most half the open-file limit (default 512); "
        "at the bound a new one evicts the oldest that has not sent a request with the secret",
    )
    serve.add_argument(
        "--allow-other-users",
        action="store_true",
        help="take loopback TCP connections from other local users too (they still need "
        "the secret); by default, on Linux, a connection from another uid is closed at once",
    )
    unix = serve.add_mutually_exclusive_group()
    unix.add_argument(
        "--socket",
        metavar="PATH",
        help="also listen on this Unix socket, for 'claude-settings --transport command' "
        "(default $XDG_RUNTIME_DIR/akto-otel/hook.sock, else beside the secret); its "
        "directory must be yours and writable by no one else",
    )
    unix.add_argument("--no-socket", action="store_true", help="listen on the TCP port only")
    claude = sub.add_parser(
        "claude-settings",
        help="print the Claude Code settings JSON that sends every hook to 'akto-otel serve'",
        description=(
            "Print the settings (for .claude/settings.json or 'claude --settings FILE') "
            "that wire every hook event to the server, with the shared secret; in "
            "fail-closed mode the judging events carry onFailure: block, so a server "
            "that is down or refuses a request blocks them."
        ),
    )
    claude.add_argument(
        "--transport",
        choices=["http", "command"],
        default="http",
        help="http (default): HTTP hooks to the TCP port with the secret; command: "
        "command hooks that forward each event to the Unix socket, which only your "
        "user can listen on or connect to (use this on a shared machine)",
    )
    claude.add_argument(
        "--url", metavar="URL", help="the server's base URL (default http://127.0.0.1:18091)"
    )
    claude.add_argument("--socket", metavar="PATH", help="with --transport command: as for serve")
    claude.add_argument(
        "--secret-file", metavar="PATH", help="as for serve (made when absent, mode 0600)"
    )
    claude.add_argument(
        "--timeout",
        type=int,
        default=60,
        metavar="SECONDS",
        help="how long the CLI waits for each hook answer (default 60)",
    )

    sub.add_parser(
        "doctor",
        help="check the settings, the OpenTelemetry exporters and that Akto takes the token",
        description=(
            "Read the settings as the library does (AKTO_*, OTEL_* and the other variables), "
            "list them by variable, report every invalid one, show where configure() would "
            "export spans and metrics, and ask Akto's /healthCheck and an authenticated "
            "no-op (an empty /api/ingestData batch). Never prints the token or a password. "
            "Exit codes: 0 ready; 1 Akto not usable (not set, unreachable, token missing or "
            "rejected, not Akto); 2 an invalid setting."
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``akto-otel`` command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if args.linger and args.prometheus is None:
                parser.error("--linger needs --prometheus PORT")
            return _demo(args)
        if args.command == "emulator":
            return _emulator(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "claude-settings":
            return _claude_settings(args)
        return _doctor()
    except _CommandError as exc:
        print(f"akto-otel {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
