"""The mutation session's arithmetic (noxfile.py): kill rates, the 90% gate, the CI subset."""

from __future__ import annotations

import ast
import fnmatch
import subprocess
from pathlib import Path

import pytest

from tests.noxfile_module import load_noxfile

ROOT = Path(__file__).resolve().parent.parent


def _results(**counts: int) -> str:
    """``mutmut results --all true`` output with ``counts`` mutants per status."""
    lines, n = [], 0
    for status, count in counts.items():
        for _ in range(count):
            n += 1
            lines.append(f"    akto_otel.windows.x_split__mutmut_{n}: {status.replace('_', ' ')}")
    lines.append("    akto_otel.config.x_other__mutmut_1: survived")  # another module's
    return "\n".join(lines)


def test_ninety_percent_passes_and_less_fails() -> None:
    nox = load_noxfile()
    patterns = ("akto_otel.windows.*",)
    line, passed = nox._kill_rate("windows", patterns, _results(killed=9, survived=1))
    assert passed and line.startswith("mutation windows: 9/10 killed (90.0%)")
    line, passed = nox._kill_rate("windows", patterns, _results(killed=89, survived=11))
    assert not passed and "89/100 killed (89.0%)" in line and "BELOW 90%" in line


def test_timeouts_count_as_noticed_and_unchecked_mutants_do_not_count() -> None:
    nox = load_noxfile()
    results = _results(killed=8, timeout=1, survived=1, not_checked=50)
    line, passed = nox._kill_rate("windows", ("akto_otel.windows.*",), results)
    assert passed and "9/10 killed (90.0%)" in line and "1 timeout" in line


def test_a_module_with_nothing_checked_fails_the_gate() -> None:
    nox = load_noxfile()
    line, passed = nox._kill_rate("windows", ("akto_otel.windows.*",), _results(not_checked=3))
    assert not passed and "(n/a)" in line


def test_the_ci_subset_is_the_decision_core_plus_changed_guarantee_modules() -> None:
    nox = load_noxfile()
    assert nox.THRESHOLD == 90.0
    assert nox._changed_modules(["README.md", "akto_otel/hooks.py"]) == ["decision"]
    changed = ["akto_otel/redaction.py", "akto_otel/decision.py", "akto_otel/config.py"]
    assert nox._changed_modules(changed) == ["decision", "config", "redaction"]
    assert set(nox.MODULE_FILES) == set(nox.MUTATION_TARGETS)
    assert all((ROOT / path).is_file() for path in nox.MODULE_FILES.values())


def _mutant_names(module: str) -> list[str]:
    """The name mutmut gives the first mutant of each function and method of ``module``."""
    tree = ast.parse((ROOT / "akto_otel" / f"{module}.py").read_text())
    prefix = f"akto_otel.{module}."
    names = [f"{prefix}x_{n.name}" for n in tree.body if isinstance(n, _FUNCTIONS)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        names += [f"{prefix}xǁ{cls.name}ǁ{m.name}" for m in cls.body if isinstance(m, _FUNCTIONS)]
    return [f"{name}__mutmut_1" for name in names]


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def test_every_mutation_pattern_names_a_function_that_exists() -> None:
    nox = load_noxfile()
    for module, patterns in nox.MUTATION_TARGETS.items():
        names = _mutant_names(module)
        assert names, module
        for pattern in patterns:
            assert any(fnmatch.fnmatch(n, pattern) for n in names), (module, pattern)


class _GitSession:
    """Stands in for nox.Session, whose run() needs a nox virtualenv; runs the real git."""

    def run(self, *args: str, **_: object) -> str:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        return done.stdout + done.stderr


def _git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def test_changed_paths_are_taken_since_the_fork_from_main_else_since_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nox = load_noxfile()
    monkeypatch.chdir(tmp_path)
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)
    _git("init", "-q", "-b", "main")
    _git("config", "user.email", "t@example.com")
    _git("config", "user.name", "t")
    (tmp_path / "akto_otel").mkdir()
    for name in ("config", "redaction"):
        (tmp_path / "akto_otel" / f"{name}.py").write_text("x = 1\n")
    _git("add", "-A")
    _git("commit", "-q", "-m", "one")
    _git("checkout", "-q", "-b", "topic")
    (tmp_path / "akto_otel" / "config.py").write_text("x = 2\n")
    _git("commit", "-q", "-am", "two")
    (tmp_path / "README").write_text("r\n")
    _git("add", "-A")
    _git("commit", "-q", "-m", "three")
    assert sorted(nox._changed_paths(_GitSession())) == ["README", "akto_otel/config.py"]
    _git("checkout", "-q", "main")
    (tmp_path / "akto_otel" / "redaction.py").write_text("x = 3\n")
    _git("commit", "-q", "-am", "four")
    assert nox._changed_paths(_GitSession()) == ["akto_otel/redaction.py"]
