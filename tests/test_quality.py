"""The code stays lint-clean and type-checks under mypy --strict (config in pyproject.toml)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.timeout(300)
def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]'")
    result = _run("ruff", "check", "akto_otel", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_is_clean() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _collection(call: ast.Call) -> ast.expr | None:
    """The collection ``all(...)`` iterates over: ``xs`` of ``all(p(x) for x in xs)``."""
    if not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, (ast.GeneratorExp, ast.ListComp, ast.SetComp)):
        arg = arg.generators[0].iter
    # xs.values() / xs.items() / xs.keys(): the collection is xs
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and not arg.args:
        arg = arg.func.value
    return arg


def _surely_non_empty(node: ast.expr) -> bool:
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and node.elts:
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, int)
        and node.args[0].value > 0
    )


def test_no_assert_all_can_pass_over_an_empty_collection() -> None:
    """``assert all(...)`` is true of an empty collection: each one in the suite is
    preceded (in its function, or in the same assert) by a check naming the collection."""
    vacuous: list[str] = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            asserts = sorted(
                (n for n in ast.walk(function) if isinstance(n, ast.Assert)),
                key=lambda n: (n.lineno, n.col_offset),
            )
            earlier: list[str] = []
            for statement in asserts:
                for call in ast.walk(statement.test):
                    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                        continue
                    if call.func.id != "all":
                        continue
                    collection = _collection(call)
                    if collection is None or _surely_non_empty(collection):
                        continue
                    name = ast.unparse(collection)
                    rest = ast.unparse(statement.test).replace(ast.unparse(call), "")
                    if name not in rest and not any(name in text for text in earlier):
                        vacuous.append(f"{path.relative_to(ROOT)}:{statement.lineno}: {name}")
                earlier.append(ast.unparse(statement.test))
    assert not vacuous, "assert all(...) over a collection never checked non-empty:\n" + "\n".join(
        vacuous
    )
