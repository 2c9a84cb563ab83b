"""Akto emulator: a local Akto-compatible data-ingestion server with regex policies.

Used by the demo and the tests. Built on aiohttp's web server (PyYAML is needed
only to load ``.yaml``/``.yml`` policies).

Example::

    from akto_otel.emulator import EmulatorServer, default_policy

    with EmulatorServer(default_policy()) as server:
        print(server.url)                  # http://127.0.0.1:<port>
        ...                                # run an agent against server.url
        print(server.records[0].verdict)

Foreground (Ctrl-C to stop)::

    python -m akto_otel.emulator --port 8080 --policy my_policy.yaml --token secret \
        --max-records 10000
"""

from __future__ import annotations

import asyncio
import contextlib

from .policy import Policy, PolicyError, Rule, default_policy, load_policy
from .server import DEFAULT_MAX_RECORDS, EmulatorServer, ReceivedRecord

__all__ = [
    "DEFAULT_MAX_RECORDS",
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
    port: int,
    policy_path: str | None,
    token: str | None,
    host: str = "127.0.0.1",
    max_records: int = DEFAULT_MAX_RECORDS,
) -> None:
    """Run the emulator in the foreground until Ctrl-C; prints its URL once started.

    ``policy_path`` is a JSON/YAML policy file (None: the packaged default policy);
    ``max_records`` bounds the records kept for ``/_emulator/records``.
    Raises PolicyError for an invalid policy and OSError if the port is taken.
    """
    policy = load_policy(policy_path) if policy_path else default_policy()
    server = EmulatorServer(policy, host=host, port=port, token=token, max_records=max_records)

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
