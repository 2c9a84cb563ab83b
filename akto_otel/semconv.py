"""Every span name, event name, attribute and metric name akto_otel emits.

A rename is one edit here. Stable and incubating OpenTelemetry names come from
the ``opentelemetry-semantic-conventions`` package; names in no released version of
it (the draft GenAI guardrail names behind
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``, MCP) are spelled here
with the document and commit they come from, as are the ``akto.*`` names.
tests/test_semconv_draft.py checks a real session's telemetry against the draft's
machine-readable list in tests/fixtures/genai_semconv_draft.json.

Usage::

    from akto_otel import semconv

    span.set_attribute(semconv.GEN_AI_TOOL_NAME, "Bash")
    span.add_event(semconv.EVENT_VERDICT, {semconv.AKTO_GUARDRAIL_DECISION: "deny"})
"""

from __future__ import annotations

from typing import Final

# The incubating GenAI names live under ``_incubating``: that is the package's
# documented import path for Development-status names, and the one the official
# opentelemetry-python-contrib GenAI instrumentations use.
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.semconv.schemas import Schemas

#: The semconv version the stable/incubating attributes follow (the tracer's schema URL):
#: 1.37.0 brought gen_ai.provider.name and gen_ai.input/output.messages, and is the
#: schema opentelemetry-util-genai declares too. The draft guardrail names are in no
#: released schema yet.
SCHEMA_URL: Final = Schemas.V1_37_0.value

# --- OpenTelemetry semantic conventions (from the package) -------------------
GEN_AI_OPERATION_NAME: Final = _gen_ai.GEN_AI_OPERATION_NAME
GEN_AI_PROVIDER_NAME: Final = _gen_ai.GEN_AI_PROVIDER_NAME
GEN_AI_AGENT_NAME: Final = _gen_ai.GEN_AI_AGENT_NAME
GEN_AI_AGENT_ID: Final = _gen_ai.GEN_AI_AGENT_ID
GEN_AI_CONVERSATION_ID: Final = _gen_ai.GEN_AI_CONVERSATION_ID
GEN_AI_TOOL_NAME: Final = _gen_ai.GEN_AI_TOOL_NAME
GEN_AI_TOOL_TYPE: Final = _gen_ai.GEN_AI_TOOL_TYPE
GEN_AI_TOOL_CALL_ID: Final = _gen_ai.GEN_AI_TOOL_CALL_ID
GEN_AI_TOOL_CALL_ARGUMENTS: Final = _gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
GEN_AI_TOOL_CALL_RESULT: Final = _gen_ai.GEN_AI_TOOL_CALL_RESULT
GEN_AI_INPUT_MESSAGES: Final = _gen_ai.GEN_AI_INPUT_MESSAGES
GEN_AI_OUTPUT_MESSAGES: Final = _gen_ai.GEN_AI_OUTPUT_MESSAGES
ERROR_TYPE: Final = error_attributes.ERROR_TYPE
SERVER_ADDRESS: Final = server_attributes.SERVER_ADDRESS
SERVER_PORT: Final = server_attributes.SERVER_PORT
HTTP_REQUEST_METHOD: Final = http_attributes.HTTP_REQUEST_METHOD

#: MCP (semantic-conventions-genai docs/gen-ai/mcp.md; ``mcp_attributes`` only in
#: opentelemetry-semantic-conventions >= 0.58b0, so spelled here): an MCP tool call's
#: ``execute_tool`` span carries the method, with no extra span.
MCP_METHOD_NAME: Final = "mcp.method.name"
MCP_METHOD_TOOLS_CALL: Final = "tools/call"

OPERATION_INVOKE_AGENT: Final = _gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
OPERATION_EXECUTE_TOOL: Final = _gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
#: The guardrail call's operation without the opt-in (the earlier draft's name, kept
#: so dashboards and recording rules keep matching).
OPERATION_RUN_GUARDRAIL: Final = "run_guardrail"

#: Log event carrying content when capture is EVENT_ONLY or SPAN_AND_EVENT
#: (semantic-conventions-genai model/gen-ai/events.yaml).
EVENT_CONTENT: Final = "gen_ai.client.inference.operation.details"

#: Without the opt-in, the guardrail span is ``run_guardrail akto``.
GUARDRAIL_COMPONENT: Final = "akto"

