"""``akto-otel serve``: the same guard for Claude Code itself, as the CLI's HTTP hook server.

Claude Code's settings files accept hooks of ``"type": "http"`` that POST each
event's JSON (the same JSON an SDK callback gets) to a URL. :class:`HookServer`
answers them with :func:`akto_otel.hook_dispatch.dispatch`, the handlers and
decision core of the SDK path: one decision core behind two front doors. Each CLI
session (``session_id``) is one trace, an ``invoke_agent`` root its hook spans
nest under; events the guard does not judge become short ``akto.hook_event`` spans.

Every request over TCP must carry :data:`SECRET_HEADER` with the server's shared
secret (compared in constant time); anything else is a 401, which a hook with
``"onFailure": "block"`` turns into a block. The server can also listen on a Unix
socket in a private directory (:meth:`HookServer.start_unix`): there the peer's
``SO_PEERCRED`` uid must be the server's, and no secret is needed; the CLI reaches it
through ``"type": "command"`` hooks running :mod:`akto_otel.hook_forward`.
:func:`claude_settings` prints the settings that wire the CLI to the server (either
transport). Connections are bounded and must deliver an authenticated request in
time (:mod:`akto_otel.serve_conn`).

Usage::

    akto-otel serve                                   # 127.0.0.1:18091 and hook.sock
    akto-otel claude-settings > ~/.claude/settings.json
    akto-otel claude-settings --transport command > ~/.claude/settings.json

    server = HookServer(akto_otel.configure(), secret="...")
    url = await server.start("127.0.0.1", 0)          # then: await server.close()
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import secrets
import shlex
import socket
import stat
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from akto_otel import armed, hook_answers, hook_dispatch, peers, semconv
from akto_otel.decision import JUDGING_HOOKS, Rules
from akto_otel.hook_scope import HookCallback, HookOutput, HookScope, text
from akto_otel.hooks import AktoGuardrails
from akto_otel.serve_conn import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DROP_REASONS,
    ConnectionGuard,
    connection_bound,
)
from akto_otel.spans import end_span, mark_error, start_agent_span
from akto_otel.unjudged import StartupProbe
from akto_otel.verdict import quietly
from akto_otel.version import __version__

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_PORT",
    "FORWARDER",
    "JUDGED_AS",
    "OBSERVED_EVENTS",
    "SECRET_HEADER",
    "SERVED_EVENTS",
    "HookServer",
    "ServeError",
    "blocking_events",
    "claude_command_settings",
    "claude_settings",
    "cli_output",
    "default_secret_path",
    "default_socket_path",
    "load_secret",
    "raise_descriptor_limit",
    "read_secret",
    "run_serve",
]

_log = logging.getLogger("akto_otel.serve")

#: The port ``akto-otel serve`` listens on by default (next to the emulator's 18090).
DEFAULT_PORT = 18091
#: The header every request must carry with the shared secret.
SECRET_HEADER = "X-Akto-Hook-Secret"
#: A hook body larger than this is refused (413): the judge's own cap
#: (``AKTO_JUDGE_MAX_CHARS``, 8 Mi characters) at up to 4 bytes each.
DEFAULT_MAX_BODY = 32 * 1024 * 1024
#: Hook requests judged at once; more wait, up to :data:`_PENDING_FACTOR` times as many.
DEFAULT_MAX_CONCURRENCY = 64
_PENDING_FACTOR = 4
#: Events the CLI may send that the guard only traces (answered ``{}``); the CLI
#: lets an action go ahead on ``{}``. Left out on purpose: WorktreeCreate and
#: WorktreeRemove (a hook there *replaces* the CLI's own git worktree handling).
OBSERVED_EVENTS: tuple[str, ...] = (
    "SessionStart",
    "SessionEnd",
    "StopFailure",
    "PermissionDenied",
    "PostCompact",
    "UserPromptExpansion",
    "Interrupt",
    "InstructionsLoaded",
    "ConfigChange",
    "CwdChanged",
)
#: CLI events judged by another event's handler. A skill's ``!`command``` line runs
#: a shell command without any PreToolUse: the CLI asks PreSkillShellCommand hooks
#: instead (body: tool_name, tool_input.command, tool_use_id) and reads a PreToolUse
#: answer, a deny or an ask keeping the command from running.
JUDGED_AS: dict[str, str] = {"PreSkillShellCommand": "PreToolUse"}
#: Every event the printed settings wire to the server.
SERVED_EVENTS: tuple[str, ...] = (*hook_dispatch.HOOK_EVENTS, *JUDGED_AS, *OBSERVED_EVENTS)
#: Events whose settings entry needs a tool matcher.
_TOOL_EVENTS = frozenset(
    {"PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest", "PreSkillShellCommand"}
)
_PERMISSION_DENIED = "PermissionDenied"
_EVENT_NAME = re.compile(r"[A-Za-z]{1,64}")
_SESSION_SWEEP = 60.0
#: The command hooks' forwarder: a stdlib-only script, run by path (never imported).
FORWARDER = Path(__file__).resolve().with_name("hook_forward.py")


class ServeError(Exception):
    """A one-line problem starting the server (the secret file, the address)."""


def default_secret_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/akto-otel/hook-secret``, else ``~/.config/akto-otel/hook-secret``."""
    return _config_dir(os.environ if env is None else env) / "hook-secret"


