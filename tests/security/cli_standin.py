"""A scripted stand-in for the Claude Code CLI, spoken to through the SDK's Transport.

The real CLI honours a PreToolUse deny (it runs no tool and fires no PostToolUse for
the denied call, tried on the CLI bundled with claude-agent-sdk 0.2.190) and answers
initialize truthfully. To see what the guard does when either does not hold, a test
needs a peer that misbehaves on purpose: this one answers initialize with a chosen
reply, then fires the scripted hook events at every callback the SDK registered,
whatever the callbacks answered, and ends with a result message. The SDK, its
control protocol and the guard's callbacks are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from claude_agent_sdk import Transport

ARMED_REPLY: dict[str, Any] = {
    "commands": [],
    "hook_on_failure_supported": True,
    "hooks_applied": True,
}


class ScriptedCLI(Transport):
    def __init__(
        self,
        script: Sequence[tuple[str, Mapping[str, Any]]] = (),
        *,
        initialize_reply: Mapping[str, Any] | None = None,
    ) -> None:
        self.script = list(script)
        self.initialize_reply = dict(ARMED_REPLY if initialize_reply is None else initialize_reply)
        self.initialize_request: dict[str, Any] | None = None
        self.callbacks: dict[str, list[str]] = {}
        #: (event, what the SDK answered for it, in the CLI's wire form)
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.prompts: list[dict[str, Any]] = []
        self._out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count()
        self._runner: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        return None

    async def write(self, data: str) -> None:
        for line in data.splitlines():
            if not line.strip():
                continue
            message = json.loads(line)
            kind = message.get("type")
            if kind == "control_request" and message["request"]["subtype"] == "initialize":
                self.initialize_request = message["request"]
                for event, matchers in (message["request"].get("hooks") or {}).items():
                    self.callbacks[event] = [i for m in matchers for i in m["hookCallbackIds"]]
                await self._out.put(
                    {
                        "type": "control_response",
                        "response": {
                            "subtype": "success",
                            "request_id": message["request_id"],
                            "response": self.initialize_reply,
                        },
                    }
                )
            elif kind == "control_response":
                future = self._pending.pop(message["response"]["request_id"], None)
                if future is not None and not future.done():
                    future.set_result(message["response"])
            elif kind == "user":
                self.prompts.append(message)
                self._runner = asyncio.ensure_future(self._run())

    async def _call(self, event: str, callback_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        request_id = f"cli_req_{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self._out.put(
            {
                "type": "control_request",
                "request_id": request_id,
                "request": {
                    "subtype": "hook_callback",
                    "callback_id": callback_id,
                    "input": {"hook_event_name": event, **data},
                    "tool_use_id": data.get("tool_use_id"),
                },
            }
        )
        return await asyncio.wait_for(future, timeout=30)

    async def _run(self) -> None:
        stopped = False
        for event, data in self.script:
            for callback_id in self.callbacks.get(event, []):
                response = await self._call(event, callback_id, data)
                answer = response.get("response") or {}
                self.answers.append((event, answer))
                stopped = stopped or answer.get("continue") is False
            if stopped:
                break
        await self._out.put(
            {
                "type": "result",
                "subtype": "success",
                "duration_ms": 1,
                "duration_api_ms": 1,
                "is_error": False,
                "num_turns": 1,
                "session_id": "standin-session",
                "result": "stopped" if stopped else "done",
            }
        )

    async def read_messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            message = await self._out.get()
            if message is None:
                return
            yield message

    async def close(self) -> None:
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        await self._out.put(None)

    def is_ready(self) -> bool:
        return True

    async def end_input(self) -> None:
        await self._out.put(None)