# --- Span names --------------------------------------------------------------
SPAN_USER_PROMPT: Final = "akto.user_prompt"
SPAN_HELD_ANSWER: Final = "akto.held_answer"
SPAN_STOP: Final = "akto.stop"
SPAN_SUBAGENT_STOP: Final = "akto.subagent_stop"
SPAN_PERMISSION_REQUEST: Final = "akto.permission_request"
SPAN_NOTIFICATION: Final = "akto.notification"
SPAN_PRE_COMPACT: Final = "akto.pre_compact"
SPAN_HOOK_EVENT: Final = "akto.hook_event"
#: The guardrail call span without the opt-in (the earlier draft's ``run_guardrail {component}``).
SPAN_RUN_GUARDRAIL: Final = f"{OPERATION_RUN_GUARDRAIL} {GUARDRAIL_COMPONENT}"


def invoke_agent_span_name(agent: str) -> str:
    """``invoke_agent {gen_ai.agent.name}``."""
    return f"{OPERATION_INVOKE_AGENT} {agent}"


def execute_tool_span_name(tool: str) -> str:
    """``execute_tool {gen_ai.tool.name}``."""
    return f"{OPERATION_EXECUTE_TOOL} {tool}"


# --- Event names -------------------------------------------------------------
EVENT_VERDICT: Final = "akto.guardrail.verdict"
EVENT_HOOK_ERROR: Final = "akto.hook.error"
EVENT_TOOL_FAILURE: Final = "akto.tool.failure"

# --- akto.* attributes -------------------------------------------------------
AKTO_HOOK: Final = "akto.hook"
AKTO_GUARDRAIL_DECISION: Final = "akto.guardrail.decision"
AKTO_GUARDRAIL_BEHAVIOUR: Final = "akto.guardrail.behaviour"
AKTO_GUARDRAIL_REASON: Final = "akto.guardrail.reason"
AKTO_GUARDRAIL_FAIL_OPEN: Final = "akto.guardrail.fail_open"
AKTO_GUARDRAIL_POLICY_NAME: Final = "akto.guardrail.policy_name"
AKTO_GUARDRAIL_SEVERITY: Final = "akto.guardrail.severity"
AKTO_GUARDRAIL_WINDOWS: Final = "akto.guardrail.windows"
AKTO_GUARDRAIL_CONTENT_CHARS: Final = "akto.guardrail.content_chars"
AKTO_GUARDRAIL_MASK_APPLIED: Final = "akto.guardrail.mask_applied"
#: True on a span whose call was allowed without a verdict (fail-open, Akto's own
#: failOpen, not configured); ``akto.guardrail.fault`` says why.
AKTO_GUARDRAIL_UNJUDGED: Final = "akto.guardrail.unjudged_call"
AKTO_GUARDRAIL_FAULT: Final = "akto.guardrail.fault"
#: The guardrail call's duration, on the hook span when AKTO_GUARDRAIL_SPANS=false
#: (otherwise the ``run_guardrail`` span's own duration says it).
AKTO_GUARDRAIL_DURATION_MS: Final = "akto.guardrail.duration_ms"
AKTO_CONTENT_DROPPED: Final = "akto.content.dropped"
AKTO_RECORD_TRUNCATED: Final = "akto.record.truncated"
AKTO_RECORD_ID: Final = "akto.record.id"
AKTO_TRUNCATED: Final = "akto.truncated"
AKTO_TOOL_DURATION_MS: Final = "akto.tool.duration_ms"
AKTO_TOOL_INTERRUPTED: Final = "akto.tool.interrupted"
AKTO_STOP_HOOK_ACTIVE: Final = "akto.stop.hook_active"
AKTO_STOP_REGENERATIONS: Final = "akto.stop.regenerations"
AKTO_STOP_GAVE_UP: Final = "akto.stop.gave_up"
AKTO_NOTIFICATION_TYPE: Final = "akto.notification.type"
AKTO_COMPACT_TRIGGER: Final = "akto.compact.trigger"
AKTO_PROMPT_ID: Final = "akto.prompt.id"

