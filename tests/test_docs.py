"""The docs keep up with the code: every setting is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from akto_otel.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text()
    for field in dataclasses.fields(Settings):
        assert f"`{field.name}`" in text, field.name
    for names in Settings.environment_variables().values():
        for name in names:
            assert f"`{name}`" in text, name


def test_docs_link_to_files_that_exist() -> None:
    import re

    for doc in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} -> {target}"
