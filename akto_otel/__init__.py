"""Akto guardrails and OpenTelemetry tracing for the Claude Agent SDK."""
