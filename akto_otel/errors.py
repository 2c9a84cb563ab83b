"""The one exception hierarchy of akto_otel.

Hooks never raise these into the Claude Agent SDK: they are for configuration
mistakes (raised where the settings are built) and for the internal plumbing
that maps every failure to a low-cardinality error kind.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = ["AktoConfigError", "AktoError", "AktoNotArmedError", "check_keywords"]


class AktoError(Exception):
    """Base class of every akto_otel error."""


class AktoConfigError(AktoError, ValueError):
    """A setting has a value akto_otel cannot use.

    The message names the variable (or argument), the value, and what is accepted.
    When several settings are bad, one error lists them all: ``problems`` holds one
    ``AktoConfigError`` per bad value (just ``self`` when there is one), and
    ``name``/``value``/``accepted`` are the first one's.
    """

    def __init__(self, name: str, value: str, accepted: str) -> None:
        self.name = name
        self.value = value
        self.accepted = accepted
        self.problems: tuple[AktoConfigError, ...] = (self,)
        from akto_otel.redaction import redact_url

        # A bad URL may still carry user:password@; the message never shows it.
        value_shown = redact_url(value)
        shown = value_shown if len(value_shown) <= 80 else value_shown[:77] + "..."
        super().__init__(f"{name}={shown!r} is not valid: expected {accepted}")

    @classmethod
    def combine(cls, problems: Sequence[AktoConfigError]) -> AktoConfigError:
        """One error listing every problem (the problem itself when there is one)."""
        if not problems:
            raise ValueError("combine() needs at least one problem")
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        combined = cls(first.name, first.value, first.accepted)
        combined.problems = tuple(p for problem in problems for p in problem.problems)
        lines = [str(p) for p in combined.problems]
        combined.args = (f"{len(lines)} settings are not valid:\n  " + "\n  ".join(lines),)
        return combined


class AktoNotArmedError(AktoError, RuntimeError):
    """A fail-closed session refused to start: its guard could not be armed.

    ``fault`` says why: ``on_failure_unsupported`` (the CLI cannot make a failed or
    timed-out hook block the action) or ``hooks_not_applied`` (the CLI answering
    did not register the guard's hooks, so none of them would run).
    """

    def __init__(self, fault: str, message: str) -> None:
        self.fault = fault
        super().__init__(message)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keywords(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise TypeError naming each keyword of ``given`` that ``where`` does not take,
    with the closest known one, so a misspelled setting is never silently dropped."""
    accepted = sorted(set(known))
    unknown = [name for name in given if name not in accepted]
    if not unknown:
        return
    parts = [f"{name!r}{_did_you_mean(name, accepted)}" for name in unknown]
    noun = "argument" if len(parts) == 1 else "arguments"
    raise TypeError(f"{where} got an unexpected keyword {noun}: " + ", ".join(parts))
