"""What every task provides: examples, prompt templates and an answer checker."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.registry import did_you_mean
from dasd.scoring import AnswerCheck
from dasd.tasks.io import check_limit, check_split, load_hub_rows, read_rows, row_source
from dasd.tasks.thinking import answer_part


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

    Loading is shared: a local file (JSONL, JSON or Parquet), the user's data set
    (`dataset_name`), or the task's own hub data set `hub_id`/`hub_config`; then the
    user's column renames (`columns`: {field the task reads: column of the rows}); then
    the task's own row mapping (`examples`)."""

    name: ClassVar[str]
    prompts: ClassVar[PromptTemplate]
    # The row fields `examples` reads: the keys `columns` may map.
    fields: ClassVar[tuple[str, ...]] = ()
    hub_id: ClassVar[str | None] = None
    hub_config: ClassVar[str | None] = None
    file_splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    hub_splits: ClassVar[tuple[str, ...]] = ("train", "test")
    # How many answers `check_many` checks at once: 1 for checkers that run in-process
    # (math-verify's timeouts use signals, which only the main thread can take); code
    # tasks, whose checks mostly wait on a sandbox subprocess, run several in threads.
    check_workers: ClassVar[int] = 1

    def load(self, split: str, path: str | None = None, limit: int | None = None,
             seed: int = 0, *, columns: Mapping[str, Any] | None = None,
             dataset_name: str | None = None, dataset_config: str | None = None
             ) -> list[Example]:
        """Examples of `split`, read from `path` (JSONL/JSON/Parquet) when given, else from
        the data set `dataset_name` (any split it has), else from the task's hub data set;
        the first `limit` in file order (`seed` is unused: the order is the file's;
        `dasd.tasks.select_split` draws samples). `columns` renames the rows' columns
        first."""
        check_limit(limit)
        renames = self.column_renames(columns)
        if path is not None and dataset_name is not None:
            raise DasdError(f"data ({path}) and dataset_name ({dataset_name}) both name the "
                            "problems: keep one")
        if path is not None:
            check_split(self.name, split, self.file_splits)
            rows, source = read_rows(path), lambda i: row_source(path, i)
        elif dataset_name is not None:
            check_dataset_name(dataset_name)
            rows = load_hub_rows(dataset_name, dataset_config, split)
            source = hub_row_source(dataset_name, dataset_config, split)
        else:
            check_split(self.name, split, self.hub_splits)
            rows, source = self.hub_rows(split), self.hub_source(split)
        return self.examples(rename_columns(rows, renames, source), split, limit, source)

    def column_renames(self, columns: Mapping[str, Any] | None) -> dict[str, str]:
        """`columns` checked against the fields this task reads: {field: column}."""
        columns = dict(columns or {})
        for key, column in columns.items():
            if key not in self.fields:
                raise DasdError(f"columns: task '{self.name}' reads {', '.join(self.fields)}; "
                                f"'{key}' is not one of them{did_you_mean(key, self.fields)}")
            if not isinstance(column, str) or not column.strip():
                raise DasdError(f"columns: '{key}' must name a column of your rows (a "
                                f"non-empty string), got {column!r}")
        return columns

    @abstractmethod
    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        """The task's own row mapping: the first `limit` rows as Examples (`source(i)` names
        row i in errors)."""

    def hub_rows(self, split: str) -> list[dict[str, Any]]:
        """The rows of `split` on the hub (the local cache when offline)."""
        if self.hub_id is None:
            raise DasdError(f"task '{self.name}' has no hub data set: pass a local "
                            "JSONL/JSON/Parquet file with --data (generate.data, eval.data) "
                            "or a data set with --dataset-name")
        return load_hub_rows(self.hub_id, self.hub_config, split)

    def hub_source(self, split: str) -> Callable[[int], str]:
        return hub_row_source(self.hub_id or self.name, self.hub_config, split)

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


# A hub repository id: a name, or org/name (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def check_dataset_name(name: str) -> None:
    """A dataset_name is a local folder or a hub id: nothing else may reach the hub."""
    if not (Path(name).is_dir() or _HUB_ID.fullmatch(name)):
        raise DasdError(f"dataset_name '{name}' is neither a local folder nor a hub id "
                        "(org/name): fix the path or the id")


def hub_row_source(dataset: str, config: str | None, split: str) -> Callable[[int], str]:
    """Names row i of a hub data set in errors: "openai/gsm8k (main, test) row 3"."""
    where = ", ".join(part for part in (config, split) if part)
    return lambda i: f"{dataset} ({where}) row {i + 1}"


def rename_columns(rows: list[dict[str, Any]], renames: Mapping[str, str],
                   source: Callable[[int], str]) -> list[dict[str, Any]]:
    """The rows with each field of `renames` read from its column; a row without the
    column is an error naming the row, the column and the columns it has."""
    if not renames:
        return rows
    renamed = []
    for i, row in enumerate(rows):
        for key, column in renames.items():
            if column not in row:
                raise DasdError(f"{source(i)}: no column '{column}' (columns: {key}={column}); "
                                f"the row has {', '.join(row) or 'no columns'}")
        renamed.append({**row, **{key: row[column] for key, column in renames.items()}})
    return renamed


def decode_and_check(task: Task, tokenizer, token_ids: list[list[int]],
                     examples: list[Example], open_block: bool = False
                     ) -> tuple[list[str], list[AnswerCheck]]:
    """The response text of each token-id list and the task's verdict on it (`check_many`:
    code tasks check several at once), read from the part after any thinking block
    (`open_block`: the prompt opened one; see `dasd.tasks.thinking.answer_part`)."""
    responses = [tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
    answers = [answer_part(response, open_block) for response in responses]
    return responses, task.check_many(list(zip(answers, examples, strict=True)))
