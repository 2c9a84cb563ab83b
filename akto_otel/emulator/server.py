"""A local, Akto-compatible data-ingestion server on aiohttp's web server.

Speaks the wire contract of ``/work/shared/akto-contract.md``:
``POST /api/http-proxy``, ``POST /api/ingestData``, ``GET /healthCheck``, plus
``GET``/``DELETE /_emulator/records`` to inspect what it received.

HTTP/1.1 (keep-alive, pipelining, chunked bodies, ``Expect: 100-continue``,
malformed requests) is aiohttp's; this module is the routing table, the body
limits, the token check (every route but ``/healthCheck``, which Akto leaves
open for liveness probes) and the records, kept in a bounded buffer whose
overflow is counted in :attr:`EmulatorServer.dropped`.

Nobody can stall it: policies are judged on worker threads, never on the event
loop, and a record whose judgement outlives ``judge_budget_s`` gets a 503 fault
answer (nothing was judged; the guard's fail mode decides), counted in
:attr:`EmulatorServer.judge_timeouts`. A connection that has not sent a whole
request head within ``head_timeout_s`` of connecting is closed, and so is one
whose body does not arrive within ``body_timeout_s``.

Example::

    from akto_otel.emulator import EmulatorServer, default_policy

    with EmulatorServer(default_policy(), token="secret") as server:
        ...  # point AKTO_DATA_INGESTION_URL at server.url
        records = server.wait_for_records(2, timeout=5.0)
        assert records[0].verdict is not None
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from .otlp_ingest import handle_logs_request
from .policy import Policy, allowed_result

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_HEAD_TIMEOUT_S",
    "DEFAULT_JUDGE_BUDGET_S",
    "DEFAULT_MAX_RECORDS",
    "EmulatorServer",
    "ReceivedRecord",
]

_log = logging.getLogger("akto_otel.emulator")

Endpoint = Literal["http-proxy", "ingestData", "otlp-logs"]

_MiB = 1024 * 1024
_PROXY_MAX_STRING = 256 * 1024
_PROXY_MAX_BODY = 2 * _MiB
_INGEST_MAX_STRING = 5 * _MiB
_INGEST_MAX_BODY = 10 * _MiB
#: Records kept for inspection; older ones are dropped (and counted) past this.
DEFAULT_MAX_RECORDS = 10_000
#: An idle keep-alive connection is closed after this long.
_KEEPALIVE_S = 75.0
#: Requests still running at stop get this long before they are cancelled.
_SHUTDOWN_S = 0.5
#: A connection must have sent a whole request head this long after connecting.
DEFAULT_HEAD_TIMEOUT_S = 10.0
#: A request's body must have arrived this long after its head.
DEFAULT_BODY_TIMEOUT_S = 30.0
#: One record's judgement may take this long; past it the answer is a 503 fault
#: (below the guard's default 5 s timeout, so the guard hears why).
DEFAULT_JUDGE_BUDGET_S = 2.0
#: Records judged at once; more wait for a worker (their budget runs meanwhile).
_JUDGE_WORKERS = 4
#: aiohttp's bounds on a request line and on one header line, stated as the emulator's.
_MAX_HEAD_LINE = 8190

_JSON = "application/json"
_TEXT = "text/plain"
_PROXY = "/api/http-proxy"
_INGEST = "/api/ingestData"
_HEALTH = "/healthCheck"
_RECORDS = "/_emulator/records"
_LOGS = "/v1/logs"
_ROUTES: dict[str, tuple[str, ...]] = {
    _PROXY: ("POST",),
    _INGEST: ("POST",),
    _LOGS: ("POST",),
    _HEALTH: ("GET",),
    _RECORDS: ("GET", "DELETE"),
}
_OPEN_ROUTES = frozenset({_HEALTH})  # liveness, no auth (as Akto)
#: Routes that check the token themselves (Akto's OTLP service takes ``Bearer <token>``).
_OWN_AUTH_ROUTES = frozenset({_LOGS})
_DELAYED_ROUTES = frozenset({_PROXY, _INGEST})


@dataclass
class ReceivedRecord:
    """One record the emulator received (ingestData batches are split)."""

    endpoint: Endpoint
    flags: dict[str, str]
    headers: dict[str, str]
    record: dict[str, Any]
    verdict: dict[str, Any] | None
    received_at: float = field(default_factory=time.time)

    @property
    def hook(self) -> str:
        """The ``x-claude-hook`` of the record's ``requestHeaders`` ("" if none)."""
        raw = self.record.get("requestHeaders")
        try:
            headers = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return ""
        if not isinstance(headers, dict):
            return ""
        # OTLP log records carry the Claude Code event's hook under Akto's cowork name.
        value = headers.get("x-claude-hook") or headers.get("x-claude_cowork-hook")
        return value if isinstance(value, str) else ""

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dict of the dataclass fields."""
        return dataclasses.asdict(self)


class _HttpError(Exception):
    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json_bytes(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def _error_body(message: str) -> bytes:
    return _json_bytes({"success": False, "message": message})


def _answer(status: int, body: bytes, content_type: str = _JSON) -> web.Response:
    return web.Response(status=status, body=body, content_type=content_type)


def _headers(request: web.BaseRequest) -> dict[str, str]:
    """Lower-cased header names; repeated headers joined with ", "."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _longest_string_over(value: Any, limit: int) -> bool:
    """True if any string (key or value) in a parsed JSON value is longer than limit."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) > limit:
                return True
        elif isinstance(item, dict):
            for key, sub in item.items():
                if len(key) > limit:
                    return True
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _HttpError(500, f"malformed JSON body: {exc}") from None


def _flag(flags: dict[str, str], name: str) -> bool:
    return flags.get(name, "").lower() == "true"


def _fail_open_result() -> dict[str, Any]:
    result = allowed_result()
    result["failOpen"] = True
    result["error"] = "guardrail engine unavailable"
    return result


def _combined(req: dict[str, Any] | None, resp: dict[str, Any] | None) -> dict[str, Any] | None:
    """One side's result, or both nested as Akto nests them (top level: the request's)."""
    if req is not None and resp is not None:
        return {**req, "requestResult": req, "responseResult": resp}
    return req if req is not None else resp


def _timed_judgement(
    policy: Policy, record: Mapping[str, Any], want_request: bool, want_response: bool
) -> tuple[dict[str, Any] | None, float]:
    """:func:`_judge_record` and the seconds it took, on the judge worker thread."""
    start = time.monotonic()
    verdict = _judge_record(policy, record, want_request, want_response)
    return verdict, time.monotonic() - start


def _judge_record(
    policy: Policy, record: Mapping[str, Any], want_request: bool, want_response: bool
) -> dict[str, Any] | None:
    """The verdict for the sides asked for; runs on a judge worker thread."""
    req = policy.evaluate(record, "request") if want_request else None
    resp = policy.evaluate(record, "response") if want_response else None
    return _combined(req, resp)


_EVALUATED = "guardrails evaluated"
_ALLOWED_VERDICT = allowed_result()
_ALLOWED_ANSWER = _json_bytes(
    {"success": True, "message": _EVALUATED, "data": {"guardrailsResult": _ALLOWED_VERDICT}}
)
_INGESTED_ANSWER = _json_bytes({"success": True, "message": "ingested", "data": {}})


class EmulatorServer:
    """Akto-compatible HTTP server; run it on a background thread or in a loop.

    ``start()``/``stop()`` (or ``with EmulatorServer(...) as server:``) run it on
    a daemon thread with its own event loop; ``await serve_forever()`` runs it
    in the current loop. ``policy``, ``token``, ``latency_s``, ``fail_open`` and
    ``ingest_success_false`` may be changed while it runs. At most ``max_records``
    records are kept (oldest dropped first, counted in :attr:`dropped`).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        latency_s: float = 0.0,
        fail_open: bool = False,
        ingest_success_false: bool = False,
        max_body_bytes: int = 12 * _MiB,
        max_records: int = DEFAULT_MAX_RECORDS,
        judge_budget_s: float = DEFAULT_JUDGE_BUDGET_S,
        head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        for name, value in (
            ("judge_budget_s", judge_budget_s),
            ("head_timeout_s", head_timeout_s),
            ("body_timeout_s", body_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self.policy: Policy = policy if policy is not None else Policy(())
        self.host = host
        self.token = token
        self.latency_s = latency_s
        self.fail_open = fail_open
        self.ingest_success_false = ingest_success_false
        self.max_body_bytes = max_body_bytes
        self.max_records = max_records
        self.judge_budget_s = judge_budget_s
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        #: Records dropped from the bounded buffer since the last :meth:`clear`.
        self.dropped = 0
        #: ingestData records received again, byte for byte (a retry after a lost
        #: answer). Akto keeps them all (it reads no Idempotency-Key; docs/delivery.md):
        #: so does the emulator, and counts them here.
        self.duplicates = 0
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: Records answered 503 because their judgement outlived ``judge_budget_s``.
        self.judge_timeouts = 0
        self._requested_port = port
        self._port: int | None = None
        self._records: collections.deque[ReceivedRecord] = collections.deque(maxlen=max_records)
        self._cond = threading.Condition()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._judges: ThreadPoolExecutor | None = None
        #: Connections that have not yet sent a whole first request head.
        self._headless: set[web.RequestHandler] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._lifecycle = threading.Lock()

    # ------------------------------------------------------------------ info
    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._port is None:
            raise RuntimeError("EmulatorServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # --------------------------------------------------------------- records
    @property
    def records(self) -> list[ReceivedRecord]:
        """A snapshot of the records kept, oldest first."""
        with self._cond:
            return list(self._records)

    def clear(self) -> int:
        """Forget all kept records (and the drop count); returns how many were kept."""
        with self._cond:
            count = len(self._records)
            self._records.clear()
            self.dropped = 0
            self.duplicates = 0
            self._seen.clear()
            return count

    def wait_for_records(self, n: int, timeout: float = 5.0) -> list[ReceivedRecord]:
        """Block until at least ``n`` records are kept (all of them are returned).

        Raises TimeoutError if fewer than ``n`` arrived within ``timeout`` seconds,
        ValueError if ``n`` is more than the buffer keeps.
        """
        if n > self.max_records:
            raise ValueError(f"wait_for_records({n}): only {self.max_records} records are kept")
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._records) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {n} records within {timeout}s, got {len(self._records)}"
                    )
                self._cond.wait(remaining)
            return list(self._records)

    def _count_duplicates(self, batch: list[dict[str, Any]]) -> None:
        # Remembers as many records as it keeps: a duplicate of a forgotten one is missed.
        with self._cond:
            for item in batch:
                fingerprint = hashlib.sha256(_json_bytes(item)).hexdigest()
                if fingerprint in self._seen:
                    self.duplicates += 1
                    self._seen.move_to_end(fingerprint)
                    continue
                self._seen[fingerprint] = None
                if len(self._seen) > self.max_records:
                    self._seen.popitem(last=False)

    def _store(self, items: list[ReceivedRecord]) -> None:
        with self._cond:
            overflow = len(self._records) + len(items) - self.max_records
            if overflow > 0:
                self.dropped += overflow
            self._records.extend(items)
            self._cond.notify_all()

    # ------------------------------------------------------------- lifecycle
    async def start_async(self) -> None:
        """Bind and start serving in the running loop (returns once listening)."""
        if self._runner is not None:
            raise RuntimeError("EmulatorServer is already started")
        app = web.Application(
            client_max_size=self.max_body_bytes,
            handler_args={
                "keepalive_timeout": _KEEPALIVE_S,
                "max_line_size": _MAX_HEAD_LINE,
                "max_field_size": _MAX_HEAD_LINE,
            },
        )
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=_SHUTDOWN_S
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        server = runner.server
        assert server is not None

        def accept() -> web.RequestHandler:
            # aiohttp closes a connection stuck in its first head only from 3.14.4 on,
            # and then only at the keep-alive timeout: this deadline holds on any version.
            handler = server()
            self._headless.add(handler)
            loop.call_later(self.head_timeout_s, self._close_if_headless, handler)
            return handler

        try:
            listener = await loop.create_server(
                accept, self.host, self._requested_port, backlog=128
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._listener = listener
        self._judges = ThreadPoolExecutor(_JUDGE_WORKERS, thread_name_prefix="akto-emulator-judge")
        self._loop = loop
        self._stop_event = asyncio.Event()
        self._port = int(listener.sockets[0].getsockname()[1])

    def _close_if_headless(self, handler: web.RequestHandler) -> None:
        if handler in self._headless:
            self._headless.discard(handler)
            handler.force_close()

    async def serve_forever(self) -> None:
        """Serve in the current loop until cancelled or ``stop()`` is called."""
        if self._runner is None:
            await self.start_async()
        assert self._stop_event is not None
        try:
            await self._stop_event.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and close every connection (call in the server's loop)."""
        listener, self._listener = self._listener, None
        runner, self._runner = self._runner, None
        judges, self._judges = self._judges, None
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()
        if judges is not None:
            # A judgement over budget cannot be interrupted: its thread ends on its own.
            judges.shutdown(wait=False, cancel_futures=True)
        self._headless.clear()

    def start(self) -> EmulatorServer:
        """Start on a daemon thread with its own loop; blocks until listening."""
        with self._lifecycle:
            if self._thread is not None or self._runner is not None:
                raise RuntimeError("EmulatorServer is already started")
            ready = threading.Event()
            self._start_error = None
            thread = threading.Thread(
                target=self._thread_main, args=(ready,), name="akto-emulator", daemon=True
            )
            thread.start()
            ready.wait()
            if self._start_error is not None:
                thread.join()
                error, self._start_error = self._start_error, None
                raise error
            self._thread = thread
        return self

    def stop(self) -> None:
        """Stop the server (closing its connections) and join its thread. Idempotent."""
        with self._lifecycle:
            loop, event, thread = self._loop, self._stop_event, self._thread
            if loop is not None and event is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)
            if thread is not None and thread is not threading.current_thread():
                thread.join()
                self._thread = None
                self._loop = None
                self._stop_event = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event) -> None:
        async def main() -> None:
            try:
                await self.start_async()
            except BaseException as exc:
                self._start_error = exc
                ready.set()
                return
            ready.set()
            await self.serve_forever()

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - defensive
            if not ready.is_set():
                self._start_error = exc
                ready.set()
            else:
                _log.exception("akto emulator loop crashed")

    # ------------------------------------------------------------- endpoints
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            response = await self._respond(request)
        except _HttpError as err:
            response = _answer(err.status, _error_body(err.message))
            if err.close:
                response.force_close()
        except web.HTTPRequestEntityTooLarge:
            response = _answer(413, _error_body(f"body exceeds {self.max_body_bytes} bytes"))
            response.force_close()  # the rest of the body is drained, then the connection closed
        except Exception as exc:
            _log.exception("akto emulator: error while handling %s", request.path)
            response = _answer(500, _error_body(f"internal error: {exc}"))
        close = response.keep_alive is False or not request.keep_alive
        response.headers["Connection"] = "close" if close else "keep-alive"
        if close:
            response.force_close()
        return response

    async def _respond(self, request: web.Request) -> web.Response:
        self._headless.discard(request.protocol)
        path = request.rel_url.raw_path
        methods = _ROUTES.get(path)
        if methods is None:
            raise _HttpError(404, f"no such endpoint: {path[:200]}")
        if request.method not in methods:
            response = _answer(405, _error_body(f"method {request.method} not allowed on {path}"))
            response.headers["Allow"] = ", ".join(methods)
            return response
        if path not in _OPEN_ROUTES | _OWN_AUTH_ROUTES and not self._authorized(request):
            return _answer(401, b"Unauthorized", _TEXT)
        if path == _HEALTH:
            return _answer(200, b'{"status":"ok"}')
        if path == _RECORDS:
            if request.method == "DELETE":
                return _answer(200, _json_bytes({"success": True, "cleared": self.clear()}))
            listing = _answer(200, _json_bytes([r.to_dict() for r in self.records]))
            listing.headers["X-Emulator-Dropped"] = str(self.dropped)
            return listing
        body = await self._read_body(request)
        if path == _LOGS:
            return self._otlp_logs(request, body)
        if path in _DELAYED_ROUTES and self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if path == _PROXY:
            return await self._http_proxy(dict(request.query), _headers(request), body)
        return self._ingest_data(dict(request.query), _headers(request), body)

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await asyncio.wait_for(request.read(), self.body_timeout_s)
        except asyncio.TimeoutError:
            raise _HttpError(
                408, f"request body not received within {self.body_timeout_s:g} s", close=True
            ) from None

    def _authorized(self, request: web.Request) -> bool:
        token = self.token
        return token is None or request.headers.get("Authorization") == token

    async def _http_proxy(
        self, flags: dict[str, str], headers: dict[str, str], body: bytes
    ) -> web.Response:
        if len(body) > _PROXY_MAX_BODY:
            raise _HttpError(422, f"request body exceeds {_PROXY_MAX_BODY} bytes")
        data = _parse_json(body)
        if len(body) > _PROXY_MAX_STRING and _longest_string_over(data, _PROXY_MAX_STRING):
            raise _HttpError(422, f"a string exceeds {_PROXY_MAX_STRING} characters")
        if not isinstance(data, dict):
            raise _HttpError(422, "body must be a JSON object")
        payload = data.get("requestPayload")
        if not isinstance(payload, str) or not payload:
            raise _HttpError(422, "requestPayload is required and must be a non-empty string")
        want_request = _flag(flags, "guardrails")
        want_response = _flag(flags, "response_guardrails")
        verdict: dict[str, Any] | None = None
        if self.fail_open:
            verdict = _combined(
                _fail_open_result() if want_request else None,
                _fail_open_result() if want_response else None,
            )
        elif want_request or want_response:
            verdict = await self._judge(data, want_request, want_response)
        self._store([ReceivedRecord("http-proxy", flags, headers, data, verdict)])
        if verdict is None:
            return _answer(200, _INGESTED_ANSWER)
        if verdict == _ALLOWED_VERDICT:
            return _answer(200, _ALLOWED_ANSWER)
        answer = {"success": True, "message": _EVALUATED, "data": {"guardrailsResult": verdict}}
        return _answer(200, _json_bytes(answer))

    async def _judge(
        self, record: dict[str, Any], want_request: bool, want_response: bool
    ) -> dict[str, Any] | None:
        """Judge on a worker thread within the budget; over it, a 503 (nothing judged)."""
        judges = self._judges
        assert judges is not None
        budget = self.judge_budget_s
        work = asyncio.get_running_loop().run_in_executor(
            judges, _timed_judgement, self.policy, record, want_request, want_response
        )
        try:
            verdict, took = await asyncio.wait_for(work, budget)
            # A pattern that backtracks holds the GIL, so the loop may see the result
            # before its timer: the judgement's own time decides, not which came first.
            if took > budget:
                raise asyncio.TimeoutError
            return verdict
        except asyncio.TimeoutError:
            self.judge_timeouts += 1
            _log.warning(
                "akto emulator: judging a record took longer than %g s; answered 503, "
                "nothing was judged",
                budget,
            )
            raise _HttpError(
                503, f"guardrail evaluation exceeded its {budget:g} s budget: nothing was judged"
            ) from None

    def _otlp_logs(self, request: web.Request, body: bytes) -> web.Response:
        """``POST /v1/logs``, mapped the way Akto's OTLP ingestion service maps it."""
        answer = handle_logs_request(
            body,
            content_type=request.headers.get("Content-Type", ""),
            authorization=request.headers.get("Authorization"),
            token=self.token,
        )
        if answer.records:
            headers = _headers(request)
            now = time.time()
            self._store(
                [ReceivedRecord("otlp-logs", {}, headers, r, None, now) for r in answer.records]
            )
        return web.Response(
            status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type}
        )

    def _ingest_data(
        self, flags: dict[str, str], headers: dict[str, str], body: bytes
    ) -> web.Response:
        if len(body) > _INGEST_MAX_BODY:
            raise _HttpError(422, f"request body exceeds {_INGEST_MAX_BODY} bytes")
        data = _parse_json(body)
        if len(body) > _INGEST_MAX_STRING and _longest_string_over(data, _INGEST_MAX_STRING):
            raise _HttpError(422, f"a string exceeds {_INGEST_MAX_STRING} characters")
        batch = data.get("batchData") if isinstance(data, dict) else None
        if not isinstance(batch, list):
            raise _HttpError(422, "body must be a JSON object with a list 'batchData'")
        for index, item in enumerate(batch):
            if not isinstance(item, dict):
                raise _HttpError(422, f"batchData[{index}] must be an object")
        now = time.time()
        self._count_duplicates(batch)
        self._store(
            [
                ReceivedRecord("ingestData", dict(flags), dict(headers), item, None, now)
                for item in batch
            ]
        )
        answer = {
            "success": not self.ingest_success_false,
            "message": f"ingested {len(batch)} records",
        }
        return _answer(200, _json_bytes(answer))
