"""Guardrail policies for the Akto emulator.

A policy is an ordered list of regex rules evaluated against one Akto record
(see ``/work/shared/akto-contract.md``). It answers the ``guardrailsResult``
object the real Akto data-ingestion service would answer.

Example::

    from akto_otel.emulator.policy import Policy, Rule

    policy = Policy((
        Rule("no-rm", ("PreToolUse",), "request", r"rm\\s+-rf", reason="destructive"),
    ))
    verdict = policy.evaluate(record, "request")   # {"Allowed": False, ...}

Policy files (JSON, or YAML when PyYAML is installed) look like::

    {"rules": [{"name": "no-rm", "hooks": ["PreToolUse"], "target": "request",
                "pattern": "rm\\\\s+-rf", "behaviour": "block", "reason": "destructive",
                "severity": "HIGH", "mask": null}]}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

__all__ = [
    "Policy",
    "PolicyError",
    "Rule",
    "Side",
    "Target",
    "allowed_result",
    "default_policy",
    "load_policy",
]

Target = Literal["request", "response", "tool"]
Side = Literal["request", "response"]

_TARGETS: frozenset[str] = frozenset({"request", "response", "tool"})
_RULE_FIELDS: frozenset[str] = frozenset(
    {"name", "hooks", "target", "pattern", "behaviour", "behavior", "reason", "severity", "mask"}
)


class PolicyError(ValueError):
    """A policy document or rule is invalid."""


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """One guardrail rule.

    ``target`` selects the text searched: ``"request"`` the record's
    ``requestPayload``, ``"response"`` its ``responsePayload``, ``"tool"`` its
    ``path``. ``hooks`` restricts the rule to records whose ``requestHeaders``
    carry one of these ``x-claude-hook`` values (empty: any hook). A rule with
    ``mask`` set does not block: every match is replaced by ``mask``.
    """

    name: str
    hooks: tuple[str, ...]
    target: Target
    pattern: str
    behaviour: str = "block"
    reason: str = ""
    severity: str = "HIGH"
    mask: str | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hooks", tuple(self.hooks))
        if self.target not in _TARGETS:
            raise PolicyError(
                f"rule {self.name!r} field 'target': must be one of request, response, tool"
            )
        if self.mask is not None and self.target == "tool":
            raise PolicyError(
                f"rule {self.name!r} field 'mask': mask rules need target request or response"
            )
        try:
            object.__setattr__(self, "regex", _compile(self.pattern))
        except re.error as exc:
            raise PolicyError(f"rule {self.name!r} field 'pattern': invalid regex: {exc}") from exc


def allowed_result() -> dict[str, Any]:
    """The ``guardrailsResult`` of a record that no rule matched."""
    return {
        "Allowed": True,
        "Modified": False,
        "ModifiedPayload": "",
        "Reason": "",
        "Metadata": {},
        "behaviour": "",
    }


_HOOK_RE = re.compile(r'"x-claude-hook"\s*:\s*"([A-Za-z0-9_]+)"')


def _hook_of(record: Mapping[str, Any]) -> str:
    raw = record.get("requestHeaders")
    if isinstance(raw, str):
        found = _HOOK_RE.search(raw)
        if found is not None:
            return found.group(1)
    for key in ("requestHeaders", "responseHeaders"):
        raw = record.get(key)
        headers: Any = raw
        if isinstance(raw, str):
            try:
                headers = json.loads(raw)
            except ValueError:
                continue
        if isinstance(headers, Mapping):
            hook = headers.get("x-claude-hook")
            if isinstance(hook, str) and hook:
                return hook
    return ""


def _matches(rule: Rule, text: str) -> bool:
    """Whether ``rule``'s pattern occurs in ``text``: every policy match goes through here.

    The packaged rules match in time linear in ``text`` (tests/test_emulator_stall.py);
    the server runs this off its event loop within a per-record time budget.
    """
    return rule.regex.search(text) is not None


def _field_text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _decoded_strings(text: str) -> str | None:
    """All string values of a JSON text joined by newlines (None if not JSON)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    parts: list[str] = []
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                parts.append(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return "\n".join(parts)


_TARGET_FIELDS: dict[str, str] = {
    "request": "requestPayload",
    "response": "responsePayload",
    "tool": "path",
}


class _Texts:
    """Lazily computed texts of one record, as Akto's policies read them.

    Akto decodes a payload and reads its string values: a rule on ``request`` or
    ``response`` matches the JSON-decoded strings (keys and values, one per
    line), never the JSON text with its escapes; a payload that is not JSON is
    matched as it is. ``tool`` matches the record's path.
    """

    __slots__ = ("_decoded", "_record")

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._record = record
        self._decoded: dict[str, str] = {}

    def raw(self, target: str) -> str:
        return _field_text(self._record, _TARGET_FIELDS[target])

    def read(self, target: str) -> str:
        """The text rules on ``target`` search."""
        if target not in self._decoded:
            text = self.raw(target)
            decoded = None if target == "tool" else _decoded_strings(text)
            self._decoded[target] = text if decoded is None else decoded
        return self._decoded[target]

    def search(self, rule: Rule) -> bool:
        return _matches(rule, self.read(rule.target))


def _mask_text(text: str, rules: list[Rule]) -> tuple[str, int]:
    """``text`` with every match of each masking rule replaced, and how many were.

    The one place masks are applied (as :func:`_matches` is for matching).
    """
    total = 0
    for rule in rules:
        assert rule.mask is not None
        text, count = rule.regex.subn(rule.mask.replace("\\", "\\\\"), text)
        total += count
    return text, total


def _mask_value(value: Any, rules: list[Rule]) -> tuple[Any, int]:
    if isinstance(value, str):
        return _mask_text(value, rules)
    if isinstance(value, dict):
        changed = 0
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key], count = _mask_value(item, rules)
            changed += count
        return out, changed
    if isinstance(value, list):
        changed = 0
        items: list[Any] = []
        for item in value:
            new, count = _mask_value(item, rules)
            items.append(new)
            changed += count
        return items, changed
    return value, 0


