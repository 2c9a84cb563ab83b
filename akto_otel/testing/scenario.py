"""Scenario language for the scripted fake Anthropic Messages API.

A :class:`Scenario` is a script of model replies for one conversation. The fake
server picks the scenario from the conversation's **first user message** (the
first scenario whose ``match`` regular expression is found in it with
:func:`re.search`; a scenario whose ``match`` is ``None`` is the fallback) and
picks the step from the **number of assistant turns** already present in the
request's ``messages``. Nothing is remembered between requests, so any number of
agent sessions can share one server.

Step kinds:

* :class:`Text` -- an assistant text reply (``stop_reason: end_turn``);
  ``Text("a", "b")`` replies with two text blocks in one turn, ``thinking=``
  opens the turn with a thinking block, ``chunk=`` streams each text as
  deltas of that many characters.
* :class:`ToolUse` -- one ``tool_use`` block (``stop_reason: tool_use``); may be
  put directly in a step list.
* :class:`ToolUses` -- several ``tool_use`` blocks in one assistant turn,
  optionally preceded by text.
* :class:`Step` -- the general form: ``Step(text=..., tool_uses=[...])``.
* a plain ``str`` in a step list is shorthand for ``Text(...)``.

When the script runs out, the last text-only step is repeated (``"Done."`` when
the script has none), so the agent always ends its turn.

Tips: a subagent started by ``ToolUse("Agent", {"description": ..., "prompt":
..., "subagent_type": "general-purpose", "run_in_background": False})`` (the
parent's side is :func:`delegation`) is a conversation of its own whose first
user message is that ``prompt``: give it its own scenario. With
``ClaudeAgentOptions(output_format=...)`` the final answer is
``ToolUse("StructuredOutput", {...})``. Several prompts of one
``ClaudeSDKClient`` session are one conversation: the steps continue, also
across ``/compact``.

Example::

    from akto_otel.testing import Scenario, Text, ToolUse

    scenarios = [
        Scenario(
            match=r"(?i)list files",
            steps=[ToolUse("Bash", {"command": "ls"}), Text("Here are the files.")],
        ),
        Scenario(steps=["I can only list files."]),  # fallback
    ]

The same scenarios as YAML (load with :func:`load_scenarios`)::

    scenarios:
      - match: "(?i)list files"
        steps:
          - tool_use: {name: Bash, input: {command: "ls"}}
          - text: "Here are the files."
      - steps:
          - "I can only list files."
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

__all__ = [
    "DEFAULT_FINAL_TEXT",
    "Scenario",
    "Step",
    "StepLike",
    "Text",
    "ToolUse",
    "ToolUses",
    "load_scenarios",
    "scenarios_from_data",
    "select_scenario",
]

DEFAULT_FINAL_TEXT = "Done."
"""Text replied once a script has run out and has no text-only step to repeat."""


@dataclass(frozen=True)
class ToolUse:
    """One ``tool_use`` block the fake model asks the agent to run.

    ``id`` is normally left ``None``: the server then generates a fresh
    ``toolu_...`` id for every reply.
    """

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ToolUse needs a tool name")
        # Round-trip through JSON: rejects unserialisable input early and
        # decouples the step from the caller's (mutable) dict.
        object.__setattr__(self, "input", json.loads(json.dumps(dict(self.input))))

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(self.input, sort_keys=True), self.id))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolUse:
        """Build from ``{"name": ..., "input": {...}, "id": optional}``."""
        _check_keys(data, {"name", "input", "id"}, "tool_use")
        name = data.get("name")
        if not isinstance(name, str):
            raise ValueError(f"tool_use needs a string 'name', got {data!r}")
        tool_input = data.get("input") or {}
        if not isinstance(tool_input, Mapping):
            raise ValueError(f"tool_use 'input' must be a mapping, got {tool_input!r}")
        tool_id = data.get("id")
        if tool_id is not None and not isinstance(tool_id, str):
            raise ValueError(f"tool_use 'id' must be a string, got {tool_id!r}")
        return cls(name=name, input=tool_input, id=tool_id)

    def to_dict(self) -> dict[str, Any]:
        """The inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {"name": self.name, "input": dict(self.input)}
        if self.id is not None:
            out["id"] = self.id
        return out