def _config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base else Path(env.get("HOME") or Path.home()) / ".config"
    return root / "akto-otel"


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_RUNTIME_DIR/akto-otel/hook.sock``, else ``hook.sock`` beside the secret
    (``$XDG_CONFIG_HOME/akto-otel``, else ``~/.config/akto-otel``)."""
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "").strip()
    folder = Path(runtime) / "akto-otel" if runtime else _config_dir(env)
    return folder / "hook.sock"


def _bind_unix(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, in a private directory (made 0700 when
    absent; refused when another user owns it or others may write it). A stale
    socket of ours is replaced; one a server still answers on, or another user's,
    is refused."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    problem = peers.private_directory(folder)
    if problem:
        raise ServeError(problem)
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISSOCK(info.st_mode):
            raise ServeError(f"{path}: exists and is not a socket; move it away")
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise ServeError(f"{path}: owned by another user (uid {info.st_uid}); delete it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # nobody answers: a server that did not clean up
            else:
                raise ServeError(f"{path}: another akto-otel serve is listening there")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"{path}: cannot listen: {exc.strerror or exc} (pick another --socket PATH, "
            "or --no-socket for the TCP port alone)"
        ) from None
    return sock


def raise_descriptor_limit() -> int:
    """Raise the soft open-file limit to the hard one (more room for connections);
    returns the soft limit in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        return -1


def read_secret(path: Path) -> str:
    """The secret in ``path``; :class:`ServeError` when it is missing, empty,
    readable by anyone but its owner (another local user could then drive the
    server), owned by another user, or in a directory others may write (they could
    swap it for one they know)."""
    try:
        info = path.stat()
        mode = info.st_mode
        folder = path.parent.stat().st_mode
        value = path.read_text().strip()
    except FileNotFoundError:
        raise ServeError(f"{path}: no secret yet (run 'akto-otel serve' once)") from None
    except OSError as exc:
        raise ServeError(f"{path}: cannot read the secret: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServeError(f"{path}: readable by other users; run: chmod 600 {path}")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise ServeError(f"{path}: owned by another user (uid {info.st_uid}); delete it")
    if folder & (stat.S_IWGRP | stat.S_IWOTH):
        raise ServeError(f"{path.parent}: writable by other users; run: chmod 700 {path.parent}")
    if not value:
        raise ServeError(f"{path}: the secret file is empty; delete it to make a new one")
    return value


def load_secret(path: Path) -> str:
    """The secret in ``path``, made (random, 0600, in a 0700 directory) when absent.

    Made whole in a private temporary file, then linked into place, so a reader
    never sees a half-written secret and of two starts at once, one secret wins.
    """
    if not path.exists():
        import tempfile

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".hook-secret.")
        try:
            with os.fdopen(fd, "w") as handle:  # mkstemp makes it 0600
                handle.write(secrets.token_urlsafe(32) + "\n")
            os.link(temporary, path)
        except FileExistsError:
            pass  # another start made it first: use that one
        finally:
            os.unlink(temporary)
    return read_secret(path)


