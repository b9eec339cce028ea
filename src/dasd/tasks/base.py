"""What every task provides: examples, prompt templates and an answer checker."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck
from dasd.tasks.io import check_limit, check_split, load_hub_rows, read_rows, row_source


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
    """A data set: how to load it, how to prompt it, how to check an answer.

    Loading is shared: a local file (JSONL, JSON or Parquet) or the hub data set
    `hub_id`/`hub_config`, then the task's own row mapping (`examples`)."""

    name: ClassVar[str]
    prompts: ClassVar[PromptTemplate]
    hub_id: ClassVar[str | None] = None
    hub_config: ClassVar[str | None] = None
    file_splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    hub_splits: ClassVar[tuple[str, ...]] = ("train", "test")
    # How many answers `check_many` checks at once: 1 for checkers that run in-process
    # (math-verify's timeouts use signals, which only the main thread can take); code
    # tasks, whose checks mostly wait on a sandbox subprocess, run several in threads.
    check_workers: ClassVar[int] = 1

    def load(self, split: str, path: str | None = None, limit: int | None = None,
             seed: int = 0) -> list[Example]:
        """Examples of `split`, read from `path` (JSONL/JSON/Parquet) when given, else the
        hub; the first `limit` in file order (`seed` is unused: the order is the file's;
        `dasd.tasks.select_split` draws samples)."""
        check_limit(limit)
        check_split(self.name, split, self.file_splits if path is not None else self.hub_splits)
        if path is not None:
            return self.examples(read_rows(path), split, limit, lambda i: row_source(path, i))
        return self.examples(self.hub_rows(split), split, limit, self.hub_source(split))

    @abstractmethod
    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        """The task's own row mapping: the first `limit` rows as Examples (`source(i)` names
        row i in errors)."""

    def hub_rows(self, split: str) -> list[dict[str, Any]]:
        """The rows of `split` on the hub (the local cache when offline)."""
        if self.hub_id is None:
            raise DasdError(f"task '{self.name}' has no hub data set: pass a local "
                            "JSONL/JSON/Parquet file with --data (generate.data, eval.data)")
        return load_hub_rows(self.hub_id, self.hub_config, split)

    def hub_source(self, split: str) -> Callable[[int], str]:
        config = f"{self.hub_config}, " if self.hub_config else ""
        return lambda i: f"{self.hub_id} ({config}{split}) row {i + 1}"

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
