"""Akto behind an egress proxy: HTTP(S)_PROXY and NO_PROXY as the reference's urllib reads them.

The proxy is a real forward proxy (aiohttp's server in its own thread) in front of
the emulator; every test binds 127.0.0.1 on free ports.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from akto_otel.config import Settings
from akto_otel.contract import WireContext, prompt_record, tool_request_record
from akto_otel.emulator import EmulatorServer, Policy
from akto_otel.exporter import ExportStats, PendingRecord, RecordExporter
from akto_otel.guardrails import GuardrailClient, environment_proxy
from akto_otel.processor import AktoSpanProcessor
from benchmarks.servers import free_port
from tests.conftest import TEST_RULES
from tests.tls_server import tls_server

pytestmark = pytest.mark.timeout(60)
POLICY = Policy(TEST_RULES)
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


class ForwardProxy:
    """A plain-HTTP forward proxy: absolute-form requests are relayed and remembered."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _relay(self, request: web.Request) -> web.Response:
        self.seen.append(str(request.url))
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, request.url, data=body, headers=headers) as answer,
        ):
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                content_type=answer.content_type,
            )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    yield monkeypatch


def _settings(url: str, **kw: Any) -> Settings:
    return Settings.from_env({}, ingestion_url=url, timeout=2.0, **kw)