def _apply_masks(text: str, rules: list[Rule]) -> tuple[str, int]:
    """Mask string values inside a JSON text (or the raw text if not JSON)."""
    try:
        masked, count = _mask_value(json.loads(text), rules)
    except (ValueError, RecursionError):
        count = 0
    if count:
        return json.dumps(masked), count
    # Not JSON, or no string value matched: mask the raw text.
    return _mask_text(text, rules)


@dataclass(frozen=True)
class Policy:
    """An ordered tuple of rules; the first matching blocking rule wins."""

    rules: tuple[Rule, ...] = ()
    _by_side: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        object.__setattr__(self, "rules", rules)
        by_side = {
            "request": tuple(r for r in rules if r.target in ("request", "tool")),
            "response": tuple(r for r in rules if r.target == "response"),
        }
        object.__setattr__(self, "_by_side", by_side)

    @classmethod
    def from_dict(cls, document: Any, *, source: str = "policy") -> Policy:
        """Build a policy from a parsed document ``{"rules": [...]}``."""
        return _parse_document(document, source)

    def evaluate(self, record: Mapping[str, Any], side: Side) -> dict[str, Any]:
        """Return the ``guardrailsResult`` for ``record`` on one side."""
        try:
            candidates = self._by_side[side]
        except KeyError:
            raise ValueError(f"side must be 'request' or 'response', not {side!r}") from None
        if not candidates:
            return allowed_result()
        hook: str | None = None
        texts = _Texts(record)
        masks: list[Rule] = []
        for rule in candidates:
            if rule.hooks:
                if hook is None:
                    hook = _hook_of(record)
                if hook not in rule.hooks:
                    continue
            if rule.mask is not None:
                masks.append(rule)
                continue
            if texts.search(rule):
                return {
                    "Allowed": False,
                    "Modified": False,
                    "ModifiedPayload": "",
                    "Reason": rule.reason,
                    "Metadata": {
                        "policy_name": rule.name,
                        "rule_violated": rule.name,
                        "severity": rule.severity,
                    },
                    "behaviour": rule.behaviour,
                }
        if masks:
            payload = texts.raw(side)
            masked, count = _apply_masks(payload, masks)
            if count:
                applied = [r for r in masks if texts.search(r)] or masks
                first = applied[0]
                return {
                    "Allowed": True,
                    "Modified": True,
                    "ModifiedPayload": masked,
                    "Reason": first.reason,
                    "Metadata": {
                        "policy_name": first.name,
                        "rule_violated": ", ".join(r.name for r in applied),
                        "severity": first.severity,
                    },
                    "behaviour": "",
                }
        return allowed_result()