def cli_output(output: Mapping[str, Any]) -> dict[str, Any]:
    """A handler's output in the CLI's JSON: the SDK's ``continue_`` / ``async_`` renamed."""
    renamed = {"continue_": "continue", "async_": "async"}
    return {renamed.get(key, key): value for key, value in output.items()}


def claude_settings(
    url: str,
    secret: str,
    blocking: Iterable[str] = (),
    *,
    timeout: int = 60,
) -> dict[str, Any]:
    """The ``hooks`` settings that send every served event to ``url`` with the secret.

    ``blocking`` names the events whose hook carries ``"onFailure": "block"``
    (:func:`blocking_events`: the judging events in fail-closed mode): a server
    that is down, hung, or refuses the request then blocks what the event guards.
    """
    base = url.rstrip("/")

    def hook(event: str, blocks: bool) -> dict[str, Any]:
        return {
            "type": "http",
            "url": f"{base}/hook/{event}",
            # A CLI started with TRACEPARENT (its own spans join that trace) hands it
            # on, so the session's guard spans join the same trace.
            "headers": {SECRET_HEADER: secret, "traceparent": "${TRACEPARENT}"},
            "allowedEnvVars": ["TRACEPARENT"],
            "timeout": timeout,
        }

    return _hook_settings(hook, blocking)


def claude_command_settings(
    socket_path: Path,
    blocking: Iterable[str] = (),
    *,
    timeout: int = 60,
    python: str = sys.executable,
) -> dict[str, Any]:
    """The ``hooks`` settings that send every served event to the Unix socket at
    ``socket_path``, through ``"type": "command"`` hooks running :data:`FORWARDER`.

    No secret: the socket's private directory and ``SO_PEERCRED`` (checked at both
    ends) prove each side is this user's. The forwarder gives up after ``timeout``
    seconds; the CLI's own timeout is 5 seconds later. The ``blocking`` events
    (:func:`blocking_events`) run it with ``--block`` (a server that is missing, hung
    or refusing exits 2: the CLI blocks the prompt or tool call; on Stop,
    SubagentStop, PostToolUse and PostToolUseFailure it ends the turn with
    ``continue: false``) and carry
    ``"onFailure": "block"`` (a forwarder that cannot start or is killed blocks too).
    """
    base = [python, "-I", "-S", str(FORWARDER), "--socket", str(socket_path)]

    def hook(event: str, blocks: bool) -> dict[str, Any]:
        argv = [*base, "--event", event, "--timeout", str(timeout)]
        if blocks:
            argv.append("--block")
        return {"type": "command", "command": shlex.join(argv), "timeout": timeout + 5}

    return _hook_settings(hook, blocking)


def _hook_settings(
    hook: Callable[[str, bool], dict[str, Any]], blocking: Iterable[str]
) -> dict[str, Any]:
    """Every served event wired to ``hook(event, blocks)``, with ``"onFailure":
    "block"`` on the ``blocking`` ones and a ``"*"`` matcher on the tool events."""
    blocking = set(blocking)
    hooks: dict[str, Any] = {}
    for event in SERVED_EVENTS:
        blocks = event in blocking
        entry = hook(event, blocks)
        if blocks:
            entry["onFailure"] = "block"
        matcher: dict[str, Any] = {"hooks": [entry]}
        if event in _TOOL_EVENTS:
            matcher = {"matcher": "*", **matcher}
        hooks[event] = [matcher]
    return {"hooks": hooks}


def blocking_events(rules: Rules) -> list[str]:
    """The served events whose hook must block when it fails, under ``rules``."""
    return [e for e in SERVED_EVENTS if armed.on_failure_for(JUDGED_AS.get(e, e), rules) == "block"]


