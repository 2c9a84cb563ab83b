"""TLS is verified: an untrusted certificate is never silently trusted."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akto_otel.config import Settings
from akto_otel.contract import WireContext, prompt_record
from akto_otel.guardrails import GuardrailClient

RECORD = prompt_record(WireContext(), "hello")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = b'{"data": {"guardrailsResult": {"Allowed": false, "Reason": "tls ok"}}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _self_signed(tmp_path)
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


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
    settings = Settings.from_env({"SSL_CERT_PATH": str(cert)}, ingestion_url=url, timeout=2.0)
    verdict = await GuardrailClient(settings).check(RECORD)
    assert (verdict.decision, verdict.reason, verdict.error) == ("deny", "tls ok", None)
