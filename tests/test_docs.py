"""The docs keep up with the code, and their code runs.

Every fenced block in README.md and docs/*.md carries a marker on the line before it:

- ``<!-- doc-test: NAME -->``: a test runs it (or checks it against the file it
  excerpts); the test fetches it with ``doc_block("NAME")``, so the text that runs is
  the text of the doc. Agent programs run offline: the scripted fake model of
  ``akto_otel.testing`` stands in for Anthropic's API and the emulator for Akto.
- ``<!-- needs: WHAT -->``: it needs something the tests cannot have (an Anthropic
  API key, your Akto, your collector, a Docker engine).
- ``<!-- text: WHAT -->``: not code (a diagram, sample output); only on a fence with
  no language or ``text``.

A block without a marker fails :func:`test_every_code_block_is_run_or_marked`,
including blocks in docs added later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from akto_otel.config import Settings
from akto_otel.emulator import EmulatorServer, default_policy, load_policy
from akto_otel.testing import FakeAnthropic, Scenario, Text, ToolUse, offline_agent_env
from benchmarks.servers import free_port
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_MARKER = re.compile(r"^<!--\s*(doc-test|needs|text):\s*(.+?)\s*-->\s*$")
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w.+-]*)")
#: Commands a doc block may contain that the tests do not run (the test environment has
#: what they install); anything else in a run block must run.
_INSTALLS = (
    "apt-get install -y prometheus",
    "pip install -e .",
    "pip install -e '.[yaml]'",
    "pip install -e '.[prometheus]'",
    "pip install -e '.[dev]'",
    "pip install opentelemetry-distro",
)


@dataclass(frozen=True)
class DocBlock:
    """One fenced block of a doc and its marker."""

    path: str
    line: int
    lang: str
    code: str
    kind: str
    value: str


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def doc_blocks(path: Path) -> list[DocBlock]:
    lines = path.read_text().splitlines()
    blocks: list[DocBlock] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith(fence.group(1)):
            end += 1
        previous = lines[index - 1] if index else ""
        marker = _MARKER.match(previous)
        blocks.append(
            DocBlock(
                path=str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                line=index + 1,
                lang=fence.group(2),
                code="\n".join(lines[index + 1 : end]) + "\n",
                kind=marker.group(1) if marker else "",
                value=marker.group(2) if marker else "",
            )
        )
        index = end + 1
    return blocks


def all_blocks() -> list[DocBlock]:
    return [block for path in doc_files() for block in doc_blocks(path)]


def doc_block(name: str) -> DocBlock:
    """The one block marked ``<!-- doc-test: name -->``."""
    found = [b for b in all_blocks() if b.kind == "doc-test" and b.value == name]
    assert len(found) == 1, f"doc-test {name!r}: {len(found)} blocks"
    return found[0]


def commands(block: DocBlock, substitutions: Mapping[str, str] = {}) -> list[str]:
    """The block's shell commands (continuations joined), after ``substitutions``."""
    text = block.code
    for old, new in substitutions.items():
        text = text.replace(old, new)
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _strip_comment(command: str) -> str:
    words = shlex.split(command, comments=True)
    return shlex.join(words) if words else ""


