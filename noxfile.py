"""Compatibility sessions: the package tested at both ends of every range it declares.

``python -m pytest`` (the README's test command) runs the whole suite on the
versions pip resolves today. These sessions run the quick subset on the other
ends of the declared ranges (pyproject.toml):

    nox -s compat            # every combination below
    nox -s "compat(sdk_oldest)"
    nox -l                   # list them

``nox -s mutation`` (not run by default) is mutation testing of the guarantee
modules (docs/reliability.md, "Mutation testing"):

    nox -s mutation                    # every module in MUTATION_TARGETS
    nox -s mutation -- decision        # only the decision core
    nox -s mutation -- --changed       # the decision core and the modules changed since
                                       # the fork from origin/main or main, else since
                                       # HEAD's first parent (the CI subset)

It fails when a module's kill rate is below THRESHOLD (90%).

Each session installs the package with its ``dev`` extra into a fresh virtualenv,
then pins the one dependency it is about, so every other package is the newest
pip resolves.
"""

from __future__ import annotations

import fnmatch
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

#: The other ends (oldest OpenTelemetry, oldest and newest Python) change no part of
#: the SDK protocol the attacker suite exercises: they run the quick subset with the
#: core attacks only, which keeps CI's four sessions well inside its time budget
#: (the whole quick subset took 5 min a session on a loaded 2-CPU machine).
QUICK_CORE = (
    *(p for p in QUICK if p != "tests/security"),
    "tests/security/test_attacks_core.py",
    "tests/security/test_unguarded.py",
)

#: The ends of the declared ranges. Keep in step with pyproject.toml (a test checks).
SDK_OLDEST = "0.2.177"
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
    """The quick subset on one end of a declared range (the attacker suite whole at the
    oldest SDK, its core elsewhere)."""
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
    subset = QUICK if any(p.startswith("claude-agent-sdk") for p in pins) else QUICK_CORE
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *subset)


#: mutmut's version range: its config keys and result file layout are 3.x ones.
MUTMUT = "mutmut>=3.8.1,<4"

#: Per guarantee module, the mutant names (fnmatch patterns) that count for it. mutmut
#: names a function ``x_<name>`` and a method ``xǁ<Class>ǁ<name>``.
#: guardrails.py and exporter.py count only their verdict/error-kind mapping and their
#: retry/split/drop logic; their I/O plumbing is covered by the real-server tests.
MUTATION_TARGETS: dict[str, tuple[str, ...]] = {
    "decision": ("akto_otel.decision.*",),
    "windows": ("akto_otel.windows.*",),
    "contract": ("akto_otel.contract.*",),
    "config": ("akto_otel.config.*",),
    "redaction": ("akto_otel.redaction.*",),
    "guardrails": (
        "akto_otel.guardrails.x__os_kind__mutmut_*",
        "akto_otel.guardrails.x_error_kind__mutmut_*",
        "akto_otel.guardrails.x__status_kind__mutmut_*",
        "akto_otel.guardrails.x__retry_after__mutmut_*",
        "akto_otel.guardrails.xǁGuardrailClientǁ_verdict__mutmut_*",
    ),
    "exporter": (
        "akto_otel.exporter.xǁRecordExporterǁexport__mutmut_*",
        "akto_otel.exporter.xǁRecordExporterǁevict_oldest__mutmut_*",
        "akto_otel.exporter.xǁRecordExporterǁ_take_chunk__mutmut_*",
        "akto_otel.exporter.xǁRecordExporterǁ_attempt__mutmut_*",
        "akto_otel.exporter.xǁRecordExporterǁ_post__mutmut_*",
        "akto_otel.exporter.x__retry_after__mutmut_*",
        "akto_otel.exporter.x__backoff__mutmut_*",
        "akto_otel.exporter.x__chunks__mutmut_*",
        "akto_otel.exporter.x__leading_fit__mutmut_*",
    ),
    # The held-answer path: what the app gets of what the model said, and when.
    "answers": ("akto_otel.answers.*",),
}


