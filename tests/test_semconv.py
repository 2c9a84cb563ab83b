"""Names the package emits live in akto_otel/semconv.py and nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

from akto_otel import semconv

PACKAGE = Path(__file__).resolve().parent.parent / "akto_otel"
_PREFIXES = ("gen_ai.", "akto.", "mcp.")


def _name_literals(path: Path) -> list[str]:
    """``file:line: 'name'`` for every string constant that starts like an emitted name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.name}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(_PREFIXES)
    ]


def test_no_attribute_literal_outside_semconv() -> None:
    sources = [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "semconv.py"]
    assert sources
    found = [f"{path.parent.name}/{hit}" for path in sources for hit in _name_literals(path)]
    assert found == [], "use akto_otel.semconv constants:\n" + "\n".join(found)


def test_the_scan_sees_a_literal(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('span.set_attribute("akto.hook", 1)\nx = "gen_ai.tool.name"\n')
    assert sorted(_name_literals(sample)) == [
        "sample.py:1: 'akto.hook'",
        "sample.py:2: 'gen_ai.tool.name'",
    ]


def test_names_are_unique() -> None:
    names = {
        key: value
        for key, value in vars(semconv).items()
        if key.isupper() and isinstance(value, str) and value.startswith(_PREFIXES)
    }
    assert names
    assert len(set(names.values())) == len(names)


def test_otel_names_come_from_the_semconv_package() -> None:
    assert semconv.GEN_AI_TOOL_CALL_ID == "gen_ai.tool.call.id"
    assert semconv.ERROR_TYPE == "error.type"
    assert semconv.invoke_agent_span_name("claude-agent") == "invoke_agent claude-agent"