@contextlib.contextmanager
def run_commands(
    lines: list[str], env: dict[str, str], cwd: Path, timeout: float = 120.0
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run documented shell lines in order, as a user would in one shell.

    ``export`` lines set ``env``; a line ending in ``&`` starts in the background (its
    process group is stopped on exit); install lines of :data:`_INSTALLS` are skipped
    (the test environment has what they install); other lines must exit 0.
    """
    background: list[subprocess.Popen[bytes]] = []
    try:
        for raw in lines:
            line = _strip_comment(raw) if not raw.rstrip().endswith("&") else raw
            if not line:
                continue
            if any(line.startswith(install) for install in _INSTALLS):
                assert line in _INSTALLS or line.split(" && ")[0] in _INSTALLS, line
                continue
            if line.startswith("export "):
                name, _, value = line[len("export ") :].partition("=")
                env[name] = shlex.split(value, comments=True)[0] if value.strip() else ""
                continue
            if line.endswith("&"):
                command = line[:-1].strip()
                background.append(
                    subprocess.Popen(
                        ["bash", "-c", f"exec {command}"],
                        env=env,
                        cwd=cwd,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                continue
            result = subprocess.run(
                ["bash", "-c", line],
                env=env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        yield background
    finally:
        for process in background:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without AKTO_/OTEL_/ANTHROPIC_ settings, plus ``extra``;
    the venv's scripts first on PATH."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "OTEL_", "ANTHROPIC_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# --------------------------------------------------------------------- enforcement


def test_every_code_block_is_run_or_marked() -> None:
    blocks = all_blocks()
    assert blocks
    unmarked = [b for b in blocks if not b.kind]
    assert not unmarked, "blocks with no <!-- doc-test|needs|text: ... --> marker: " + ", ".join(
        f"{b.path}:{b.line}" for b in unmarked
    )
    for block in blocks:
        if block.kind == "text":
            assert block.lang in ("", "text"), f"{block.path}:{block.line}: text marker on code"


def test_every_doc_test_name_is_unique_and_run_by_a_test() -> None:
    names = [b.value for b in all_blocks() if b.kind == "doc-test"]
    assert names and len(names) == len(set(names)), names
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py")]
    users = [text for text in sources if "doc_block(" in text]
    assert users
    for name in names:
        assert any(f'"{name}"' in text for text in users), f"no test runs doc-test {name!r}"


def test_markers_are_recognised_and_unmarked_blocks_caught(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("<!-- needs: a key -->\n```bash\nls\n```\n\n```python\nprint(1)\n```\n")
    blocks = doc_blocks(doc)
    assert [(b.kind, b.lang) for b in blocks] == [("needs", "bash"), ("", "python")]


def test_extras_are_named_with_commands_that_work_from_a_checkout() -> None:
    texts = [p.read_text() for p in doc_files()]
    assert texts
    for text in texts:
        assert "pip install 'akto-otel[" not in text and 'pip install "akto-otel[' not in text
    quickstart = (DOCS / "quickstart.md").read_text()
    observability = (DOCS / "observability.md").read_text()
    assert "pip install -e '.[yaml]'" in quickstart
    assert "pip install -e '.[prometheus]'" in observability


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text()
    for field in dataclasses.fields(Settings):
        assert f"`{field.name}`" in text, field.name
    for names in Settings.environment_variables().values():
        for name in names:
            assert f"`{name}`" in text, name


def test_docs_link_to_files_that_exist() -> None:
    for doc in doc_files():
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} -> {target}"


# ------------------------------------------------------------- blocks that are run


def test_readme_test_command_is_what_ci_runs() -> None:
    block = doc_block("readme-tests")
    assert block.code.strip() == "pip install -e '.[dev]' && python -m pytest"
    assert block.code.strip() in (ROOT / ".ci" / "run").read_text()


def test_quickstart_demo_is_the_readme_demo() -> None:
    # tests/test_demo.py runs doc_block("readme-demo").
    assert doc_block("quickstart-demo").code == doc_block("readme-demo").code


def test_collector_excerpt_matches_the_collector_config() -> None:
    excerpt = yaml.safe_load(doc_block("observability-collector-excerpt").code)
    real = yaml.safe_load((ROOT / "collector" / "otel-collector.yaml").read_text())
    mine, theirs = excerpt["connectors"]["span_metrics"], real["connectors"]["span_metrics"]
    assert mine["namespace"] == theirs["namespace"]
    assert mine["dimensions"] == theirs["dimensions"]
    for name, pipeline in excerpt["service"]["pipelines"].items():
        actual = real["service"]["pipelines"][name]
        for part in ("receivers", "processors"):
            assert pipeline[part] == actual[part], (name, part)
        assert set(pipeline["exporters"]) <= set(actual["exporters"]), name


def test_migration_snippet_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-c", doc_block("migration-hooks").code + "print(callable(stop))"],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr[-2000:]


# The scripted model behind every offline agent program: it tries `rm -rf build`
# (the emulator's default policy denies it), then answers.
_SCENARIO = Scenario(steps=[ToolUse("Bash", {"command": "rm -rf build"}), Text("Done.")])


@contextlib.contextmanager
def _offline(tmp_path: Path) -> Iterator[tuple[EmulatorServer, dict[str, str]]]:
    (tmp_path / "build").mkdir()
    with EmulatorServer(default_policy()) as akto, FakeAnthropic(_SCENARIO) as fake:
        env = base_env(**offline_agent_env(fake, tmp_path / "home"))
        env["AKTO_DATA_INGESTION_URL"] = akto.url
        yield akto, env


def _assert_guarded(akto: EmulatorServer, tmp_path: Path) -> None:
    denied = [
        r
        for r in akto.records
        if r.hook == "PreToolUse" and r.verdict and r.verdict.get("Allowed") is False
    ]
    assert denied, [(r.endpoint, r.hook) for r in akto.records]
    assert (tmp_path / "build").is_dir()  # the denied rm -rf did not run


def _run_program(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    program = cwd / "program.py"
    program.write_text(code)
    return subprocess.run(
        [sys.executable, str(program)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("name", "printed"), [("readme-use", "agent: Done."), ("quickstart-agent", "ResultMessage")]
)
def test_agent_program_runs_offline_and_is_guarded(tmp_path: Path, name: str, printed: str) -> None:
    with _offline(tmp_path) as (akto, env):
        result = _run_program(doc_block(name).code, env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert printed in result.stdout
        _assert_guarded(akto, tmp_path)


@pytest.mark.timeout(180)
def test_readme_program_holds_a_denied_answer_and_exports_the_trace(tmp_path: Path) -> None:
    """The README's first example, copied as is, with only the standard OTEL_* variables:
    the answer Akto denies never reaches the program's output, and one trace reaches the
    collector."""
    leaky = Scenario(
        steps=[
            ToolUse("Bash", {"command": "rm -rf build"}),
            Text("Done. The deploy key is SECRET-TOKEN-4242."),
            Text("Done."),
        ]
    )
    (tmp_path / "build").mkdir()
    receiver = OtlpReceiver()
    with receiver, EmulatorServer(default_policy()) as akto, FakeAnthropic(leaky) as fake:
        env = base_env(**offline_agent_env(fake, tmp_path / "home"))
        env["AKTO_DATA_INGESTION_URL"] = akto.url
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        env["OTEL_METRICS_EXPORTER"] = "none"
        result = _run_program(doc_block("readme-use").code, env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        _assert_guarded(akto, tmp_path)
    assert "SECRET-TOKEN" not in result.stdout
    assert "agent: Done." in result.stdout
    names = [span["name"] for span in receiver.spans]
    assert names.count("invoke_agent claude-agent") == 1, names
    assert "execute_tool Bash" in names and "akto.stop" in names, names
    assert len({span["trace_id"] for span in receiver.spans}) == 1


@pytest.mark.timeout(60)
def test_app_processor_is_used_not_doubled(tmp_path: Path) -> None:
    """docs/delivery.md: the guard ships through the app's AktoSpanProcessor, adds none."""
    check = (
        "\nimport gc\n"
        "found = [o for o in gc.get_objects() if isinstance(o, AktoSpanProcessor)]\n"
        "assert found == [guard.processor], found\n"
        "assert guard.tracer_provider is provider\n"
        "print('processors', len(found))\n"
    )
    env = base_env(AKTO_DATA_INGESTION_URL="http://127.0.0.1:9")
    result = _run_program(doc_block("delivery-app-processor").code + check, env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processors 1" in result.stdout


@pytest.mark.timeout(180)
def test_zero_code_command_runs_offline_and_is_guarded(tmp_path: Path) -> None:
    if shutil.which("opentelemetry-instrument", path=base_env()["PATH"]) is None:
        pytest.fail("opentelemetry-instrument missing: pip install -e '.[dev]'")
    (tmp_path / "agent.py").write_text(doc_block("quickstart-agent").code)
    with _offline(tmp_path) as (akto, env):
        lines = commands(doc_block("quickstart-zero-code"))
        assert lines[0] in _INSTALLS and len(lines) == 2, lines
        # The console exporter prints the spans; run the line to see them.
        run = [line for line in lines if "opentelemetry-instrument" in line]
        result = subprocess.run(
            ["bash", "-c", run[0]],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert '"name": "execute_tool Bash"' in result.stdout
        assert "StatusCode.UNAVAILABLE" not in result.stderr
        _assert_guarded(akto, tmp_path)


@pytest.mark.timeout(180)
def test_configure_program_sends_spans_to_the_collector(tmp_path: Path) -> None:
    receiver = OtlpReceiver()
    with receiver, _offline(tmp_path) as (akto, env):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        env["OTEL_METRICS_EXPORTER"] = "none"
        result = _run_program(doc_block("observability-configure").code, env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        _assert_guarded(akto, tmp_path)
    names = {span["name"] for span in receiver.spans}
    assert "execute_tool Bash" in names and "akto.user_prompt" in names, names


@pytest.mark.timeout(120)
def test_offline_test_program_runs(tmp_path: Path) -> None:
    result = _run_program(doc_block("quickstart-offline").code, base_env(), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"(\d+) records reached the emulator, (\d+) denied", result.stdout)
    assert match and int(match.group(1)) > 0 and int(match.group(2)) >= 1, result.stdout


@pytest.mark.timeout(120)
def test_local_emulator_commands_and_policy_run(tmp_path: Path) -> None:
    policy = tmp_path / "my-policy.yaml"
    policy.write_text(doc_block("quickstart-policy").code)
    rules = {rule.name for rule in load_policy(policy).rules}
    assert rules == {"no-rm", "mask-email"}
    port = str(free_port())
    lines = commands(doc_block("quickstart-emulator"), {"18090": port})
    env = base_env()
    doctor = [i for i, line in enumerate(lines) if line.startswith("akto-otel doctor")]
    assert doctor
    # Run up to the emulator start, wait for it to listen, then run the rest.
    with run_commands(lines[: doctor[0]], env, tmp_path):
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthCheck", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the documented emulator command did not start"
            time.sleep(0.2)
        assert env["AKTO_DATA_INGESTION_URL"] == f"http://127.0.0.1:{port}"
        with run_commands(lines[doctor[0] :], env, tmp_path):
            pass


@pytest.mark.timeout(180)
def test_run_offline_program_runs_the_agent(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(doc_block("quickstart-agent").code)
    (tmp_path / "README.md").write_text("# hello\n")
    result = _run_program(doc_block("quickstart-run-offline").code, base_env(), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ResultMessage" in result.stdout  # agent.py printed the session's messages
    match = re.search(r"(\d+) records reached the emulator", result.stdout)
    assert match and int(match.group(1)) >= 3, result.stdout  # prompt, tool, answer
