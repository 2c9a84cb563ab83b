"""Secret hygiene and code hygiene."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.emulator import EmulatorServer
from akto_otel.guardrails import GuardrailClient
from akto_otel.processor import AktoSpanProcessor
from tests.conftest import SpanCapture

TOKEN = "akto-token-" + "Q7" * 16
PACKAGE = Path(__file__).resolve().parents[2] / "akto_otel"


async def test_the_token_appears_nowhere_but_the_authorization_header(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="akto_otel")
    with EmulatorServer(token=TOKEN) as akto:
        guard = AktoGuardrails(
            tracer_provider=capture.provider,
            ingestion_url=akto.url,
            token=TOKEN,
            log_payloads=True,
            log_level="DEBUG",
        )
        hooks = {e: m[0].hooks[0] for e, m in guard.hooks().items()}
        await hooks["UserPromptSubmit"]({"session_id": "s", "prompt": "hello"}, None, {})
        await hooks["Stop"]({"session_id": "s", "last_assistant_message": "bye"}, None, {})
        guard.force_flush()
        assert akto.records and all(r.headers["authorization"] == TOKEN for r in akto.records)
        assert all(TOKEN not in str(r.record) for r in akto.records)
    # Wrong token: Akto answers 401; the error kind names it, the token is not echoed.
    with EmulatorServer(token="other") as akto:
        bad = AktoGuardrails(tracer_provider=capture.provider, ingestion_url=akto.url, token=TOKEN)
        hooks = {e: m[0].hooks[0] for e, m in bad.hooks().items()}
        await hooks["UserPromptSubmit"]({"session_id": "t", "prompt": "hello"}, None, {})
    settings = Settings.from_env({}, token=TOKEN, ingestion_url="http://127.0.0.1:1")
    reprs = [
        repr(settings),
        str(settings),
        repr(GuardrailClient(settings)),
        repr(AktoSpanProcessor(settings).settings),
    ]
    everything = "\n".join(
        [*reprs, caplog.text]
        + [
            f"{s.name} {s.attributes} {[(e.name, e.attributes) for e in s.events]}"
            for s in capture.spans
        ]
    )
    assert "http_401" in everything
    assert TOKEN not in everything
    guard.shutdown()
    bad.shutdown()


def test_no_shell_eval_or_pickle_in_the_package() -> None:
    banned_calls = {"eval", "exec", "compile"}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                assert "pickle" not in names and module != "pickle", path
                assert "marshal" not in names and module != "marshal", path
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name):
                    assert func.id not in banned_calls, f"{path}:{node.lineno}"
                for kw in node.keywords:
                    if kw.arg == "shell":
                        assert not (isinstance(kw.value, ast.Constant) and kw.value.value), (
                            f"shell=True at {path}:{node.lineno}"
                        )


def test_runtime_dependencies_are_bounded() -> None:
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["dependencies"]:
        assert ">=" in requirement, requirement
        name = requirement.split(">=")[0]
        if name != "certifi":  # CA bundles are date-versioned and must stay current
            assert "<" in requirement, requirement
