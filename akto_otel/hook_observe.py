"""PreCompact, Notification and PermissionRequest: observed, never judged.

Each becomes a short span under the tool call or (sub)agent it belongs to, with what
it names (the compaction trigger, the notification type, the tool asked about);
the hook answers ``{}``, so the CLI goes on as it would without us.

Usage::

    output = await hook_observe.notification(scope, {"session_id": "s",
                                                     "notification_type": "idle"}, Call())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from akto_otel import semconv
from akto_otel.hook_scope import Call, HookOutput, HookScope, text
from akto_otel.spans import end_span

__all__ = ["notification", "permission_request", "pre_compact"]


async def pre_compact(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    return _observe("PreCompact", scope, data)


async def notification(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    return _observe("Notification", scope, data)


async def permission_request(scope: HookScope, data: Mapping[str, Any], call: Call) -> HookOutput:
    return _observe("PermissionRequest", scope, data)


def _observe(event: str, scope: HookScope, data: Mapping[str, Any]) -> HookOutput:
    state = scope.tracing.session(text(data, "session_id"))
    tool_use_id = text(data, "tool_use_id")
    parent = state.tools.get(tool_use_id) if tool_use_id else None
    if parent is None:
        parent = scope.tracing.parent_for(state, text(data, "agent_id"))
    attributes: dict[str, Any] = {}
    if event == "PermissionRequest":
        attributes[semconv.GEN_AI_TOOL_NAME] = text(data, "tool_name")
    elif event == "Notification":
        attributes[semconv.AKTO_NOTIFICATION_TYPE] = text(data, "notification_type")
    elif event == "PreCompact":
        attributes[semconv.AKTO_COMPACT_TRIGGER] = text(data, "trigger")
    name = {
        "PermissionRequest": semconv.SPAN_PERMISSION_REQUEST,
        "Notification": semconv.SPAN_NOTIFICATION,
        "PreCompact": semconv.SPAN_PRE_COMPACT,
    }.get(event, semconv.SPAN_HOOK_EVENT)
    end_span(scope.tracing.start_child(parent, name, hook=event, attributes=attributes))
    return {}
