"""The compatibility sessions (noxfile.py) test the ends of the ranges pyproject.toml declares."""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

from tests.noxfile_module import load_noxfile

ROOT = Path(__file__).resolve().parent.parent


def _project() -> dict[str, object]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project, dict)
    return project


def _floor(name: str) -> Version:
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    for line in dependencies:
        requirement = Requirement(line)
        if requirement.name == name:
            floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
            assert len(floors) == 1, f"{name} needs one >= floor: {line}"
            return floors[0]
    raise AssertionError(f"{name} is not a dependency")


def test_sessions_start_at_the_declared_floors() -> None:
    nox = load_noxfile()
    assert Version(nox.SDK_OLDEST) == _floor("claude-agent-sdk")
    assert Version(nox.OTEL_OLDEST) == _floor("opentelemetry-sdk")
    assert Version(nox.OTEL_OLDEST) == _floor("opentelemetry-api")


def test_sessions_cover_the_declared_pythons() -> None:
    nox = load_noxfile()
    project = _project()
    requires = str(project["requires-python"])
    assert requires == f">={nox.PYTHON_OLDEST}"
    classifiers = project["classifiers"]
    assert isinstance(classifiers, list)
    declared = sorted(
        (
            c.rsplit(" :: ", 1)[1]
            for c in classifiers
            if c.startswith("Programming Language :: Python :: 3.")
        ),
        key=Version,
    )
    assert declared, "no Python version classifiers"
    assert declared[0] == nox.PYTHON_OLDEST
    assert declared[-1] == nox.PYTHON_NEWEST
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in declared


def _readme_versions() -> dict[str, tuple[str, str]]:
    """component -> (supported, tested at) from README's "Supported versions" table."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<!-- supported-versions:"))
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[start + 3 :]:
        if not line.startswith("|"):
            break
        component, supported, tested = (cell.strip() for cell in line.strip("|").split("|"))
        rows[component] = (supported, tested)
    return rows


def _declared(name: str) -> str:
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    for line in dependencies:
        requirement = Requirement(line)
        if requirement.name == name:
            floor_first = sorted(requirement.specifier, key=lambda s: s.operator != ">=")
            return ", ".join(str(s) for s in floor_first)
    raise AssertionError(f"{name} is not a dependency")


def test_readme_supported_versions_are_the_nox_sessions_and_the_declared_ranges() -> None:
    nox = load_noxfile()
    rows = _readme_versions()
    pythons = sorted({nox.PYTHON_OLDEST, nox.DEFAULT_PYTHON, nox.PYTHON_NEWEST}, key=Version)
    assert rows == {
        "Python": (f"{nox.PYTHON_OLDEST} to {nox.PYTHON_NEWEST}", ", ".join(pythons)),
        "claude-agent-sdk": (_declared("claude-agent-sdk"), f"{nox.SDK_OLDEST} and the newest"),
        "opentelemetry-api, opentelemetry-sdk": (
            _declared("opentelemetry-sdk"),
            f"{nox.OTEL_OLDEST} and the newest",
        ),
    }
    assert _declared("opentelemetry-api") == _declared("opentelemetry-sdk")
