"""Akto's reference connector, rebuilt from the wire contract for comparison.

What it does per call, as the contract (``shared/akto-contract.md``) describes the
reference: the record dict is built and ``json.dumps``-ed on every call (the nested
JSON strings too), the URL with its flags is built per call, and the POST is a
``urllib.request.urlopen`` (a new TCP connection every time; it also builds an
unverified SSL context per call, as the reference does even for ``http://``) run
in ``asyncio.to_thread`` (the loop's default executor: ``min(32, cpus + 4)`` threads).
Its four log lines per call to a file are left out, which makes it faster than
the real thing: ratios against it are conservative.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

__all__ = ["ReferenceConnector"]

_TOOL_TAGS_KEY = "ai-agent"


class ReferenceConnector:
    """The reference connector's PreToolUse and ingestion paths."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str = "",
        timeout: float = 5.0,
        connector: str = "claude_agent_sdk",
        connector_value: str = "claude_agent_sdk",
        akto_host: str = "api.anthropic.com",
        client_ip: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.connector = connector
        self.connector_value = connector_value
        self.akto_host = akto_host
        self.client_ip = client_ip or "0.0.0.0"
        #: Calls that failed (the reference fails open and would hide them).
        self.failures = 0

    # ------------------------------------------------------------------ wire

    def url(self, *, guardrails: bool, ingest_data: bool, response_guardrails: bool = False) -> str:
        params = []
        if guardrails:
            params.append("guardrails=true")
        if response_guardrails:
            params.append("response_guardrails=true")
        params.append(f"akto_connector={self.connector}")
        if ingest_data:
            params.append("ingest_data=true")
        return f"{self.base_url}/api/http-proxy?{'&'.join(params)}"

    def post_json(self, url: str, payload: Mapping[str, Any]) -> Any:
        """One blocking POST on a new connection; the answer's JSON (or text)."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["authorization"] = self.token
        request = urllib.request.Request(
            url, data=json.dumps(payload).encode("utf-8"), headers=headers, method="POST"
        )
        context = ssl._create_unverified_context()
        with urllib.request.urlopen(request, context=context, timeout=self.timeout) as response:
            raw = response.read().decode("utf-8")
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    async def post_json_async(self, url: str, payload: Mapping[str, Any]) -> Any:
        return await asyncio.to_thread(self.post_json, url, payload)

    # ------------------------------------------------------------------ records

    def _record(
        self,
        *,
        path: str,
        request_headers: str,
        response_headers: str,
        request_payload: str,
        response_payload: str,
        tags: Mapping[str, str],
    ) -> dict[str, Any]:
        return {
            "path": path,
            "requestHeaders": request_headers,
            "responseHeaders": response_headers,
            "method": "POST",
            "requestPayload": request_payload,
            "responsePayload": response_payload,
            "ip": self.client_ip,
            "destIp": "127.0.0.1",
            "time": str(int(time.time() * 1000)),
            "statusCode": "200",
            "type": "HTTP/1.1",
            "status": "200",
            "akto_account_id": "1000000",
            "akto_vxlan_id": "0",
            "is_pending": "false",
            "source": "MIRRORING",
            "direction": None,
            "process_id": None,
            "socket_id": None,
            "daemonset_id": None,
            "enabled_graph": None,
            "tag": json.dumps(dict(tags)),
            "metadata": json.dumps(dict(tags)),
            "contextSource": "AGENTIC",
        }

    def _tool_record(
        self,
        hook: str,
        tool_name: str,
        request_body: Any,
        response_body: Any,
        response_headers: Mapping[str, str],
    ) -> dict[str, Any]:
        return self._record(
            path=f"/tool/{tool_name}",
            request_headers=json.dumps(
                {"host": self.akto_host, "x-claude-hook": hook, "content-type": "application/json"}
            ),
            response_headers=json.dumps(response_headers),
            request_payload=json.dumps(request_body),
            response_payload=json.dumps(response_body),
            tags={"gen-ai": "Gen AI", _TOOL_TAGS_KEY: self.connector_value},
        )

    def tool_request_record(self, tool_name: str, tool_input: Any) -> dict[str, Any]:
        """The PreToolUse record of a built-in tool (the contract's shape)."""
        return self._tool_record(
            "PreToolUse",
            tool_name,
            {"body": tool_input, "toolName": tool_name},
            {},
            {"x-claude-hook": "PreToolUse"},
        )

    def tool_result_record(
        self, tool_name: str, tool_input: Any, tool_response: Any
    ) -> dict[str, Any]:
        """The PostToolUse record of a built-in tool."""
        return self._tool_record(
            "PostToolUse",
            tool_name,
            {"body": {"toolName": tool_name, "toolArgs": tool_input}},
            {"body": {"result": tool_response}},
            {"x-claude-hook": "PostToolUse", "content-type": "application/json"},
        )

    # ------------------------------------------------------------------ hooks

    async def check_tool(self, tool_name: str, tool_input: Any) -> tuple[bool, str, str]:
        """The guardrail call of PreToolUse: (allowed, reason, behaviour); fails open."""
        if not tool_input:
            return True, "", ""
        try:
            result = await self.post_json_async(
                self.url(guardrails=True, ingest_data=False),
                self.tool_request_record(tool_name, tool_input),
            )
        except Exception:
            self.failures += 1
            return True, "", ""
        if not isinstance(result, dict):
            return True, "", ""
        data = result.get("data") or {}
        verdict = data.get("guardrailsResult") or {}
        behaviour = verdict.get("behaviour", "") or verdict.get("Behaviour", "")
        return bool(verdict.get("Allowed", True)), str(verdict.get("Reason", "")), str(behaviour)

    async def pre_tool_use(
        self, input_data: Mapping[str, Any], tool_use_id: str | None, context: Any
    ) -> dict[str, Any]:
        tool_name = str(input_data.get("tool_name") or "")
        tool_input = input_data.get("tool_input") or {}
        allowed, reason, behaviour = await self.check_tool(tool_name, tool_input)
        if allowed or behaviour.strip().lower() in ("warn", "alert"):
            return {}
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": (
                    f"Blocked by Akto Guardrails: {reason or 'Policy violation'}"
                ),
            }
        }

    async def ingest_tool_result(
        self, tool_name: str, tool_input: Any, tool_response: Any, *, sync_mode: bool = True
    ) -> bool:
        """PostToolUse's ingestion: one http-proxy POST per record. True if it went through."""
        try:
            await self.post_json_async(
                self.url(guardrails=not sync_mode, ingest_data=True),
                self.tool_result_record(tool_name, tool_input, tool_response),
            )
        except Exception:
            self.failures += 1
            return False
        return True
