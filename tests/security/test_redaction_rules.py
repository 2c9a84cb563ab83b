"""Each built-in redaction rule: a secret it must catch and a near miss it must leave alone.

Also the exact answers of the pure helpers the rules rely on: custom patterns, the
drop-on-failure path, the URL password helpers and the agent's environment
overrides (test_secrets.py shows the secrets staying out of the agent through the
real CLI; ``nox -s mutation -- redaction``, docs/reliability.md).
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

_PGP = (
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGZ" + "x" * 40 + "\n"
    "-----END PGP PRIVATE KEY BLOCK-----"
)
_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y"

# (case, text, the secret part that must disappear)
CAUGHT = [
    ("db_password", "DB_PASSWORD=hunter22pass", "hunter22pass"),
    ("github_token_env", "GITHUB_TOKEN=abcd1234efgh", "abcd1234efgh"),
    ("slack_bot_token_env", "SLACK_BOT_TOKEN=plainvalue99", "plainvalue99"),
    ("akto_api_token_env", "export AKTO_API_TOKEN=akto-Q7Q7Q7", "akto-Q7Q7Q7"),
    (
        "aws_json",
        '{"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("json_password", '{"password": "p4ss-w0rd"}', "p4ss-w0rd"),
    ("json_passphrase_spaces", '{"db_password": "correct horse battery"}', "horse battery"),
    ("basic_auth", "Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("raw_auth", "authorization: 7f3a9c2e1b", "7f3a9c2e1b"),
    ("pgp_private_block", f"key:\n{_PGP}\nafter", "lQOYBGZ"),
    ("stripe_live", "charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("google_api_key", "key=AIzaSyA1234567890abcdefghijklmnopqrstuv", "SyA1234567890abcdefghij"),
    ("slack_bot", "xoxb-123456789012-abcdefABCDEF", "123456789012-abcdef"),
    ("slack_app", "xapp-1-A0123456789-abcdef", "A0123456789-abcdef"),
    ("jwt", f"token {_JWT}", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6y"),
    ("url_password", "postgres://app:s3cr3tpw@db.internal/x", "s3cr3tpw"),
]

# (case, text): near misses that are not secrets and must come out unchanged.
KEPT = [
    ("token_count", "MAX_TOKENS=4096 and TOKEN_COUNT=12"),
    ("working_directory", "PWD=/home/me/project"),
    ("json_near_names", '{"password_hint": "first pet", "aws_region": "us-east-1"}'),
    ("password_prose", "the password policy says: rotate often"),
    ("authorization_prose", "authorization is required for this"),
    ("pgp_public_block", "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQINBGZ\n-----END PGP"),
    ("stripe_short", "sk_live_short"),
    ("google_short", "AIzaShortValue"),
    ("slack_short", "xoxb-123"),
    ("jwt_one_segment", "eyJhbGciOiJIUzI1NiJ9 is only a header"),
    ("url_without_password", "https://api.example.com/v1/items"),
]


@pytest.mark.parametrize(("case", "text", "secret"), CAUGHT, ids=[c[0] for c in CAUGHT])
def test_secret_is_redacted(case: str, text: str, secret: str) -> None:
    out = Redactor().redact(text)
    assert secret not in out, case
    assert REDACTED in out


@pytest.mark.parametrize(("case", "text"), KEPT, ids=[k[0] for k in KEPT])
def test_near_miss_is_kept(case: str, text: str) -> None:
    assert Redactor().redact(text) == text, case


def test_redaction_keeps_the_name_so_the_record_stays_readable() -> None:
    assert Redactor().redact("DB_PASSWORD=hunter22pass") == f"DB_PASSWORD={REDACTED}"
    assert Redactor().redact('{"aws_secret_access_key": "' + "A" * 40 + '"}') == (
        '{"aws_secret_access_key": "' + REDACTED + '"}'
    )


def test_redaction_is_idempotent() -> None:
    text = "\n".join(t for _, t, _ in CAUGHT)
    once = Redactor().redact(text)
    assert Redactor().redact(once) == once


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