def _parse_rule(index: int, raw: Any, source: str) -> Rule:
    def fail(field_name: str, message: str) -> PolicyError:
        return PolicyError(f"{source}: rule {index} field '{field_name}': {message}")

    if not isinstance(raw, Mapping):
        raise PolicyError(f"{source}: rule {index}: must be an object")
    for key in raw:
        if key not in _RULE_FIELDS:
            raise fail(str(key), "unknown field")

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "required non-empty string")

    hooks_raw = raw.get("hooks", [])
    if hooks_raw is None:
        hooks_raw = []
    if isinstance(hooks_raw, str):
        hooks_raw = [hooks_raw]
    if not isinstance(hooks_raw, list) or not all(isinstance(h, str) and h for h in hooks_raw):
        raise fail("hooks", "must be a list of hook event names")

    target = raw.get("target", "request")
    if target not in _TARGETS:
        raise fail("target", "must be one of request, response, tool")

    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise fail("pattern", "required non-empty string (a regex)")
    try:
        _compile(pattern)
    except re.error as exc:
        raise fail("pattern", f"invalid regex: {exc}") from exc

    if "behaviour" in raw and "behavior" in raw:
        raise fail("behavior", "give either 'behaviour' or 'behavior', not both")
    behaviour = raw.get("behaviour", raw.get("behavior", "block"))
    if not isinstance(behaviour, str) or not behaviour:
        raise fail("behaviour", "must be a non-empty string (block, warn, alert, approval)")

    mask = raw.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise fail("mask", "must be a string or null")
    if mask is not None and target == "tool":
        raise fail("mask", "mask rules need target request or response")

    kind = "Masked by" if mask is not None else "Violated"
    default_reason = f"{kind} policy '{name}'"
    reason = raw.get("reason", default_reason)
    if not isinstance(reason, str):
        raise fail("reason", "must be a string")

    severity = raw.get("severity", "HIGH")
    if not isinstance(severity, str) or not severity:
        raise fail("severity", "must be a non-empty string")

    return Rule(
        name=name,
        hooks=tuple(hooks_raw),
        target=cast(Target, target),
        pattern=pattern,
        behaviour=behaviour,
        reason=reason,
        severity=severity,
        mask=mask,
    )


def _parse_document(document: Any, source: str) -> Policy:
    if not isinstance(document, Mapping):
        raise PolicyError(f"{source}: top level must be an object with a 'rules' list")
    rules_raw = document.get("rules")
    if not isinstance(rules_raw, list):
        raise PolicyError(f"{source}: field 'rules' must be a list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(rules_raw):
        rule = _parse_rule(index, raw, source)
        if rule.name in seen:
            raise PolicyError(
                f"{source}: rule {index} field 'name': duplicate rule name {rule.name!r}"
            )
        seen.add(rule.name)
        rules.append(rule)
    return Policy(tuple(rules))


def _load_yaml(text: str, source: str) -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PolicyError(
            f"{source}: loading a YAML policy needs PyYAML (pip install 'akto-otel[yaml]')"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: invalid YAML: {exc}") from exc


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load a policy from a JSON file, or a YAML file (``.yaml``/``.yml``)."""
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{source}: cannot read policy file: {exc}") from exc
    if file.suffix.lower() in (".yaml", ".yml"):
        document = _load_yaml(text, source)
    else:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise PolicyError(f"{source}: invalid JSON: {exc}") from exc
    return _parse_document(document, source)


def default_policy() -> Policy:
    """The demo policy packaged as ``akto_otel/emulator/default_policy.json``."""
    text = (
        resources.files("akto_otel.emulator")
        .joinpath("default_policy.json")
        .read_text(encoding="utf-8")
    )
    return _parse_document(json.loads(text), "default_policy.json")
