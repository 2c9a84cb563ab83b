"""Settings' exact answers, pinned so that no mutant of config.py passes.

test_config.py checks that bad values are named and reported; this module pins
what mutation testing (``nox -s mutation -- config``, docs/reliability.md) showed
it leaves loose: each range's edges, each accepted-values text, every spelling a
parser takes, and the derived values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from akto_otel.config import Settings
from akto_otel.errors import AktoConfigError


def _error(env: dict[str, str] | None = None, **kw: object) -> AktoConfigError:
    with pytest.raises(AktoConfigError) as info:
        Settings.from_env(env or {}, **kw)
    return info.value


@pytest.mark.parametrize(
    ("name", "attr", "good", "bad", "accepted"),
    [
        (
            "AKTO_TIMEOUT",
            "timeout",
            {"600": 600.0, " 0.001 ": 0.001},
            ["0", "600.001", "-1", "x"],
            "a number of seconds in (0.0, 600.0]",
        ),
        (
            "AKTO_MAX_STOP_REGENERATIONS",
            "max_stop_regenerations",
            {"0": 0, "100": 100, " 7 ": 7},
            ["-1", "101", "1.5", "two"],
            "a whole number from 0 to 100",
        ),
        (
            "AKTO_CAPTURE_MAX_LENGTH",
            "capture_max_length",
            {"16": 16, str(1 << 20): 1 << 20},
            ["15", str((1 << 20) + 1)],
            f"a whole number from 16 to {1 << 20}",
        ),
        (
            "AKTO_EXPORT_RETRY_TIMEOUT",
            "export_retry_timeout",
            {"0": 0.0, "3600": 3600.0},
            ["3600.5", "-1"],
            "a number of seconds in (-0.001, 3600.0]",
        ),
    ],
)
def test_ranges_take_their_edges_and_refuse_past_them(
    name: str, attr: str, good: dict[str, object], bad: list[str], accepted: str
) -> None:
    for raw, value in good.items():
        assert getattr(Settings.from_env({name: raw}), attr) == value, raw
    for raw in bad:
        error = _error({name: raw})
        assert (error.name, error.value, error.accepted) == (name, raw, accepted)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        (" TRUE ", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_every_boolean_spelling(raw: str, value: bool) -> None:
    assert Settings.from_env({"AKTO_LOG_PAYLOADS": raw}).log_payloads is value
    assert Settings.from_env({}, log_payloads=raw).log_payloads is value


def test_a_bad_boolean_says_what_is_accepted() -> None:
    error = _error({"AKTO_SYNC_MODE": "maybe"})
    assert error.accepted == "true or false (also 1/0, yes/no, on/off)"


def test_choices_are_case_and_space_insensitive_and_list_the_choices() -> None:
    assert Settings.from_env({"AKTO_FAIL_MODE": " CLOSED "}).fail_mode == "closed"
    assert Settings.from_env({"AKTO_MODE": "Atlas"}).mode == "atlas"
    assert _error({"AKTO_DELIVERY": "pigeon"}).accepted == "batch or proxy or otlp"
    assert _error({"AKTO_APPROVAL_DECISION": "maybe"}).accepted == "ask or deny"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("https://akto.example/", "https://akto.example"),
        (" http://h:8080// ", "http://h:8080"),
        ("https://u:p@h/base", "https://u:p@h/base"),
    ],
)
def test_a_url_loses_its_trailing_slashes(raw: str, value: str) -> None:
    assert Settings.from_env({"AKTO_DATA_INGESTION_URL": raw}).ingestion_url == value


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        ("ftp://h", "an http:// or https:// URL with a host"),
        ("http://", "an http:// or https:// URL with a host"),
        ("http://h:99999", "an http:// or https:// URL with a host"),
        ("https://h/x?y=1", "a base URL without query or fragment"),
        ("https://h/x#frag", "a base URL without query or fragment"),
    ],
)
def test_a_bad_url_says_what_is_accepted(raw: str, accepted: str) -> None:
    error = _error({"AKTO_DATA_INGESTION_URL": raw})
    assert (error.name, error.accepted) == ("AKTO_DATA_INGESTION_URL", accepted)


def test_an_empty_url_argument_means_not_configured() -> None:
    assert Settings.from_env({}, ingestion_url=" / ").ingestion_url == ""


@pytest.mark.parametrize("raw", ["", "/a b", "/a?b", "/a#b", "/tab\tpath"])
def test_a_bad_path_says_what_is_accepted(raw: str) -> None:
    error = _error(mcp_ingest_path=raw)
    assert error.accepted == "a URL path such as /mcp (no spaces, query or fragment)"
    assert error.name == "mcp_ingest_path (AKTO_MCP_INGEST_PATH)"


def test_a_path_is_stripped() -> None:
    assert Settings.from_env(
        {"AKTO_NON_MCP_TOOL_PATH_PREFIX": " /tools "}
    ).non_mcp_tool_path_prefix == ("/tools")


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ("yes", "NO_CONTENT"),
        ("off", "NO_CONTENT"),
        (" no_content ", "NO_CONTENT"),
        ("Span_Only", "SPAN_ONLY"),
        ("event_only", "EVENT_ONLY"),
        ("SPAN_AND_EVENT", "SPAN_AND_EVENT"),
    ],
)
def test_every_capture_spelling(raw: str, mode: str) -> None:
    settings = Settings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": raw})
    assert settings.capture_content == mode
    own = Settings.from_env({"AKTO_CAPTURE_CONTENT": raw}).capture_content
    assert own == ("SPAN_ONLY" if raw == "yes" else mode)
    assert settings.capture_on_spans is (mode in ("SPAN_ONLY", "SPAN_AND_EVENT"))
    assert settings.capture_in_events is (mode in ("EVENT_ONLY", "SPAN_AND_EVENT"))


def test_a_bad_capture_value_lists_every_form() -> None:
    error = _error({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "lots"})
    assert error.accepted == "true, false, NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT"


@pytest.mark.parametrize(
    ("raw", "level"), [("warn", "WARNING"), (" debug ", "DEBUG"), ("Critical", "CRITICAL")]
)
def test_log_levels(raw: str, level: str) -> None:
    assert Settings.from_env({"AKTO_LOG_LEVEL": raw}).log_level == level


def test_a_bad_log_level_lists_the_levels() -> None:
    assert _error({"AKTO_LOG_LEVEL": "loud"}).accepted == "DEBUG, INFO, WARNING, ERROR, CRITICAL"


def test_a_ca_bundle_path_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings.from_env({"AKTO_SSL_CERT_PATH": "~/ca.pem"}).ssl_cert_path == str(
        tmp_path / "ca.pem"
    )
    assert Settings.from_env({}, ssl_cert_path=" ").ssl_cert_path == ""
    error = _error({"AKTO_SSL_CERT_PATH": str(tmp_path)})  # a directory is not a file
    assert error.accepted == "the path of an existing CA bundle file (PEM)"


def test_patterns_are_split_on_commas_and_checked() -> None:
    settings = Settings.from_env({"AKTO_REDACT_PATTERNS": " a+ ,, b{2} ,"})
    assert settings.redact_patterns == ("a+", "b{2}")
    error = _error({"AKTO_REDACT_PATTERNS": "ok,([unclosed"})
    assert (error.name, error.value) == ("AKTO_REDACT_PATTERNS", "([unclosed")
    assert error.accepted.startswith("comma-separated regular expressions (")
    wrong = _error(redact_patterns=5)
    assert wrong.accepted == "a sequence of regular expressions (or a comma-separated string)"
    assert wrong.name == "redact_patterns (AKTO_REDACT_PATTERNS)"


def test_the_first_variable_wins_and_a_blank_one_is_not_given() -> None:
    both = {"AKTO_API_TOKEN": "first", "AKTO_TOKEN": "second"}
    assert Settings.from_env(both).token == "first"
    assert Settings.from_env({"AKTO_API_TOKEN": "  ", "AKTO_TOKEN": "second"}).token == "second"
    assert Settings.from_env({"AKTO_TIMEOUT": "  "}).timeout == 5.0
    assert (
        Settings.from_env({"AKTO_AGENT_NAME": "", "OTEL_SERVICE_NAME": "svc"}).agent_name == "svc"
    )


def test_numbers_and_bools_given_as_arguments_go_through_the_parser() -> None:
    settings = Settings.from_env({}, timeout=2, max_sessions="12", sync_mode=False)
    assert (settings.timeout, settings.max_sessions, settings.sync_mode) == (2.0, 12, False)
    assert Settings(max_response_bytes=4096).max_response_bytes == 4096
    error = _error(max_response_bytes=0)
    assert (error.name, error.accepted) == (
        "max_response_bytes",
        "a whole number from 1 to 1073741824",
    )
    wrong = _error(akto_host=5)
    assert (wrong.value, wrong.accepted) == ("5", "a string")


def test_derived_wire_values() -> None:
    assert Settings(mode="atlas").context_source == "ENDPOINT"
    assert Settings(mode="argus").context_source == "AGENTIC"
    assert Settings(agent_id="a-1").vxlan_id == "a-1"
    assert Settings().vxlan_id == "0"


def test_replace_checks_like_the_constructor() -> None:
    settings = Settings().replace(timeout="3", fail_mode="CLOSED")
    assert (settings.timeout, settings.fail_mode) == (3.0, "closed")
    with pytest.raises(AktoConfigError):
        Settings().replace(timeout="0")


def test_repr_shows_every_setting_but_the_token_and_the_url_password() -> None:
    # The two credential forms, one at a time (together they are refused: test_credentials.py).
    settings = Settings(ingestion_url="https://u:pw@akto.example", timeout=3)
    shown = repr(settings)
    assert shown.startswith("Settings(ingestion_url='https://u:***@akto.example', sync_mode=True,")
    assert "timeout=3.0" in shown and "pw@" not in shown
    shown = repr(Settings(ingestion_url="https://akto.example", token="tok-secret", timeout=3))
    assert "timeout=3.0" in shown and "tok-secret" not in shown
    assert "token=" not in shown


def test_the_environment_variables_of_each_setting() -> None:
    names = Settings.environment_variables()
    assert names["token"] == ("AKTO_API_TOKEN", "AKTO_TOKEN")
    assert names["agent_name"] == ("AKTO_AGENT_NAME", "OTEL_SERVICE_NAME")
    assert "max_response_bytes" not in names


def test_a_url_keeps_everything_but_trailing_slashes() -> None:
    url = Settings.from_env({"AKTO_DATA_INGESTION_URL": "https://h/baseX/"}).ingestion_url
    assert url == "https://h/baseX"


def test_a_none_argument_does_not_stop_the_checks_of_the_next_ones() -> None:
    settings = Settings(ingestion_url=None, timeout="2")  # type: ignore[arg-type]
    assert (settings.ingestion_url, settings.timeout) == ("", 2.0)
    with pytest.raises(AktoConfigError):
        Settings(ingestion_url=None, fail_mode="sideways")  # type: ignore[arg-type]


def test_unknown_arguments_are_listed_sorted() -> None:
    with pytest.raises(TypeError) as info:
        Settings.from_env({}, zz=1, aa=2)
    assert str(info.value) == "unknown setting(s): aa, zz"


def test_a_bad_pattern_argument_names_the_argument_and_shows_the_value() -> None:
    error = _error(redact_patterns=["ok", "("])
    assert (error.name, error.value) == ("redact_patterns (AKTO_REDACT_PATTERNS)", "(")
    assert _error(redact_patterns=5).value == "5"