@dataclass(frozen=True, eq=False)
class Step:
    """One assistant turn: optional text followed by zero or more tool uses.

    ``delay`` (seconds) holds the reply back, to simulate a slow model.
    ``input_tokens`` overrides the reported ``usage.input_tokens``: a value near
    the model's context window (e.g. ``990_000``) makes the CLI auto-compact
    after this turn (``PreCompact`` with ``trigger: "auto"``).
    """

    text: str | None = None
    tool_uses: tuple[ToolUse, ...] = ()
    delay: float = 0.0
    input_tokens: int | None = None
    #: Further text blocks of the same turn, after ``text`` (the CLI emits one
    #: AssistantMessage per block).
    more_text: tuple[str, ...] = ()
    #: A thinking block that opens the turn.
    thinking: str | None = None
    #: Stream each text block as deltas of this many characters (0: one delta).
    chunk: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_uses", tuple(self.tool_uses))
        object.__setattr__(self, "more_text", tuple(self.more_text))
        if self.more_text and self.text is None:
            raise ValueError("more_text needs a first text")
        if self.chunk < 0:
            raise ValueError("Step.chunk must be >= 0")
        for tool_use in self.tool_uses:
            if not isinstance(tool_use, ToolUse):
                raise TypeError(f"tool_uses must hold ToolUse objects, got {tool_use!r}")
        if self.text is None and not self.tool_uses:
            raise ValueError("a Step needs text, tool uses or both")
        if self.delay < 0:
            raise ValueError("Step.delay must be >= 0")
        if self.input_tokens is not None and self.input_tokens < 0:
            raise ValueError("Step.input_tokens must be >= 0")

    def _key(self) -> tuple[Any, ...]:
        return (
            self.text,
            self.tool_uses,
            self.delay,
            self.input_tokens,
            self.more_text,
            self.thinking,
            self.chunk,
        )

    @property
    def texts(self) -> tuple[str, ...]:
        """Every text block of the turn, in order."""
        return () if self.text is None else (self.text, *self.more_text)

    def __eq__(self, other: object) -> bool:
        # Structural: Text("x") == Step(text="x").
        if not isinstance(other, Step):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def stop_reason(self) -> Literal["tool_use", "end_turn"]:
        """``"tool_use"`` when the step asks for tools, else ``"end_turn"``."""
        return "tool_use" if self.tool_uses else "end_turn"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> Step:
        """Build from ``"text"``, ``{"text": ...}``, ``{"tool_use": {...}}`` or
        ``{"tool_uses": [{...}, ...], "text": optional}``, each with optional
        ``delay`` and ``input_tokens``."""
        if isinstance(data, str):
            return Text(data)
        if not isinstance(data, Mapping):
            raise ValueError(f"a step must be a string or a mapping, got {data!r}")
        _check_keys(data, {"text", "tool_use", "tool_uses", "delay", "input_tokens"}, "step")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"step 'text' must be a string, got {text!r}")
        if "tool_use" in data and "tool_uses" in data:
            raise ValueError("a step has either 'tool_use' or 'tool_uses', not both")
        raw_uses: list[Any]
        if "tool_use" in data:
            raw_uses = [data["tool_use"]]
        else:
            uses = data.get("tool_uses") or []
            if not isinstance(uses, list):
                raise ValueError(f"step 'tool_uses' must be a list, got {uses!r}")
            raw_uses = uses
        tool_uses = []
        for raw in raw_uses:
            if not isinstance(raw, Mapping):
                raise ValueError(f"a tool use must be a mapping, got {raw!r}")
            tool_uses.append(ToolUse.from_dict(raw))
        delay = data.get("delay", 0.0)
        if not isinstance(delay, (int, float)) or isinstance(delay, bool):
            raise ValueError(f"step 'delay' must be a number, got {delay!r}")
        input_tokens = data.get("input_tokens")
        if input_tokens is not None and (
            not isinstance(input_tokens, int) or isinstance(input_tokens, bool)
        ):
            raise ValueError(f"step 'input_tokens' must be an integer, got {input_tokens!r}")
        return cls(
            text=text, tool_uses=tuple(tool_uses), delay=float(delay), input_tokens=input_tokens
        )

    def to_dict(self) -> dict[str, Any]:
        """The inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        if self.text is not None:
            out["text"] = self.text
        if len(self.tool_uses) == 1:
            out["tool_use"] = self.tool_uses[0].to_dict()
        elif self.tool_uses:
            out["tool_uses"] = [t.to_dict() for t in self.tool_uses]
        if self.delay:
            out["delay"] = self.delay
        if self.input_tokens is not None:
            out["input_tokens"] = self.input_tokens
        return out


@dataclass(frozen=True, init=False, eq=False)
class Text(Step):
    """An assistant text reply that ends the turn (``stop_reason: end_turn``)."""

    def __init__(
        self,
        text: str,
        *more_text: str,
        delay: float = 0.0,
        input_tokens: int | None = None,
        thinking: str | None = None,
        chunk: int = 0,
    ) -> None:
        super().__init__(
            text=text,
            tool_uses=(),
            delay=delay,
            input_tokens=input_tokens,
            more_text=more_text,
            thinking=thinking,
            chunk=chunk,
        )


@dataclass(frozen=True, init=False, eq=False)
class ToolUses(Step):
    """Several ``tool_use`` blocks in one assistant turn, optionally after text."""

    def __init__(
        self,
        tool_uses: Iterable[ToolUse],
        *,
        text: str | None = None,
        delay: float = 0.0,
        input_tokens: int | None = None,
    ) -> None:
        uses = tuple(tool_uses)
        if not uses:
            raise ValueError("ToolUses needs at least one ToolUse")
        super().__init__(text=text, tool_uses=uses, delay=delay, input_tokens=input_tokens)


StepLike: TypeAlias = "Step | ToolUse | str"
"""What a scenario's step list accepts: a :class:`Step`, a bare :class:`ToolUse`
or a string (shorthand for :class:`Text`)."""


def _to_step(item: StepLike) -> Step:
    if isinstance(item, Step):
        return item
    if isinstance(item, ToolUse):
        return Step(tool_uses=(item,))
    if isinstance(item, str):
        return Text(item)
    raise TypeError(f"not a step: {item!r}")


@dataclass(frozen=True, init=False)
class Scenario:
    """A scripted conversation, selected by a regex over the first user message.

    ``match`` is searched (:func:`re.search`) in the text of the conversation's
    first user message; ``None`` makes this scenario the fallback. Put ``(?i)``
    in front for a case-insensitive match. ``name`` is only used in logs.
    """

    match: re.Pattern[str] | None
    steps: tuple[Step, ...]
    name: str | None

    def __init__(
        self,
        match: str | re.Pattern[str] | None = None,
        steps: Iterable[StepLike] = (),
        *,
        name: str | None = None,
    ) -> None:
        pattern = re.compile(match) if isinstance(match, str) else match
        object.__setattr__(self, "match", pattern)
        object.__setattr__(self, "steps", tuple(_to_step(s) for s in steps))
        object.__setattr__(self, "name", name)

    @property
    def label(self) -> str:
        """``name``, else the pattern, else ``"<fallback>"`` (for logs)."""
        if self.name:
            return self.name
        return self.match.pattern if self.match is not None else "<fallback>"

    def matches(self, first_user_text: str) -> bool:
        """Whether this scenario applies to a conversation starting with that text."""
        return self.match is None or self.match.search(first_user_text) is not None

    def step_at(self, index: int) -> Step:
        """The reply for the assistant turn number ``index`` (0-based).

        Past the end of the script the last text-only step is repeated, or
        ``Text("Done.")`` when there is none.
        """
        if index < 0:
            raise ValueError("step index must be >= 0")
        if index < len(self.steps):
            return self.steps[index]
        for step in reversed(self.steps):
            if not step.tool_uses:
                return step
        return Text(DEFAULT_FINAL_TEXT)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build from ``{"match": regex or null, "name": optional, "steps": [...]}``.

        See :meth:`Step.from_dict` for the step forms.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a scenario must be a mapping, got {data!r}")
        _check_keys(data, {"match", "steps", "name"}, "scenario")
        match = data.get("match")
        if match is not None and not isinstance(match, str):
            raise ValueError(f"scenario 'match' must be a string or null, got {match!r}")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"scenario 'name' must be a string, got {name!r}")
        raw_steps = data.get("steps") or []
        if not isinstance(raw_steps, list):
            raise ValueError(f"scenario 'steps' must be a list, got {raw_steps!r}")
        return cls(match=match, steps=[Step.from_dict(s) for s in raw_steps], name=name)

    def to_dict(self) -> dict[str, Any]:
        """The inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        out["match"] = self.match.pattern if self.match is not None else None
        out["steps"] = [s.to_dict() for s in self.steps]
        return out


