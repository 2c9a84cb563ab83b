"""TLS is verified: an untrusted certificate is never silently trusted."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from akto_otel.config import Settings
from akto_otel.contract import WireContext, prompt_record
from akto_otel.guardrails import GuardrailClient
from tests.tls_server import tls_server as serve_tls

RECORD = prompt_record(WireContext(), "hello")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = (
            b'{"success": true, "data": {"guardrailsResult": '
            b'{"Allowed": false, "Reason": "tls ok"}}}'
        )
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve_tls(tmp_path, _Handler) as served:
        yield served


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_untrusted_certificate_is_a_tls_error(
    tls_server: tuple[str, Path], fail_mode: str
) -> None:
    url, _ = tls_server
    settings = Settings.from_env({}, ingestion_url=url, timeout=2.0, fail_mode=fail_mode)
    verdict = await GuardrailClient(settings).check(RECORD)
    assert verdict.error == "tls_error"
    assert verdict.allowed is (fail_mode == "open")


async def test_a_custom_ca_bundle_is_trusted(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    settings = Settings.from_env({"AKTO_SSL_CERT_PATH": str(cert)}, ingestion_url=url, timeout=2.0)
    verdict = await GuardrailClient(settings).check(RECORD)
    assert (verdict.decision, verdict.reason, verdict.error) == ("deny", "tls ok", None)
