"""The docs read as a product's: no internal tracker numbers, no ``sudo`` in recipes
(they run as root here, and a user knows their own way to become root), benchmarks
showing the current figures with the history in CHANGELOG.md."""

from __future__ import annotations

import re

from tests.test_docs import ROOT, all_blocks, doc_files

_TRACKER = re.compile(r"\bissues? #?\d+", re.IGNORECASE)


def test_no_internal_issue_numbers_in_user_docs() -> None:
    files = [*doc_files(), ROOT / "CHANGELOG.md"]
    assert len(files) > 3
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _TRACKER.search(line)
    ]
    assert not found, found


def test_no_sudo_in_recipes() -> None:
    blocks = [b for b in all_blocks() if b.lang in ("bash", "sh", "shell")]
    assert blocks
    with_sudo = [f"{b.path}:{b.line}" for b in blocks if re.search(r"^\s*sudo\s", b.code, re.M)]
    assert not with_sudo, with_sudo


def test_benchmarks_show_current_figures_and_history_is_in_the_changelog() -> None:
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text()
    assert len(benchmarks) < 20_000, len(benchmarks)
    assert "](../CHANGELOG.md)" in benchmarks
    assert "## Reproducing these figures" in benchmarks
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "Performance round" in changelog


def test_docs_name_no_build_hash_or_binary_size_that_goes_stale() -> None:
    text = "\n".join(path.read_text() for path in doc_files())
    assert text
    assert not re.findall(r"otelcol-akto-[\d.]+-[0-9a-f]{12}", text)
    assert not re.findall(r"binar(?:y|ies) (?:is|are) \d+ ?MB", text)


def test_pictures_the_docs_show_exist() -> None:
    pictures = [
        (path, target)
        for path in doc_files()
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text())
    ]
    assert pictures
    for path, target in pictures:
        assert (path.parent / target).is_file(), f"{path.name} -> {target}"
