"""Answer checking, below the tasks that use it: `answers` (numbers, boxed and LaTeX
answers, math-verify), `choice` (multiple-choice letters). Each checker returns an
`AnswerCheck`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnswerCheck:
    """The answer found in a response, how it was found, and whether it is correct.

    `how` names the pattern that matched (e.g. "final-answer", "boxed", "hashes",
    "last-number") or "none" when nothing could be extracted. `outcome` says more where a
    checker knows it (code tasks: the sandbox status, e.g. "failed", "timeout", "memory").
    """

    extracted: str | None
    how: str
    correct: bool
    outcome: str | None = None


__all__ = ["AnswerCheck"]