#: The kill rate every module must reach; below it the session fails.
THRESHOLD = 90.0

#: Statuses that count as the tests noticing the mutant. A timeout is a mutant that
#: made the tests hang (an endless loop): noticed, as a CI time limit would.
_DETECTED = ("killed", "caught by type check", "timeout")


def _kill_rate(module: str, patterns: tuple[str, ...], results: str) -> tuple[str, bool]:
    """The line for one module from ``mutmut results --all true`` ("    name: status"),
    and whether it reaches :data:`THRESHOLD` (a module with no checked mutant does not)."""
    statuses = [
        status.strip()
        for name, _, status in (line.strip().partition(": ") for line in results.splitlines())
        if any(fnmatch.fnmatch(name, p) for p in patterns)
    ]
    killed = sum(s in _DETECTED for s in statuses)
    checked = len(statuses) - statuses.count("not checked")
    rate = 100 * killed / checked if checked else 0.0
    shown = f"{rate:.1f}%" if checked else "n/a"
    others = "".join(f"; {statuses.count(s)} {s}" for s in sorted(set(statuses)) if s != "killed")
    passed = checked > 0 and rate >= THRESHOLD
    verdict = "ok" if passed else f"BELOW {THRESHOLD:.0f}%"
    return f"mutation {module}: {killed}/{checked} killed ({shown}){others} [{verdict}]", passed


#: The source file of each guarantee module, for ``--changed``.
MODULE_FILES = {module: f"akto_otel/{module}.py" for module in MUTATION_TARGETS}


def _changed_modules(paths: list[str]) -> list[str]:
    """The modules whose file is in ``paths`` (changed files), always with the decision
    core first: the subset a CI run of ``nox -s mutation -- --changed`` checks."""
    changed = {module for module, path in MODULE_FILES.items() if path in paths}
    return ["decision", *sorted(changed - {"decision"})]


def _changed_paths(session: nox.Session) -> list[str]:
    """Files changed since HEAD forked from origin/main (else main); on main itself,
    or with neither, since HEAD's first parent. No git history means every module."""

    def git(*args: str) -> str:
        out = session.run("git", *args, external=True, silent=True, success_codes=range(256))
        return out.strip() if isinstance(out, str) else ""

    head = git("rev-parse", "HEAD")
    base = "HEAD^1"
    for branch in ("origin/main", "main"):
        fork = git("merge-base", "HEAD", branch)
        if len(fork) == 40 and fork != head:
            base = fork
            break
    diff = git("diff", "--name-only", base, "HEAD")
    if not head or diff.startswith(("fatal", "error")):
        return list(MODULE_FILES.values())
    return diff.split()


@nox.session(python=DEFAULT_PYTHON)
def mutation(session: nox.Session) -> None:
    """mutmut over the guarantee modules; posargs pick modules (default: all of them),
    ``--changed`` the ones changed since the fork from origin/main, plus the decision core.
    Fails when a module's kill rate is below THRESHOLD."""
    modules = session.posargs or list(MUTATION_TARGETS)
    if "--changed" in modules:
        modules = _changed_modules(_changed_paths(session))
    unknown = sorted(set(modules) - set(MUTATION_TARGETS))
    if unknown:
        session.error(f"unknown module(s) {unknown}; choose from {sorted(MUTATION_TARGETS)}")
    session.install("-e", ".[dev]", MUTMUT)
    patterns = [p for m in modules for p in MUTATION_TARGETS[m]]
    # A non-zero exit means survivors, which the lines below report; not a session error.
    session.run("mutmut", "run", *patterns, success_codes=[0, 1])
    results = session.run("mutmut", "results", "--all", "true", silent=True)
    below = []
    for module in modules:
        line, passed = _kill_rate(module, MUTATION_TARGETS[module], str(results))
        session.log(line)
        if not passed:
            below.append(module)
    if below:
        session.error(f"mutation kill rate below {THRESHOLD:.0f}% in {below}")
