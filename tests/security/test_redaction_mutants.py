"""Redaction's helpers, pinned so that no mutant of them passes.

test_redaction_rules.py checks each built-in rule; test_secrets.py shows the
secrets staying out of the agent through the real CLI (too slow to run per
mutant). This module pins the exact answers of the pure helpers those rely on,
which mutation testing (``nox -s mutation -- redaction``, docs/reliability.md)
found unchecked by the fast tests: custom patterns, the drop-on-failure path, the
URL password helpers and the agent's environment overrides.
"""

from __future__ import annotations

import pytest

from akto_otel.redaction import (
    REDACTED,
    Redactor,
    agent_env_overrides,
    redact_url,
    url_without_credentials,
)


def test_a_custom_pattern_is_redacted_like_a_built_in_one() -> None:
    redactor = Redactor(extra_patterns=(r"internal-[0-9]+", r"ACME-[A-Z]{4}"))
    assert redactor.redact("see internal-4242 and ACME-QRST, not acme-qrst") == (
        f"see {REDACTED} and {REDACTED}, not acme-qrst"
    )


def test_redact_or_none_redacts_and_drops_what_it_cannot_redact() -> None:
    redactor = Redactor()
    assert redactor.redact_or_none("DB_PASSWORD=hunter22pass") == f"DB_PASSWORD={REDACTED}"
    # bytes cannot go through str patterns: the content is dropped, never passed on raw.
    assert redactor.redact_or_none(b"DB_PASSWORD=hunter22pass") is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://akto:pw@h:1/x", "https://akto:***@h:1/x"),
        ("  https://akto:pw@h/x  ", "https://akto:***@h/x"),
        ("http://akto:Zq@[::1", "http://akto:***@[::1"),  # not even a valid URL
        ("https://:only-pw@h", "https://:***@h"),
        ("https://user@h/x", "https://user@h/x"),
        ("https://h/x?a=b:c@d", "https://h/x?a=b:c@d"),
    ],
)
def test_redact_url_hides_exactly_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "cleaned"),
    [
        ("https://u:p@h:1/x?q=1", "https://h:1/x?q=1"),
        ("https://only-user@h", "https://h"),
        ("https://u:p@ss@h/x", "https://h/x"),  # the host is after the last "@"
        ("https://h/x", "https://h/x"),
        ("http://u:p@[::1", REDACTED),  # unparsable with credentials: nothing of it shown
        ("http://[::1", "http://[::1"),  # unparsable without: left as it is
    ],
)
def test_url_without_credentials_keeps_everything_but_the_userinfo(url: str, cleaned: str) -> None:
    assert url_without_credentials(url) == cleaned


def test_the_agent_gets_blank_secrets_and_a_url_without_its_password() -> None:
    environ = {"AKTO_API_TOKEN": "t", "AKTO_DATA_INGESTION_URL": "https://u:p@akto.example/x"}
    assert agent_env_overrides(environ, {}) == {
        "AKTO_API_TOKEN": "",
        "AKTO_TOKEN": "",
        "AKTO_DATA_INGESTION_URL": "https://akto.example/x",
    }


def test_what_the_app_sets_itself_is_left_alone() -> None:
    environ = {"AKTO_DATA_INGESTION_URL": "https://u:p@akto.example"}
    app_env = {"AKTO_API_TOKEN": "mine", "AKTO_DATA_INGESTION_URL": "https://u:p@other"}
    assert agent_env_overrides(environ, app_env) == {"AKTO_TOKEN": ""}


def test_a_url_without_a_password_or_no_url_adds_no_override() -> None:
    blanks = {"AKTO_API_TOKEN": "", "AKTO_TOKEN": ""}
    assert agent_env_overrides({"AKTO_DATA_INGESTION_URL": "https://akto.example"}, {}) == blanks
    assert agent_env_overrides({}, {}) == blanks
