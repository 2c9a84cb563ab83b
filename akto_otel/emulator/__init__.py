"""Akto emulator: a local Akto-compatible data-ingestion server with regex policies.

Used by the demo, the tests and the benchmarks. Stdlib only (PyYAML is needed
only to load ``.yaml``/``.yml`` policies).

Example::

    from akto_otel.emulator import EmulatorServer, default_policy

    with EmulatorServer(default_policy()) as server:
        print(server.url)                  # http://127.0.0.1:<port>
        ...                                # run an agent against server.url
        print(server.records[0].verdict)

Foreground (Ctrl-C to stop)::

    python -m akto_otel.emulator --port 8080 --policy my_policy.yaml --token secret
"""

from __future__ import annotations

import asyncio
import contextlib

from .policy import Policy, PolicyError, Rule, default_policy, load_policy
from .server import EmulatorServer, ReceivedRecord

__all__ = [
    "EmulatorServer",
    "Policy",
    "PolicyError",
    "ReceivedRecord",
    "Rule",
    "default_policy",
    "load_policy",
    "run_emulator",
]


def run_emulator(
    port: int, policy_path: str | None, token: str | None, host: str = "127.0.0.1"
) -> None:
    """Run the emulator in the foreground until Ctrl-C; prints its URL once started.

    ``policy_path`` is a JSON/YAML policy file (None: the packaged default policy).
    Raises PolicyError for an invalid policy and OSError if the port is taken.
    """
    policy = load_policy(policy_path) if policy_path else default_policy()
    server = EmulatorServer(policy, host=host, port=port, token=token)

    async def _main() -> None:
        await server.start_async()
        auth = "token required" if token else "no auth"
        print(
            f"Akto emulator ({len(policy.rules)} rules, {auth}) listening on {server.url}",
            flush=True,
        )
        await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
