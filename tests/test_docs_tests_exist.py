"""Every test a guarantee doc names exists: a renamed or deleted test breaks the doc here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUARANTEE_DOCS = ("docs/reliability.md", "docs/delivery.md", "docs/security.md")
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?(?:\[[^\]`]*\])?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test")
    }


@pytest.mark.parametrize("doc", GUARANTEE_DOCS)
def test_every_named_test_exists(doc: str) -> None:
    text = (ROOT / doc).read_text()
    references = _REFERENCE.findall(text)
    assert references, f"{doc} names no test"
    missing: list[str] = []
    for file, name in references:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name and name not in _tests_in(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc} names tests that do not exist: {sorted(set(missing))}"