# --- Draft GenAI guardrail conventions (OTEL_SEMCONV_STABILITY_OPT_IN) ------
# Source: open-telemetry/semantic-conventions-genai at commit
# f5e3733b19bdb5cb9074c2ec26da9e375d52a40a, docs/gen-ai/gen-ai-guardrails.md and
# model/gen-ai/spans.yaml (span ``gen_ai.apply_guardrail.client``, event
# ``gen_ai.guardrail.result``), Development status. It replaced the
# gen-ai-security.md draft (run_guardrail, gen_ai.guardrail.verdict.type/target.*),
# whose names the package no longer emits.
#: The ``OTEL_SEMCONV_STABILITY_OPT_IN`` value that turns these names on, as the
#: opentelemetry-python-contrib GenAI instrumentations read it.
OPT_IN_GEN_AI_LATEST_EXPERIMENTAL: Final = "gen_ai_latest_experimental"
OPERATION_APPLY_GUARDRAIL: Final = "apply_guardrail"
#: ``gen_ai.guardrail.component.name``: the guardrail service, as the draft's
#: examples name theirs ("Amazon Bedrock Guardrails", "Azure AI Content Safety").
GUARDRAIL_COMPONENT_NAME: Final = "Akto"
#: ``gen_ai.provider.name`` (required on the span): no well-known value names a
#: guardrail service other than the clouds', so the custom value names Akto, the
#: provider this CLIENT call goes to (not ``anthropic``: no model is called here).
GUARDRAIL_PROVIDER_NAME: Final = "akto"
#: ``apply_guardrail {gen_ai.guardrail.component.name}``
SPAN_APPLY_GUARDRAIL: Final = f"{OPERATION_APPLY_GUARDRAIL} {GUARDRAIL_COMPONENT_NAME}"
EVENT_GUARDRAIL_RESULT: Final = "gen_ai.guardrail.result"
GEN_AI_GUARDRAIL_COMPONENT_NAME: Final = "gen_ai.guardrail.component.name"
GEN_AI_GUARDRAIL_POLICY_ID: Final = "gen_ai.guardrail.policy.id"
GEN_AI_GUARDRAIL_POLICY_VERSION: Final = "gen_ai.guardrail.policy.version"
GEN_AI_GUARDRAIL_POLICY_RULE_ID: Final = "gen_ai.guardrail.policy.rule.id"
GEN_AI_GUARDRAIL_RESULT_TYPE: Final = "gen_ai.guardrail.result.type"
GEN_AI_GUARDRAIL_RESULT_VALUE: Final = "gen_ai.guardrail.result.value"
GEN_AI_GUARDRAIL_RESULT_REASON: Final = "gen_ai.guardrail.result.reason"
GEN_AI_GUARDRAIL_SOURCE: Final = "gen_ai.guardrail.source"
GEN_AI_GUARDRAIL_RISK_CATEGORY: Final = "gen_ai.guardrail.risk.category"
GEN_AI_GUARDRAIL_RISK_SCORE: Final = "gen_ai.guardrail.risk.score"
#: Akto's own result fields, kept as Akto names them (``result.type``), with their
#: values as Akto gave them (``result.value``): never a generalized allow/deny.
AKTO_RESULT_ALLOWED: Final = "Allowed"
AKTO_RESULT_BEHAVIOUR: Final = "behaviour"
#: ``gen_ai.guardrail.source``: Akto's terms for the side it judges (the
#: ``guardrails`` / ``response_guardrails`` flags, ``requestResult`` / ``responseResult``).
AKTO_SOURCE_REQUEST: Final = "request"
AKTO_SOURCE_RESPONSE: Final = "response"

# --- Instrumentation scopes and metric names ---------------------------------
SCOPE_RECORDS: Final = "akto.records"
#: The logger scope of the content events (EVENT_ONLY / SPAN_AND_EVENT).
SCOPE_CONTENT: Final = "akto_otel"
METRIC_GUARDRAIL_DECISIONS: Final = "akto.guardrail.decisions"
METRIC_GUARDRAIL_DURATION: Final = "akto.guardrail.duration"
METRIC_GUARDRAIL_UNJUDGED: Final = "akto.guardrail.unjudged"
METRIC_HOOK_DURATION: Final = "akto.hook.duration"
METRIC_HOOK_ERRORS: Final = "akto.hook.errors"
METRIC_EXPORTER_RECORDS: Final = "akto.exporter.records"
METRIC_RECORDS_TRUNCATED: Final = "akto.records.truncated"
METRIC_EXPORTER_DURATION: Final = "akto.exporter.duration"
METRIC_EXPORTER_QUEUE_SIZE: Final = "akto.exporter.queue.size"
#: Connections ``akto-otel serve`` closed before they delivered a request, by reason.
METRIC_SERVE_CONNECTIONS_DROPPED: Final = "akto.serve.connections.dropped"

# --- An armed guard and denies that must hold (akto_otel/armed.py) ------------
#: A tool call the guard denied showed up as run (PostToolUse / PostToolUseFailure).
EVENT_GUARDRAIL_BREACH: Final = "akto.guardrail.breach"
METRIC_GUARDRAIL_BREACHES: Final = "akto.guardrail.breaches"
#: Sessions whose CLI cannot block on a failed hook, or did not apply our hooks.
METRIC_GUARDRAIL_UNARMED: Final = "akto.guardrail.unarmed"
AKTO_GUARDRAIL_ARMING_FAULT: Final = "akto.guardrail.arming_fault"
