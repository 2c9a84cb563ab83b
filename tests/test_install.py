"""docs/install.md, for real: a wheel built from this checkout, installed (not editable)
into a fresh virtual environment, runs ``akto-otel --version`` and the demo.

The virtual environment reuses this interpreter's site-packages
(``--system-site-packages``) for the dependencies, to avoid a download of several
hundred MB; the test checks that ``akto_otel`` itself is imported from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from akto_otel.version import __version__
from tests.test_docs import ROOT, commands, doc_block

#: What the wheel is built from: the package and the files pyproject.toml reads.
_SOURCES = ("pyproject.toml", "README.md", "akto_otel")


def _checkout_copy(into: Path) -> Path:
    into.mkdir()
    for name in _SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)
    return into


@pytest.mark.timeout(600)
def test_the_wheel_installs_and_runs_the_demo(tmp_path: Path) -> None:
    checkout = _checkout_copy(tmp_path / "akto-otel")
    lines = commands(
        doc_block("install-wheel"),
        {
            # The dependencies from this interpreter instead of a download; the package
            # itself reinstalled from the wheel even though this environment has it.
            "python3 -m venv .venv": f"{sys.executable} -m venv --system-site-packages .venv",
            "pip install dist/": "pip install --no-deps --force-reinstall dist/",
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKTO_", "OTEL_"))}
    env.pop("PYTHONPATH", None)  # nothing but the venv decides where akto_otel comes from
    env["HOME"] = str(tmp_path / "home")
    outputs: list[str] = []
    for line in lines:
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    assert lines[-2].endswith("akto-otel --version") and __version__ in outputs[-2]
    assert "Final answer" in outputs[-1] and "Summary:" in outputs[-1]
    venv = checkout / ".venv"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import akto_otel; print(akto_otel.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    packaged = Path(where).parent
    assert (packaged / "emulator" / "default_policy.json").is_file()
    assert (packaged / "py.typed").is_file()
