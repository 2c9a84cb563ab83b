"""One credentials rule for doctor, the verdict client and the delivery client (issue 22, item 1).

Each form goes through the real clients to a real HTTP server on 127.0.0.1 that
answers only when the ``Authorization`` header is exactly the one the rule
(docs/configuration.md, "Credentials") promises, and refuses everything else with
401. Before the rule, ``user:password@`` in the URL plus a token made aiohttp refuse
every guardrail call (fail-open let it through) while doctor reported ready.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from akto_otel import AktoGuardrails
from akto_otel.config import Settings
from akto_otel.contract import WireContext, prompt_record, turn_record
from akto_otel.credentials import akto_auth
from akto_otel.doctor import EXIT_BAD_SETTINGS, EXIT_OK, run_doctor
from akto_otel.errors import AktoConfigError
from akto_otel.exporter import ExportStats, PendingRecord, RecordExporter
from akto_otel.guardrails import GuardrailClient

pytestmark = pytest.mark.timeout(60)

TOKEN = "tok-3f9a"
USER, PASSWORD = "gate user", "p@ss:w0rd"
#: The URL spelling of USER:PASSWORD (percent-encoded, as a URL must carry them).
USERINFO = "gate%20user:p%40ss%3Aw0rd"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
DENY = {"Allowed": False, "Reason": "judged", "behaviour": "block"}


class AuthCheckingAkto:
    """Akto's three endpoints, answering only requests that carry ``expected``."""

    def __init__(self, expected: str | None) -> None:
        self.expected = expected
        self.seen: list[tuple[str, str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, body: dict[str, Any]) -> None:
                auth = self.headers.get("Authorization")
                owner.seen.append((self.command, self.path.split("?")[0], auth))
                ok = auth == owner.expected
                data = json.dumps(body).encode() if ok else b"Unauthorized"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json" if ok else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer({"status": "ok"})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path.startswith("/api/http-proxy"):
                    self._answer({"success": True, "data": {"guardrailsResult": DENY}})
                else:
                    self._answer({"success": True, "message": "ingested"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> AuthCheckingAkto:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


async def _verdict_client(settings: Settings) -> str:
    client = GuardrailClient(settings)
    try:
        verdict = await client.check(prompt_record(WireContext(), "hello"), request=True)
    finally:
        await client.aclose()
    return verdict.decision


def _delivery_client(settings: Settings) -> bool:
    exporter = RecordExporter(settings.replace(export_retry_timeout=1.0), ExportStats())
    record = turn_record(WireContext(), "q", "a", time_ms=1)
    try:
        return exporter.export([PendingRecord(record, key="k1")])
    finally:
        exporter.shutdown(1000)


def _doctor(env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = run_doctor({"AKTO_TIMEOUT": "5", **env}, out)
    return code, out.getvalue()


@pytest.mark.parametrize(
    ("userinfo", "token", "expected"),
    [
        pytest.param("", TOKEN, TOKEN, id="token-only"),
        pytest.param(USERINFO, "", BASIC, id="url-credentials-only"),
        pytest.param("", "", None, id="neither"),
    ],
)
async def test_each_form_authenticates_the_same_way_on_every_client(
    userinfo: str, token: str, expected: str | None
) -> None:
    with AuthCheckingAkto(expected) as akto:
        settings = Settings.from_env({}, ingestion_url=akto.url(userinfo), token=token, timeout=5)
        # A deny proves Akto's answer was read: a refused call would fail open (allow).
        assert await _verdict_client(settings) == "deny"
        assert _delivery_client(settings) is True
        env = {"AKTO_DATA_INGESTION_URL": akto.url(userinfo)}
        if token:
            env["AKTO_API_TOKEN"] = token
        code, out = _doctor(env)
        assert code == EXIT_OK, out
        assert PASSWORD not in out and "p%40ss" not in out
    assert {path for _, path, _ in akto.seen} == {
        "/api/http-proxy",
        "/api/ingestData",
        "/healthCheck",
    }
    assert all(auth == expected for _, _, auth in akto.seen), akto.seen


async def test_url_credentials_with_a_token_are_refused_where_the_settings_are_built() -> None:
    with AuthCheckingAkto(TOKEN) as akto:
        url = akto.url(USERINFO)
        with pytest.raises(AktoConfigError) as raised:
            Settings.from_env({"AKTO_DATA_INGESTION_URL": url, "AKTO_API_TOKEN": TOKEN})
        message = str(raised.value)
        assert "AKTO_DATA_INGESTION_URL" in message and "AKTO_API_TOKEN" in message
        assert "p%40ss" not in message and TOKEN not in message
        with pytest.raises(AktoConfigError):
            AktoGuardrails(ingestion_url=url, token=TOKEN)
        with pytest.raises(AktoConfigError):
            Settings.from_env({"AKTO_DATA_INGESTION_URL": url}).replace(token=TOKEN)
        code, out = _doctor({"AKTO_DATA_INGESTION_URL": url, "AKTO_API_TOKEN": TOKEN})
        assert code == EXIT_BAD_SETTINGS, out
        assert "AKTO_API_TOKEN" in out and "user:password" in out
        assert "p%40ss" not in out and PASSWORD not in out
    assert akto.seen == [], "nothing is sent with settings that cannot authenticate"


@pytest.mark.parametrize(
    ("url", "token", "base", "header", "form"),
    [
        ("https://akto.example", TOKEN, "https://akto.example", TOKEN, "token"),
        (f"https://{USERINFO}@akto.example:8443", "", "https://akto.example:8443", BASIC, "basic"),
        ("https://only-user@akto.example", "", "https://akto.example", None, "basic"),
        ("https://akto.example", "", "https://akto.example", None, "none"),
    ],
)
def test_the_rule_as_a_table(
    url: str, token: str, base: str, header: str | None, form: str
) -> None:
    auth = akto_auth(url, token)
    assert (auth.base_url, auth.form) == (base, form)
    if form == "basic" and header is None:
        header = "Basic " + base64.b64encode(b"only-user:").decode()
    assert auth.headers.get("Authorization") == header
