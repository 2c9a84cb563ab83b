"""One Claude Code command hook -> ``akto-otel serve``'s Unix socket (stdlib only).

``akto-otel claude-settings --transport command`` prints hooks that run this file
by its path, ``python -I -S hook_forward.py --socket PATH --event EVENT``: it must
not import akto_otel (nor anything outside the standard library), so each event
costs one small interpreter start, not the package's imports.

It reads the event's JSON from stdin, checks that the socket's directory is this
user's and no one else can write it, connects, checks with ``SO_PEERCRED`` that the
process listening is this user's too (before sending a byte), posts the JSON to
``/hook/EVENT`` and prints the server's answer (the hook output JSON) with exit 0.

When the server is missing, hung past ``--timeout``, not this user's, or answers
anything but a JSON object with 200: with ``--block`` (the judging events in
fail-closed mode) it exits 2 with the reason on stderr, which the CLI turns into a
block of the prompt or tool call; on Stop, SubagentStop, PostToolUse and
PostToolUseFailure, where exit 2 blocks nothing (see ``_END_TURN_EVENTS``), it prints
``{"continue": false}`` instead, ending the turn. Without ``--block`` it exits 1 (a
non-blocking hook error: the CLI goes on).
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys
import time

# Neither json nor re on the way of an answer: importing them is most of this
# script's start-up (about 13 ms of the interpreter's import time).
#: Where exit 2 does not block: on Stop and SubagentStop it means "keep writing"
#: (again after every answer while the server is down), on PostToolUse and
#: PostToolUseFailure it shows the reason next to the unjudged output. There a
#: failure ends the turn instead (``continue: false``), before the model reads on.
_END_TURN_EVENTS = ("Stop", "SubagentStop", "PostToolUse", "PostToolUseFailure")
_MAX_ANSWER = 64 * 1024 * 1024
_HEX = frozenset("0123456789abcdef")


def _is_event(name: str) -> bool:
    return 0 < len(name) <= 64 and name.isascii() and name.isalpha()


def _is_traceparent(value: str) -> bool:
    parts = value.split("-")
    return [len(p) for p in parts] == [2, 32, 16, 2] and set("".join(parts)) <= _HEX


class _Failure(Exception):
    pass


def _check_path(path: str) -> None:
    uid = os.geteuid()
    folder = os.path.dirname(path) or "."
    try:
        info = os.lstat(folder)
        sock = os.lstat(path)
    except FileNotFoundError:
        raise _Failure(f"{path}: no socket (is akto-otel serve running?)") from None
    except OSError as exc:
        raise _Failure(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise _Failure(f"{folder}: not a directory of this user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _Failure(f"{folder}: writable by other users")
    if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid != uid:
        raise _Failure(f"{path}: not a socket of this user")


def _check_peer(sock: socket.socket) -> None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return  # no peer credentials here: the directory's checks stand alone
    _, uid, _ = struct.unpack("=iII", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    if uid != os.geteuid():
        raise _Failure(f"the process on the socket is another user's (uid {uid})")


def forward(path: str, event: str, body: bytes, timeout: float) -> bytes:
    """The server's answer to ``body`` for ``event``; :class:`_Failure` otherwise."""
    _check_path(path)
    deadline = time.monotonic() + timeout
    head = [
        f"POST /hook/{event} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    parent = os.environ.get("TRACEPARENT", "")
    if _is_traceparent(parent):
        head.append(f"traceparent: {parent}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            _check_peer(sock)
            sock.sendall(request)
            size = 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > _MAX_ANSWER:
                    raise _Failure("the answer is too large")
    except TimeoutError:
        raise _Failure(f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise _Failure(f"{path}: {exc.strerror or exc}") from None
    return _answer(b"".join(chunks))


def _answer(raw: bytes) -> bytes:
    head, separator, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if not separator or len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise _Failure("not an HTTP answer")
    if parts[1] != b"200":
        raise _Failure(f"HTTP {parts[1].decode(errors='replace')}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or b"0")
            if len(body) < length:  # the server closed mid-answer: a part is no answer
                raise _Failure("the answer was cut short")
            body = body[:length]
    # The server is this user's (checked above) and answers JSON objects only; what
    # is checked here is that an answer is one at all (the CLI parses it).
    text = body.strip()
    if not (text.startswith(b"{") and text.endswith(b"}")):
        raise _Failure("the answer is not a JSON object")
    return body


def _fail(event: str, reason: str, block: bool) -> int:
    message = f"akto-otel: the guard could not answer {event}: {reason}"
    if block and event in _END_TURN_EVENTS:
        import json

        sys.stdout.write(json.dumps({"continue": False, "stopReason": message}))
        print(message, file=sys.stderr)
        return 0
    print(message, file=sys.stderr)
    return 2 if block else 1


def main(argv: list[str]) -> int:
    path, event, timeout, block = "", "", 60.0, False
    args = iter(argv)
    for arg in args:
        if arg == "--socket":
            path = next(args, "")
        elif arg == "--event":
            event = next(args, "")
        elif arg == "--timeout":
            try:
                timeout = float(next(args, "60"))
            except ValueError:
                timeout = 60.0
        elif arg == "--block":
            block = True
    if not _is_event(event) or not path:
        return _fail(
            event or "?", "usage: --socket PATH --event NAME [--timeout S] [--block]", True
        )
    try:
        body = sys.stdin.buffer.read()
        answer = forward(path, event, body, timeout)
    except _Failure as exc:
        return _fail(event, str(exc), block)
    except Exception as exc:  # anything unforeseen still ends in the fail mode's answer
        return _fail(event, type(exc).__name__, block)
    sys.stdout.buffer.write(answer)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