@dataclass
class _Session:
    scope: HookScope
    span: Span
    last_seen: float


class HookServer:
    """Claude Code's HTTP hooks answered by ``guard``'s decision core.

    One :class:`HookScope` and ``invoke_agent`` root span per CLI session, at most
    ``guard.settings.max_sessions`` of them, each closed on SessionEnd, when idle
    past ``session_idle_timeout``, or at :meth:`close`.

    Connections (:class:`akto_otel.serve_conn.ConnectionGuard`): at most
    ``max_connections`` (and half the open-file limit), each given
    ``header_timeout`` seconds to deliver a request with the secret; on Linux a
    loopback connection from another uid is closed at once unless ``other_users``.
    """

    def __init__(
        self,
        guard: AktoGuardrails,
        secret: str,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        other_users: bool = False,
    ) -> None:
        if not secret:
            raise ServeError("the shared secret is empty")
        self.guard = guard
        self._secret = secret.encode()
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._other_users = other_users
        self._conns: ConnectionGuard | None = None
        self._listeners: list[asyncio.AbstractServer] = []
        self._socket_path: Path | None = None
        self._socket_inode: tuple[int, int] | None = None
        self._dropped_logged: set[str] = set()
        quietly(guard.metrics.start_dropped_connections, DROP_REASONS)
        self._max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._inside = 0
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._probe = StartupProbe(guard.client, guard.settings)
        #: The base URL once :meth:`start` has bound the port.
        self.url = ""
        #: The Unix socket once :meth:`start_unix` has bound it.
        self.socket_path: Path | None = None
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.app = web.Application(client_max_size=max_body, middlewares=[self._auth])
        self.app.router.add_post("/hook/{event}", self._hook)
        self.app.router.add_get("/health", self._health)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def max_connections(self) -> int:
        """Open connections at most (``max_connections``, or half the descriptor limit)."""
        return (
            self._conns.max_connections if self._conns else connection_bound(self._max_connections)
        )

    async def _setup(self) -> ConnectionGuard:
        if self._conns is not None:
            return self._conns
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await runner.setup()
        assert runner.server is not None
        self._runner = runner
        self._conns = ConnectionGuard(
            runner.server,
            self._dropped,
            max_connections=connection_bound(self._max_connections),
            header_timeout=self._header_timeout,
            other_users=self._other_users,
        )
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self._conns

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> str:
        """Listen on ``host:port`` (0: any free port); returns the base URL."""
        conns = await self._setup()
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(conns.protocol(unix=False), host, port, backlog=128)
        self._listeners.append(listener)
        bound = listener.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        self.url = f"http://{shown}:{bound[1]}"
        return self.url

    async def start_unix(self, path: Path) -> Path:
        """Listen on a Unix socket at ``path`` too (see :func:`_bind_unix` for the
        directory it must be in); peers of another uid are refused, and no secret is
        asked of the others. Returns the path."""
        conns = await self._setup()
        sock = _bind_unix(path)
        info = os.stat(path)
        loop = asyncio.get_running_loop()
        try:
            listener = await loop.create_server(conns.protocol(unix=True), sock=sock)
        except BaseException:
            sock.close()
            path.unlink(missing_ok=True)
            raise
        self._listeners.append(listener)
        self._socket_inode = (info.st_dev, info.st_ino)
        self.socket_path = path
        return path

    def _dropped(self, reason: str) -> None:
        quietly(self.guard.metrics.record_dropped_connection, reason)
        if reason not in self._dropped_logged:
            self._dropped_logged.add(reason)
            _log.warning(
                "akto-otel serve closed a connection (%s; counted on %s, logged once per reason)",
                reason,
                semconv.METRIC_SERVE_CONNECTIONS_DROPPED,
            )

    async def close(self) -> None:
        """Stop listening (requests in flight finish), end every session, flush."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        if self.socket_path is not None:
            try:
                info = os.stat(self.socket_path)
                if (info.st_dev, info.st_ino) == self._socket_inode:
                    self.socket_path.unlink()
            except OSError:
                pass
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for session_id in list(self._sessions):
            self._end_session(session_id, error="shutdown")
        await self.guard.aclose()

    # ------------------------------------------------------------------ routes

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        conns, transport = self._conns, request.transport
        if conns is None or not conns.is_unix(transport):
            given = request.headers.get(SECRET_HEADER, "").encode()
            if not hmac.compare_digest(given, self._secret):
                return web.json_response({"error": "unauthorized"}, status=401)
        if conns is not None:
            conns.begin(transport)  # an authenticated request: never evicted now
        try:
            response: web.StreamResponse = await handler(request)
        finally:
            if conns is not None:
                conns.end(transport)
        return response

    async def _health(self, request: web.Request) -> web.Response:
        settings = self.guard.settings
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "fail_mode": settings.fail_mode,
                "sync_mode": settings.sync_mode,
                "akto": bool(settings.ingestion_url),
                "sessions": len(self._sessions),
                "blocking_events": blocking_events(self.guard.rules),
            }
        )

    async def _hook(self, request: web.Request) -> web.Response:
        event = request.match_info["event"]
        if not _EVENT_NAME.fullmatch(event):
            return _error(404, "unknown event")
        if self._inside >= self._max_concurrency * (1 + _PENDING_FACTOR):
            return self._refuse(event, 503, "overloaded")
        # Counted before the body is read, and read only once judging may start:
        # at most max_concurrency bodies are held in memory.
        self._inside += 1
        try:
            async with self._slots:
                return await self._judge(event, request)
        finally:
            self._inside -= 1

    async def _judge(self, event: str, request: web.Request) -> web.Response:
        named = event
        event = JUDGED_AS.get(event, event)
        try:
            data = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(event, 413, "request_too_large")
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to parse
            return self._refuse(event, 400, "bad_request")
        if not isinstance(data, dict):
            return self._refuse(event, 400, "bad_request")
        if data.get("hook_event_name", named) != named:
            return self._refuse(event, 400, "bad_request")
        if named != event:
            data = {**data, "hook_event_name": event}
        try:
            output = await self._answer(event, data, request.headers)
        except Exception as exc:  # dispatch never raises; this is the server's own bug
            _log.error("akto-otel serve could not answer %s: %s", event, type(exc).__name__)
            return self._refuse(event, 500, "internal_error")
        return web.json_response(cli_output(output))

    def _refuse(self, event: str, status: int, fault: str) -> web.Response:
        """Refuse a hook request. The CLI blocks a judging event it guards with
        ``onFailure: block``; in fail-open mode it goes on, so the call is told and
        counted as unjudged, as any call Akto could not judge."""
        settings = self.guard.settings
        judged = event in JUDGING_HOOKS and settings.sync_mode
        if event == "PostToolUse":
            judged = judged and settings.tool_response_guardrails
        if judged and not self.guard.rules.fail_closed:
            quietly(self.guard.record_unjudged, event, "", fault)
        return _error(status, fault)

    # ------------------------------------------------------------------ answers

    async def _answer(
        self, event: str, data: dict[str, Any], headers: Mapping[str, str]
    ) -> HookOutput:
        session_id = text(data, "session_id")
        session = self._session(session_id, headers)
        try:
            if event in hook_dispatch.HANDLERS:
                callback = hook_answers.noting(
                    event, session.scope, _dispatcher(event, session.scope)
                )
                return await callback(data, text(data, "tool_use_id") or None, None)
            quietly(_observe, session.scope, event, data)
            return {}
        finally:
            if event == "SessionEnd":
                self._end_session(session_id)

    def _session(self, session_id: str, headers: Mapping[str, str]) -> _Session:
        now = time.monotonic()
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session
        self._evict(now)
        parent = _remote_parent(headers)
        if self.guard.settings.spans == "guard":
            # The CLI's own span (TRACEPARENT) is the agent's: the guardrail calls nest
            # under it, and ending it here does nothing (it is remote).
            span = parent or trace.INVALID_SPAN
        else:
            span = start_agent_span(
                self.guard.tracer,
                self.guard.settings.agent_name,
                session_id=session_id,
                agent_id=self.guard.settings.agent_id,
                parent=parent,
            )
        quietly(self._probe.start)
        scope = HookScope(
            self.guard.verdicts, self.guard.rules, self._probe, self.guard.tracer, "", span
        )
        session = _Session(scope, span, now)
        self._sessions[session_id] = session
        return session

    def _evict(self, now: float) -> None:
        settings = self.guard.settings
        while self._sessions:
            oldest_id, oldest = next(iter(self._sessions.items()))
            full = len(self._sessions) >= settings.max_sessions
            if not full and now - oldest.last_seen < settings.session_idle_timeout:
                break
            self._end_session(oldest_id, error="session_evicted")

    def _end_session(self, session_id: str, *, error: str | None = None) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        quietly(session.scope.tracing.end_all, error=error)
        if error:
            quietly(mark_error, session.span, error)
        end_span(session.span)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SESSION_SWEEP)
            quietly(self._evict, time.monotonic())


def _dispatcher(event: str, scope: HookScope) -> HookCallback:
    async def callback(input_data: Any, tool_use_id: str | None, context: Any) -> HookOutput:
        return await hook_dispatch.dispatch(scope, event, input_data, tool_use_id)

    return callback


def _observe(scope: HookScope, event: str, data: Mapping[str, Any]) -> None:
    """A short ``akto.hook_event`` span for an event the guard does not judge."""
    state = scope.tracing.session(text(data, "session_id"))
    attributes: dict[str, Any] = {}
    if event == _PERMISSION_DENIED:
        attributes[semconv.GEN_AI_TOOL_NAME] = text(data, "tool_name")
    parent = scope.tracing.parent_for(state, text(data, "agent_id"))
    end_span(
        scope.tracing.start_child(
            parent, semconv.SPAN_HOOK_EVENT, hook=event, attributes=attributes
        )
    )


def _remote_parent(headers: Mapping[str, str]) -> Span | None:
    """The CLI's span when the request carries W3C trace context, else None."""
    carrier = {key.lower(): value for key, value in headers.items()}
    if "traceparent" not in carrier:
        return None
    context = TraceContextTextMapPropagator().extract(carrier)
    span = trace.get_current_span(context)
    return span if span.get_span_context().is_valid else None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def run_serve(
    host: str,
    port: int,
    secret_path: Path,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    socket_path: Path | None = None,
    other_users: bool = False,
) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight and flush.

    The guard is :func:`akto_otel.configure`'s (``AKTO_*`` and ``OTEL_*`` settings).
    Raises the soft open-file limit to the hard one, listens on ``host:port`` and,
    given ``socket_path``, on that Unix socket too; prints one ``listening on URL``
    line once both are bound.
    """
    import signal

    from akto_otel.configure import configure

    secret = load_secret(secret_path)
    raise_descriptor_limit()

    async def main() -> None:
        guard = configure()
        server = HookServer(
            guard,
            secret,
            max_body=max_body,
            max_concurrency=max_concurrency,
            max_connections=max_connections,
            other_users=other_users,
        )
        try:
            url = await server.start(host, port)
            if socket_path is not None:
                await server.start_unix(socket_path)
        except BaseException:
            await server.close()
            raise
        if host not in _LOOPBACK:
            _log.warning(
                "akto-otel serve listens on %s, not loopback: other hosts can reach it", host
            )
        unix = f" and unix:{socket_path}" if socket_path is not None else ""
        print(
            f"akto-otel serve: listening on {url}{unix} "
            f"(AKTO_FAIL_MODE={guard.settings.fail_mode}, secret in {secret_path}, "
            f"at most {server.max_connections} connections)",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await server.close()

    asyncio.run(main())


_LOOPBACK = ("127.0.0.1", "localhost", "::1")
