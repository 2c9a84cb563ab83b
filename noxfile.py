"""Compatibility sessions: the package tested at both ends of every range it declares.

``python -m pytest`` (the README's test command) runs the whole suite on the
versions pip resolves today. These sessions run the quick subset on the other
ends of the declared ranges (pyproject.toml):

    nox -s compat            # every combination below
    nox -s "compat(sdk_oldest)"
    nox -l                   # list them

Each session installs the package with its ``dev`` extra into a fresh virtualenv,
then pins the one dependency it is about, so every other package is the newest
pip resolves.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["compat"]
nox.options.error_on_missing_interpreters = True

# pyenv keeps other Pythons beside the default one; put their bin folders on PATH
# so nox finds python3.10 and python3.13 without `pyenv global` (pyenv's shims
# refuse versions that are not selected).
_PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
if _PYENV.is_dir():
    _bins = [str(p / "bin") for p in sorted(_PYENV.iterdir()) if (p / "bin").is_dir()]
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *_bins])

#: The quick subset: the SDK protocol canary, the attacker suite, the wire contract,
#: settings, and the hooks through the real bundled CLI.
QUICK = (
    "tests/test_sdk_canary.py",
    "tests/security",
    "tests/test_contract.py",
    "tests/test_config.py",
    "tests/test_exporter.py",
    "tests/test_hooks_cli.py",
    "tests/test_hooks_events.py",
    "tests/test_instrumentation.py",
)

#: The ends of the declared ranges. Keep in step with pyproject.toml (a test checks).
SDK_OLDEST = "0.2.169"
OTEL_OLDEST = "1.45.0"
PYTHON_OLDEST = "3.10"
PYTHON_NEWEST = "3.13"
DEFAULT_PYTHON = "3.11"


@nox.session
@nox.parametrize(
    ("python", "pins"),
    [
        (DEFAULT_PYTHON, [f"claude-agent-sdk=={SDK_OLDEST}"]),
        (
            DEFAULT_PYTHON,
            [f"opentelemetry-sdk=={OTEL_OLDEST}", f"opentelemetry-api=={OTEL_OLDEST}"],
        ),
        (PYTHON_OLDEST, []),
        (PYTHON_NEWEST, []),
    ],
    ids=["sdk_oldest", "otel_oldest", "python_oldest", "python_newest"],
)
def compat(session: nox.Session, pins: list[str]) -> None:
    """The quick subset on one end of a declared range."""
    session.install("-e", ".[dev]")
    if pins:
        session.install(*pins)
    session.run(
        "python",
        "-c",
        "import sys, claude_agent_sdk, opentelemetry.sdk.version as o;"
        "print('python', sys.version.split()[0], '| claude-agent-sdk',"
        " claude_agent_sdk.__version__, '| opentelemetry-sdk', o.__version__)",
    )
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *QUICK)
