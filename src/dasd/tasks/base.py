"""What every task provides: examples, prompt templates and an answer checker."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dasd.scoring import AnswerCheck


@dataclass(frozen=True)
class Example:
    """One (question, reference solution) pair with its golden final answer."""

    id: str
    question: str
    reference: str
    answer: str
    level: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptTemplate:
    """User-message templates of the two contexts.

    `base` sees only the question (`{question}`); `reference` also sees the golden
    solution (`{reference}`) and is asked to answer in its own words. `system` is the
    system message; None keeps the chat template's own default.
    """

    base: str
    reference: str
    system: str | None = None


class Task(ABC):
    """A data set: how to load it, how to prompt it, how to check an answer."""

    name: ClassVar[str]
    prompts: ClassVar[PromptTemplate]
    # How many answers `check_many` checks at once: 1 for checkers that run in-process
    # (math-verify's timeouts use signals, which only the main thread can take); code
    # tasks, whose checks mostly wait on a sandbox subprocess, run several in threads.
    check_workers: ClassVar[int] = 1

    @abstractmethod
    def load(self, split: str, path: str | None = None, limit: int | None = None,
             seed: int = 0) -> list[Example]:
        """Examples of `split`, read from `path` (JSONL/Parquet) when given, else the hub;
        the first `limit` in file order (`dasd.tasks.select_split` draws samples)."""

    def generates(self, path: str | None) -> bool:
        """Whether `load` makes its problems up from the seed rather than reading a split
        (then `limit` is how many it makes, already a seeded random draw)."""
        return False

    @abstractmethod
    def check(self, response: str, example: Example) -> AnswerCheck:
        """Extract the final answer of `response` and compare it with `example.answer`."""

    def other_checks(self, response: str, example: Example) -> dict[str, AnswerCheck]:
        """Verdicts of other checkers, which an evaluation reports beside `check`'s (MATH:
        math-verify alone, as other harnesses score it); none by default."""
        return {}

    def check_many(self, pairs: Sequence[tuple[str, Example]]) -> list[AnswerCheck]:
        """`check` of every (response, example) pair, in order, up to `check_workers` at
        once."""
        if self.check_workers <= 1 or len(pairs) <= 1:
            return [self.check(response, example) for response, example in pairs]
        with ThreadPoolExecutor(min(self.check_workers, len(pairs))) as pool:
            return list(pool.map(lambda pair: self.check(*pair), pairs))


def decode_and_check(task: Task, tokenizer, token_ids: list[list[int]],
                     examples: list[Example]) -> tuple[list[str], list[AnswerCheck]]:
    """The response text of each token-id list and the task's verdict on it (`check_many`:
    code tasks check several at once)."""
    responses = [tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
    return responses, task.check_many(list(zip(responses, examples, strict=True)))
