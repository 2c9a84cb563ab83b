"""A picture of a live web page with Debian's headless Chromium, for the docs.

Tests that have a real page up (Prometheus's alerts, say) call :func:`capture`:
it skips with the reason where Chromium is absent (fails under ``CI``, which
installs it), and writes into ``docs/images`` only when
``AKTO_OTEL_WRITE_PICTURES=1`` asks for it, so an ordinary run never changes the
checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
_PNG = b"\x89PNG\r\n\x1a\n"


def chromium() -> str:
    """Chromium's path; skips (or fails under CI) when it is not installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = "chromium not found (Debian: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run must install it")
    pytest.skip(message)


def capture(url: str, name: str, into: Path, *, size: str = "1280,800") -> Path:
    """Screenshot ``url`` as ``into/name`` (a PNG); also ``docs/images/name`` when asked."""
    target = into / name
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # the tests run as root
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size}",
            f"--screenshot={target}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(into)},
    )
    assert result.returncode == 0 and target.is_file(), result.stderr[-2000:]
    assert target.read_bytes()[:8] == _PNG
    if os.environ.get("AKTO_OTEL_WRITE_PICTURES") == "1":
        IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(target, IMAGES / name)
    return target