def test_the_environment_names_the_proxy_as_urllib_reads_it(
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    assert environment_proxy("https://akto.example") is None
    clean_proxy_env.setenv("HTTPS_PROXY", "http://user:pw@egress:3128")
    clean_proxy_env.setenv("HTTP_PROXY", "http://plain:3128")
    clean_proxy_env.setenv("NO_PROXY", "internal.example,.corp")
    assert environment_proxy("https://akto.example/api") == "http://user:pw@egress:3128"
    assert environment_proxy("http://akto.example:9090") == "http://plain:3128"
    assert environment_proxy("https://internal.example") is None
    assert environment_proxy("https://akto.corp") is None
    assert environment_proxy("not a url") is None


async def test_verdicts_go_through_the_proxy(clean_proxy_env: pytest.MonkeyPatch) -> None:
    with EmulatorServer(POLICY) as akto, ForwardProxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        client = GuardrailClient(_settings(akto.url))
        denied = await client.check(
            tool_request_record(WireContext(), "Bash", {"command": "rm -rf /"})
        )
        allowed = await client.check(prompt_record(WireContext(), "hello"))
        await client.aclose()
    assert (denied.decision, denied.allowed, denied.error) == ("deny", False, None)
    assert (allowed.decision, allowed.error) == ("allow", None)
    assert len(proxy.seen) == 2
    assert all(url.startswith(f"{akto.url}/api/http-proxy") for url in proxy.seen)


async def test_no_proxy_connects_directly(clean_proxy_env: pytest.MonkeyPatch) -> None:
    with EmulatorServer(POLICY) as akto, ForwardProxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
        client = GuardrailClient(_settings(akto.url))
        verdict = await client.check(prompt_record(WireContext(), "hello"))
        await client.aclose()
    assert (verdict.decision, verdict.error) == ("allow", None)
    assert proxy.seen == []
    assert akto.records, "the direct call did not reach Akto"


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_a_dead_proxy_is_a_fault_never_a_bypass(
    clean_proxy_env: pytest.MonkeyPatch, fail_mode: str
) -> None:
    # The proxy the environment names is down: the call fails as Akto being down
    # does, it does not quietly go direct (nor does a deny become an allow).
    with EmulatorServer(POLICY) as akto:
        clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
        client = GuardrailClient(_settings(akto.url, fail_mode=fail_mode))
        verdict = await client.check(
            tool_request_record(WireContext(), "Bash", {"command": "rm -rf /"})
        )
        await client.aclose()
        assert akto.records == []
    assert verdict.decision == "error"
    assert verdict.error == "connection_refused"
    assert verdict.allowed is (fail_mode == "open")


def test_records_are_delivered_through_the_proxy(clean_proxy_env: pytest.MonkeyPatch) -> None:
    with EmulatorServer() as akto, ForwardProxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        processor = AktoSpanProcessor(_settings(akto.url))
        provider = TracerProvider()
        provider.add_span_processor(processor)
        span = provider.get_tracer("t").start_span("hook")
        processor.attach(span, prompt_record(WireContext(), "hello"), kind="prompt")
        span.end()
        assert processor.force_flush()
        received = akto.wait_for_records(1, timeout=10)
        provider.shutdown()
    assert len(received) == 1
    assert proxy.seen and all(url.startswith(f"{akto.url}/api/ingestData") for url in proxy.seen)


def test_doctor_asks_akto_through_the_same_proxy(clean_proxy_env: pytest.MonkeyPatch) -> None:
    import io

    from akto_otel.doctor import run_doctor

    with EmulatorServer() as akto, ForwardProxy() as proxy:
        secret_proxy = proxy.url.replace("http://", "http://egress-user:proxy-pw@")
        clean_proxy_env.setenv("HTTP_PROXY", secret_proxy)
        out = io.StringIO()
        code = run_doctor({"AKTO_DATA_INGESTION_URL": akto.url}, out)
    report = out.getvalue()
    assert code == 0, report
    assert any("/healthCheck" in url for url in proxy.seen)
    assert any("/api/ingestData" in url for url in proxy.seen)
    assert "proxy-pw" not in report
    assert proxy.url.removeprefix("http://") in report


def test_doctor_names_the_proxy_when_it_is_down(clean_proxy_env: pytest.MonkeyPatch) -> None:
    import io

    from akto_otel.doctor import run_doctor

    with EmulatorServer() as akto:
        dead = f"http://127.0.0.1:{free_port()}"
        clean_proxy_env.setenv("HTTP_PROXY", dead)
        out = io.StringIO()
        code = run_doctor({"AKTO_DATA_INGESTION_URL": akto.url}, out)
    report = out.getvalue()
    assert code == 1, report
    failure = next(line for line in report.splitlines() if line.lstrip().startswith("FAIL"))
    assert dead.removeprefix("http://") in failure
    assert "proxy" in failure


# ------------------------------------------------------- HTTPS Akto through HTTPS_PROXY


class ConnectProxy:
    """An egress proxy for HTTPS: ``CONNECT host:port`` opens a tunnel, bytes are piped.

    The TLS session runs end to end through it (the proxy never sees the content);
    ``tunnels`` lists every target asked for.
    """

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target = head.split(b" ", 2)[:2]
            if method != b"CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels.append(target.decode())
            host, _, port = target.decode().rpartition(":")
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                back.start()
                _pipe(client, upstream)
                back.join(10)

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class _TlsAkto(BaseHTTPRequestHandler):
    """Akto over TLS: a deny for every guardrail check, ``success`` for deliveries."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.startswith("/api/http-proxy"):
            result = {"Allowed": False, "Reason": "judged over tls", "behaviour": "block"}
            body = json.dumps({"success": True, "data": {"guardrailsResult": result}})
        else:
            body = json.dumps({"success": True, "message": "ingested"})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


async def _https_verdict_and_delivery(
    url: str, cert: Path, proxy: ConnectProxy
) -> list[tuple[str, list[str]]]:
    """Each client's outcome and the tunnels the proxy opened for it."""
    settings = _settings(url, ssl_cert_path=str(cert), export_retry_timeout=1.0)
    client = GuardrailClient(settings)
    verdict = await client.check(tool_request_record(WireContext(), "Bash", {"command": "ls"}))
    await client.aclose()
    outcome = [(f"{verdict.decision} {verdict.error}", list(proxy.tunnels))]
    proxy.tunnels.clear()
    exporter = RecordExporter(settings, ExportStats())
    record = PendingRecord(prompt_record(WireContext(), "hello"), key="k1")
    delivered = await asyncio.to_thread(exporter.export, [record])
    exporter.shutdown(1000)
    outcome.append((f"delivered {delivered}", list(proxy.tunnels)))
    return outcome


async def test_https_akto_is_reached_through_https_proxy_by_both_clients(
    clean_proxy_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with tls_server(tmp_path, _TlsAkto) as (url, cert), ConnectProxy() as proxy:
        clean_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        # HTTP_PROXY names a dead proxy: an https:// URL must not take it.
        clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
        (
            (verdict, verdict_tunnels),
            (delivery, delivery_tunnels),
        ) = await _https_verdict_and_delivery(url, cert, proxy)
    target = url.removeprefix("https://")
    assert (verdict, delivery) == ("deny None", "delivered True")
    assert verdict_tunnels == [target], "the verdict client went around HTTPS_PROXY"
    assert delivery_tunnels and set(delivery_tunnels) == {target}, "the delivery went around it"


async def test_no_proxy_takes_https_akto_direct_on_both_clients(
    clean_proxy_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with tls_server(tmp_path, _TlsAkto) as (url, cert), ConnectProxy() as proxy:
        clean_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        clean_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        outcome = await _https_verdict_and_delivery(url, cert, proxy)
    assert outcome == [("deny None", []), ("delivered True", [])]
