"""What a long payload costs to encode for the wire, by how dense its escapes are.

``contract.encode_record`` escapes a long printable-ASCII payload with two
``bytes.replace`` calls when at most one character in 12 is a quote or a backslash
(judged on the first 16 KiB, then on the whole), else leaves it to ``json.dumps``.
This prints both, side by side, for 1 MiB payloads: quotes at random places at
several densities, and the two shapes an attacker would pick (a sparse start over a
dense rest, and escapes just under the bound).

    python -m benchmarks.escape_density
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable

from akto_otel.contract import encode_record

from .common import seconds_per_call

_MIB = 1 << 20


def _plain(record: dict[str, str]) -> bytes:
    return json.dumps(record).encode()


def _best_ms(call: Callable[[], object]) -> float:
    return seconds_per_call(call, number=10, repeat=5) * 1e3


def _payloads() -> dict[str, str]:
    rng = random.Random(0)
    out = {}
    for fraction in (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0):
        text = "".join('"' if rng.random() < fraction else "a" for _ in range(_MIB))
        out[f"quotes at random, {fraction:.0%}"] = text
    out["sparse first 16 KiB, then quotes"] = ("a" * 11 + '"') * 1366 + '"' * _MIB
    out["sparse first 16 KiB, then 1 in 10"] = "a" * 16384 + ('"' + "a" * 9) * (_MIB // 10)
    out["1 in 12 (the bound), at random"] = "".join(
        '"' if rng.random() < 1 / 12 else "a" for _ in range(_MIB)
    )
    return out


def main() -> None:
    print(f"{'1 MiB payload':38} {'json.dumps':>11} {'encode_record':>14} {'ratio':>6}")
    for name, text in _payloads().items():
        record = {"path": "/x", "requestPayload": text}
        old = _best_ms(functools.partial(_plain, record))
        new = _best_ms(functools.partial(encode_record, record))
        print(f"{name:38} {old:8.2f} ms {new:11.2f} ms {new / old:6.2f}")


if __name__ == "__main__":
    main()
