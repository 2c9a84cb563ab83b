"""Each built-in redaction rule: a secret it must catch and a near miss it must leave alone."""

from __future__ import annotations

import pytest

from akto_otel.redaction import REDACTED, Redactor

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
