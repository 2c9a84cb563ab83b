"""Settings: every reference variable, aliases, and clear errors for bad values.

Also the exact answers: each range's edges, each accepted-values text, every
spelling a parser takes, and the derived values (part of the mutation-testing
selection, ``nox -s mutation -- config``, docs/reliability.md).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from akto_otel.config import Settings
from akto_otel.errors import AktoConfigError


def test_defaults_match_the_reference_connector() -> None:
    s = Settings.from_env({})
    assert s.ingestion_url == ""
    assert s.sync_mode is True
    assert s.akto_host == "api.anthropic.com"
    assert s.timeout == 5.0
    assert s.mode == "argus" and s.context_source == "AGENTIC"
    assert s.connector == "claude_agent_sdk" and s.connector_value == "claude_agent_sdk"
    assert (s.mcp_ingest_path, s.non_mcp_tool_path_prefix) == ("/mcp", "/tool")
    assert s.vxlan_id == "0"
    assert s.log_payloads is False
    assert s.fail_mode == "open"
    assert s.capture_content == "NO_CONTENT"


def test_every_reference_variable_is_read() -> None:
    env = {
        "AKTO_DATA_INGESTION_URL": "https://akto.example:9090/",
        "AKTO_SYNC_MODE": "false",
        "AKTO_HOST": "my.agent",
        "AKTO_TIMEOUT": "2.5",
        "AKTO_API_TOKEN": "tok",
        "AKTO_MODE": "ATLAS",
        "AKTO_CONNECTOR": "conn",
        "AKTO_CONNECTOR_VALUE": "connval",
        "AKTO_MCP_INGEST_PATH": "/m",
        "AKTO_NON_MCP_TOOL_PATH_PREFIX": "/t",
        "AKTO_AGENT_ID": "pod-1",
        "AKTO_LOG_DIR": "/tmp/x",
        "AKTO_LOG_LEVEL": "debug",
        "AKTO_LOG_PAYLOADS": "true",
    }
    s = Settings.from_env(env)
    assert s.ingestion_url == "https://akto.example:9090"
    assert s.sync_mode is False
    assert s.akto_host == "my.agent"
    assert s.timeout == 2.5
    assert s.token == "tok"
    assert s.mode == "atlas" and s.context_source == "ENDPOINT"
    assert (s.connector, s.connector_value) == ("conn", "connval")
    assert (s.mcp_ingest_path, s.non_mcp_tool_path_prefix) == ("/m", "/t")
    assert s.vxlan_id == "pod-1"
    assert s.log_dir == "/tmp/x" and s.log_level == "DEBUG" and s.log_payloads is True


def test_token_alias_and_precedence() -> None:
    assert Settings.from_env({"AKTO_TOKEN": "old"}).token == "old"
    assert Settings.from_env({"AKTO_TOKEN": "old", "AKTO_API_TOKEN": "new"}).token == "new"


def test_token_never_in_repr() -> None:
    s = Settings.from_env({"AKTO_API_TOKEN": "s3cr3t-token"})
    assert "s3cr3t-token" not in repr(s) and "s3cr3t-token" not in str(s)


def test_arguments_win_over_environment() -> None:
    s = Settings.from_env({"AKTO_TIMEOUT": "9"}, timeout=1.0, fail_mode="closed")
    assert s.timeout == 1.0 and s.fail_mode == "closed"


def test_unknown_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="tiemout"):
        Settings.from_env({}, tiemout=1)


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("AKTO_TIMEOUT", "abc", "number of seconds"),
        ("AKTO_TIMEOUT", "0", "number of seconds"),
        ("AKTO_TIMEOUT", "-1", "number of seconds"),
        ("AKTO_DATA_INGESTION_URL", "akto.local:9090", "http:// or https://"),
        ("AKTO_DATA_INGESTION_URL", "ftp://akto", "http:// or https://"),
        ("AKTO_DATA_INGESTION_URL", "https://akto/x?y=1", "without query"),
        ("AKTO_DATA_INGESTION_URL", "http://akto:99999", "http:// or https://"),
        ("AKTO_DATA_INGESTION_URL", "http://akto:abc", "http:// or https://"),
        ("AKTO_DATA_INGESTION_URL", "http://[::1", "http:// or https://"),
        ("AKTO_DATA_INGESTION_URL", "http://:8080", "http:// or https://"),
        ("AKTO_MODE", "foo", "argus or atlas"),
        ("AKTO_SYNC_MODE", "maybe", "true or false"),
        ("AKTO_LOG_PAYLOADS", "sure", "true or false"),
        ("AKTO_LOG_LEVEL", "loud", "DEBUG"),
        ("AKTO_FAIL_MODE", "sideways", "open or closed"),
        ("AKTO_DELIVERY", "pigeon", "batch or proxy"),
        ("AKTO_MAX_STOP_REGENERATIONS", "-2", "whole number"),
        ("AKTO_MAX_STOP_REGENERATIONS", "two", "whole number"),
        ("AKTO_SSL_CERT_PATH", "/no/such/bundle.pem", "existing CA bundle"),
        ("AKTO_MCP_INGEST_PATH", "/has space", "URL path"),
        ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "lots", "SPAN_ONLY"),
        ("AKTO_REDACT_PATTERNS", "ok,([unclosed", "regular expressions"),
    ],
)
def test_bad_values_name_the_variable_and_what_is_accepted(
    name: str, value: str, accepted: str
) -> None:
    with pytest.raises(AktoConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert name in message and accepted in message
    assert info.value.name == name
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("False", "NO_CONTENT"),
        ("span_and_event", "SPAN_AND_EVENT"),
        ("EVENT_ONLY", "EVENT_ONLY"),
    ],
)
def test_capture_content_boolean_and_enum_forms(value: str, mode: str) -> None:
    s = Settings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value})
    assert s.capture_content == mode
    assert Settings.from_env({"AKTO_CAPTURE_CONTENT": value}).capture_content == mode


@pytest.mark.parametrize("value", ["true", "1", "YES", "on"])
def test_the_otel_capture_variable_never_turns_content_on_for_a_boolean(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    """util-genai reads a boolean as NO_CONTENT: the same variable must not send user
    content out of the process in one instrumentation and not in the next."""
    with caplog.at_level("WARNING", logger="akto_otel.config"):
        s = Settings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value})
    assert s.capture_content == "NO_CONTENT"
    assert not s.capture_on_spans and not s.capture_in_events
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" in (
        warned[0].getMessage()
    )
    # The package's own switch (and the keyword argument) keep the boolean meaning,
    # and it wins over the OpenTelemetry variable.
    otel = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
    own = Settings.from_env({"AKTO_CAPTURE_CONTENT": value, otel: "NO_CONTENT"})
    assert own.capture_content == "SPAN_ONLY"
    assert Settings.from_env({}, capture_content="true").capture_content == "SPAN_ONLY"


def test_ssl_cert_path_accepts_an_existing_file(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings.from_env({"AKTO_SSL_CERT_PATH": str(bundle)}).ssl_cert_path == str(bundle)


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    """Importing the package creates no files and opens no sockets."""
    code = (
        "import socket, sys\n"
        "def _no_socket(*a, **k):\n"
        "    raise SystemExit('socket opened during import')\n"
        "socket.socket.connect = _no_socket\n"
        "socket.socket.connect_ex = _no_socket\n"
        "socket.socket.bind = _no_socket\n"
        "import akto_otel, akto_otel.config, akto_otel.contract, akto_otel.guardrails\n"
        "print('ok')\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


# ---------------------------------------------------------------- one validation path


def test_a_bad_keyword_argument_is_a_config_error_naming_argument_and_variable() -> None:
    from akto_otel import AktoGuardrails

    with pytest.raises(AktoConfigError) as info:
        AktoGuardrails(timeout="abc")
    message = str(info.value)
    assert "timeout" in message and "AKTO_TIMEOUT" in message and "abc" in message


@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        ("sync_mode", "false", False),
        ("sync_mode", "ON", True),
        ("log_payloads", "no", False),
        ("timeout", "2.5", 2.5),
        ("timeout", 3, 3.0),
        ("max_sessions", "12", 12),
        ("fail_mode", "CLOSED", "closed"),
        ("ingestion_url", "http://akto.local:9090/", "http://akto.local:9090"),
        ("capture_content", "true", "SPAN_ONLY"),
        ("redact_patterns", "a+,b+", ("a+", "b+")),
        ("redact_patterns", ["x{2},y", "z"], ("x{2},y", "z")),
    ],
)
def test_keyword_arguments_are_parsed_like_environment_values(
    argument: str, value: object, expected: object
) -> None:
    from akto_otel import AktoGuardrails

    assert getattr(Settings.from_env({}, **{argument: value}), argument) == expected
    assert getattr(Settings(**{argument: value}), argument) == expected  # type: ignore[arg-type]
    guard = AktoGuardrails(Settings.from_env({}), **{argument: value})
    assert getattr(guard.settings, argument) == expected
    guard.processor.shutdown()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AKTO_TIMEOUT", "abc"),
        ("AKTO_TIMEOUT", "0"),
        ("AKTO_DATA_INGESTION_URL", "ftp://akto"),
        ("AKTO_MODE", "foo"),
        ("AKTO_SYNC_MODE", "maybe"),
        ("AKTO_LOG_PAYLOADS", "sure"),
        ("AKTO_FAIL_MODE", "sideways"),
        ("AKTO_MAX_STOP_REGENERATIONS", "-2"),
        ("AKTO_MCP_INGEST_PATH", "/has space"),
        ("AKTO_REDACT_PATTERNS", "([unclosed"),
    ],
)
def test_an_argument_is_rejected_exactly_like_its_variable(name: str, value: str) -> None:
    attr = next(a for a, names in Settings.environment_variables().items() if name in names)
    with pytest.raises(AktoConfigError) as from_env:
        Settings.from_env({name: value})
    with pytest.raises(AktoConfigError) as from_argument:
        Settings.from_env({}, **{attr: value})
    assert from_argument.value.accepted == from_env.value.accepted
    assert attr in from_argument.value.name and name in from_argument.value.name


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("timeout", True),
        ("sync_mode", 2),
        ("token", 123),
        ("redact_patterns", [1]),
        ("max_sessions", 2.5),
        ("akto_host", b"bytes"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_config_error(argument: str, value: object) -> None:
    with pytest.raises(AktoConfigError) as info:
        Settings.from_env({}, **{argument: value})
    assert argument in str(info.value)


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from akto_otel import AktoGuardrails

    env = {"AKTO_TIMEOUT": "soon", "AKTO_FAIL_MODE": "sideways", "AKTO_LOG_LEVEL": "loud"}
    with pytest.raises(AktoConfigError) as info:
        Settings.from_env(env, sync_mode="maybe", max_sessions="many")
    names = [p.name for p in info.value.problems]
    assert names == [
        "AKTO_TIMEOUT",
        "AKTO_LOG_LEVEL",
        "AKTO_FAIL_MODE",
        "sync_mode (AKTO_SYNC_MODE)",
        "max_sessions (AKTO_MAX_SESSIONS)",
    ]
    message = str(info.value)
    assert all(name in message for name in names)
    # The guard reports the environment's and its arguments' problems together.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(AktoConfigError) as guard_info:
        AktoGuardrails(sync_mode="maybe")
    assert len(guard_info.value.problems) == 4


def test_a_path_object_is_taken_for_a_path_setting(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_env({}, ssl_cert_path=bundle, log_dir=tmp_path)
    assert (settings.ssl_cert_path, settings.log_dir) == (str(bundle), str(tmp_path))


def test_none_means_not_given() -> None:
    assert Settings.from_env({"AKTO_TIMEOUT": "3"}, timeout=None).timeout == 3.0
    assert Settings(timeout=None).timeout == 5.0  # type: ignore[arg-type]


# ---------------------------------------------------------------- a discoverable API


def test_dir_and_help_show_the_public_names_without_side_effects(tmp_path: Path) -> None:
    code = (
        "import socket, pydoc\n"
        "def _no_socket(*a, **k):\n"
        "    raise SystemExit('socket opened')\n"
        "socket.socket.connect = _no_socket\n"
        "socket.socket.connect_ex = _no_socket\n"
        "socket.socket.bind = _no_socket\n"
        "import akto_otel\n"
        "public = [n for n in akto_otel.__all__ if n != '__version__']\n"
        "assert public, 'no public names'\n"
        "missing = set(akto_otel.__all__) - set(dir(akto_otel))\n"
        "assert not missing, missing\n"
        "text = pydoc.render_doc(akto_otel, renderer=pydoc.plaintext)\n"
        "absent = [n for n in public if n not in text]\n"
        "assert not absent, absent\n"
        "print('ok')\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    import os

    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip() == "ok"
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_configure_stays_the_function_whatever_is_imported_first() -> None:
    code = (
        "import akto_otel.configure as configure_module\n"
        "import akto_otel\n"
        "assert callable(akto_otel.configure), type(akto_otel.configure)\n"
        "assert akto_otel.configure.__module__ == 'akto_otel.configure'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_public_name_of_the_api_modules_has_a_docstring() -> None:
    import importlib
    import inspect

    modules = [
        "akto_otel",
        "akto_otel.config",
        "akto_otel.configure",
        "akto_otel.errors",
        "akto_otel.exporter",
        "akto_otel.processor",
    ]
    missing: list[str] = []
    checked = 0
    for name in modules:
        module = importlib.import_module(name)
        if not inspect.getdoc(module):
            missing.append(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            checked += 1
            if not (obj.__doc__ or "").strip():
                missing.append(f"{name}.{public}")
            # Methods: of the classes these modules define (hooks, guardrails and
            # contract have their own owners and checks).
            if inspect.isclass(obj) and obj.__module__ in modules[1:]:
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (
                        inspect.isfunction(member) or isinstance(member, (property, classmethod))
                    ):
                        continue
                    checked += 1
                    func = member.fget if isinstance(member, property) else member
                    if isinstance(member, classmethod):
                        func = member.__func__
                    if not (getattr(func, "__doc__", None) or "").strip():
                        missing.append(f"{obj.__module__}.{obj.__name__}.{attr}")
    assert checked > 20
    assert missing == [], "\n".join(missing)


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


# --------------------------------------------------------------------------- semconv opt-in


@pytest.mark.parametrize(
    ("raw", "on"),
    [
        ("gen_ai_latest_experimental", True),
        (" http , gen_ai_latest_experimental ", True),
        ("gen_ai_latest_experimental,database", True),
        ("http/dup,gen_ai_latest_experimental/dup", False),
        ("gen_ai_latest_experimental_x", False),
        ("GEN_AI_LATEST_EXPERIMENTAL", False),
        ("gen_ai_latest_experimental;http", False),
        ("http", False),
        ("", False),
    ],
)
def test_the_semconv_opt_in_is_a_comma_list_of_exact_items(raw: str, on: bool) -> None:
    settings = Settings.from_env({"OTEL_SEMCONV_STABILITY_OPT_IN": raw})
    assert settings.semconv_security is on


def test_the_opt_in_variable_is_not_read_as_a_boolean() -> None:
    assert Settings.from_env({"OTEL_SEMCONV_STABILITY_OPT_IN": "true"}).semconv_security is False


@pytest.mark.parametrize(("raw", "on"), [("true", True), ("1", True), ("false", False)])
def test_the_old_switch_still_reads_a_boolean_and_says_it_is_deprecated(
    raw: str, on: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="akto_otel"):
        settings = Settings.from_env({"AKTO_SEMCONV_SECURITY": raw})
    assert settings.semconv_security is on
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == [
        "AKTO_SEMCONV_SECURITY is deprecated: set "
        "OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental "
        "(it now also gives the revised draft's names)"
    ]


def test_the_old_switch_refuses_a_value_that_is_no_boolean() -> None:
    with pytest.raises(AktoConfigError, match="AKTO_SEMCONV_SECURITY"):
        Settings.from_env({"AKTO_SEMCONV_SECURITY": "gen_ai_latest_experimental"})


def test_the_standard_opt_in_wins_over_the_old_switch() -> None:
    env = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http", "AKTO_SEMCONV_SECURITY": "true"}
    assert Settings.from_env(env).semconv_security is False
    env = {"OTEL_SEMCONV_STABILITY_OPT_IN": _GEN_AI, "AKTO_SEMCONV_SECURITY": "false"}
    assert Settings.from_env(env).semconv_security is True


_GEN_AI = "gen_ai_latest_experimental"


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ("true", "NO_CONTENT"),
        (" TRUE ", "NO_CONTENT"),
        ("false", "NO_CONTENT"),
        ("span_only", "SPAN_ONLY"),
        (" event_only ", "EVENT_ONLY"),
        ("Span_And_Event", "SPAN_AND_EVENT"),
        ("no_content", "NO_CONTENT"),
    ],
)
def test_the_otel_capture_variable_takes_the_enum_and_a_boolean_is_no_content(
    raw: str, mode: str
) -> None:
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": raw}
    assert Settings.from_env(env).capture_content == mode


def test_a_true_capture_variable_warns_with_the_modes_it_takes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="akto_otel"):
        Settings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": " True "})
    assert [r.getMessage() for r in caplog.records if "NO_CONTENT" in r.getMessage()] == [
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=True is read as NO_CONTENT: it "
        "takes NO_CONTENT, SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT (or set "
        "AKTO_CAPTURE_CONTENT=true)"
    ]


@pytest.mark.parametrize(
    ("raw", "mode"), [("true", "SPAN_ONLY"), ("on", "SPAN_ONLY"), ("false", "NO_CONTENT")]
)
def test_the_packages_capture_switch_reads_true_as_span_only(raw: str, mode: str) -> None:
    assert Settings.from_env({"AKTO_CAPTURE_CONTENT": raw}).capture_content == mode


def test_a_capture_value_that_is_no_mode_is_refused_with_the_modes() -> None:
    with pytest.raises(AktoConfigError, match="SPAN_AND_EVENT"):
        Settings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "spans"})