def delegation(
    match: str | re.Pattern[str] | None,
    prompt: str,
    *,
    description: str = "research",
    subagent_type: str = "general-purpose",
    answer: str = "The subagent is done.",
    name: str | None = None,
) -> Scenario:
    """The parent's side of a subagent run: one ``Agent`` tool call, then ``answer``.

    The ``Agent`` call hands ``prompt`` to a ``subagent_type`` subagent in the
    foreground. The subagent's conversation starts with ``prompt``, so script it
    with a scenario of its own that matches ``prompt`` (and not ``match``)::

        scenarios = [
            Scenario("Research the repo", [ToolUse("Bash", {"command": "ls"}), Text("ok")]),
            delegation("delegate", "Research the repo"),
        ]
        # run_agent("please delegate", options): SubagentStart, the subagent's
        # Bash call, SubagentStop, then the parent's answer.
    """
    agent_input = {
        "description": description,
        "prompt": prompt,
        "subagent_type": subagent_type,
        "run_in_background": False,
    }
    return Scenario(match, [ToolUse("Agent", agent_input), Text(answer)], name=name)


def select_scenario(scenarios: Sequence[Scenario], first_user_text: str) -> Scenario | None:
    """The first scenario whose ``match`` is found in ``first_user_text``.

    A fallback (``match=None``) wins only if no scenario before it matched, so
    put it last.
    """
    for scenario in scenarios:
        if scenario.matches(first_user_text):
            return scenario
    return None


def scenarios_from_data(data: Any) -> list[Scenario]:
    """Scenarios from parsed JSON/YAML: ``{"scenarios": [...]}``, a list of
    scenario mappings, or a single scenario mapping."""
    if isinstance(data, Mapping) and "scenarios" in data:
        _check_keys(data, {"scenarios"}, "scenario file")
        data = data["scenarios"]
    if isinstance(data, Mapping):
        return [Scenario.from_dict(data)]
    if isinstance(data, list):
        return [Scenario.from_dict(item) for item in data]
    raise ValueError(f"expected a scenario list or {{'scenarios': [...]}}, got {data!r}")


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Load scenarios from a ``.json`` or ``.yaml``/``.yml`` file.

    YAML needs PyYAML (``pip install 'akto-otel[yaml]'``).
    """
    file = Path(path)
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - depends on environment
            raise ImportError(
                "loading YAML scenarios needs PyYAML: pip install 'akto-otel[yaml]'"
            ) from exc
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    return scenarios_from_data(data)


def _check_keys(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown {what} key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
