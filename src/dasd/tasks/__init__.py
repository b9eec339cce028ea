"""Tasks: data sets with their prompts and answer checkers, looked up by name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dasd.errors import DasdError
from dasd.registry import lookup
from dasd.tasks.aime import AIMETask
from dasd.tasks.arc import ARCTask
from dasd.tasks.arith import ArithTask
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.custom import CustomTask
from dasd.tasks.gsm8k import GSM8KTask
from dasd.tasks.math import MathTask
from dasd.tasks.mbpp import MBPPTask
from dasd.tasks.sample import counts, draw, ids_digest

log = logging.getLogger(__name__)

TASKS: dict[str, type[Task]] = {task.name: task for task in (
    ArithTask, GSM8KTask, MathTask, ARCTask, MBPPTask, AIMETask, CustomTask)}


def get_task(name: str, checker: str | None = None) -> Task:
    """The task called `name`; a typo gets a did-you-mean hint. `checker` is task
    custom's (`dasd.tasks.custom.CHECKERS`); the other tasks check their own way."""
    task = lookup(TASKS, name, "task")
    if checker is None:
        return task()
    if task is not CustomTask:
        raise DasdError(f"checker '{checker}' is for task custom; task '{name}' checks its "
                        "answers its own way: unset checker (--checker)")
    return CustomTask(checker)


@dataclass(frozen=True)
class ProblemSelection:
    """The problems a stage config selects, and what they were selected from.

    `pool` is every problem the draw chose from (the split, or its `levels`);
    `split_size` is the whole split's size (None for a task that generates its problems,
    whose split has no end). `how` is the config's `sample`, or "generated".
    """

    task: Task
    template: PromptTemplate
    examples: list[Example]
    pool: list[Example]
    split_size: int | None
    asked: int | None
    how: str
    source: str

    @property
    def subset(self) -> bool:
        """Whether the problems are fewer than the whole split (a limit or levels)."""
        return self.split_size is not None and len(self.examples) < self.split_size

    @property
    def short(self) -> bool:
        """Whether the limit asks for more problems than there are."""
        return self.asked is not None and self.asked > len(self.examples)

    def record(self, ids: bool = False) -> dict[str, Any]:
        """What was drawn, for summaries, results.json and config.yaml (`ids`: every id)."""
        record = {"source": self.source, "n": len(self.examples), "of": self.split_size,
                  "subset": self.subset, "asked": self.asked, "sample": self.how,
                  "ids_sha256": ids_digest(self.examples), **counts(self.examples)}
        if ids:
            record["ids"] = [e.id for e in self.examples]
        return record


def select_split(config, evaluation: bool = False) -> ProblemSelection:
    """The problems of a decoding stage config (`task` with its `checker`, `prompts`,
    `split`, `data` or `dataset_name`/`dataset_config`, `columns`, `levels`, `limit`, `seed`,
    `sample`); an empty selection is an error.

    `levels` filters the split first; `limit` then draws `dasd.tasks.sample.draw` (a seeded
    sample stratified by level and subject, or `sample: first`). A task that generates its
    problems from the seed (`arith` without a file) makes `limit` of them instead (with
    `levels`: from its default pool of 500, 100 per level). Logs a warning when the limit
    asks for more problems than there are, and, for an evaluation (`evaluation`), when the
    problems are a subset of the split.
    """
    from dasd.tasks.prompts import load_prompt_template

    task = get_task(config.task, getattr(config, "checker", None))
    template = load_prompt_template(config.prompts) if config.prompts else task.prompts
    levels = set(config.levels) if getattr(config, "levels", None) else None
    how = getattr(config, "sample", "stratified")
    held_out = getattr(config, "held_out", None)
    rows = {"columns": getattr(config, "columns", None),
            "dataset_name": getattr(config, "dataset_name", None),
            "dataset_config": getattr(config, "dataset_config", None)}
    if task.generates(config.data or rows["dataset_name"]):  # no rows given: made up
        how = "generated"
        made = None if levels or config.limit is None else config.limit + (held_out or 0)
        pool = task.load(config.split, seed=config.seed, limit=made, **rows)
        split_size = None
    else:
        pool = task.load(config.split, path=config.data, seed=config.seed, **rows)
        split_size = len(pool)
    if levels:
        pool = [e for e in pool if e.level in levels]
    examples = _draw(pool, config.limit, config.seed, how)
    if held_out:  # the problems the draw left out, drawn again
        taken = {e.id for e in examples}
        pool = [e for e in pool if e.id not in taken]
        examples = _draw(pool, held_out, config.seed, how)
    if not examples:
        at = f" at levels {sorted(levels)}" if levels else ""
        raise DasdError(f"task '{config.task}' split '{config.split}' has no examples{at}")
    source = config.data or rows["dataset_name"] or ("generated" if how == "generated"
                                                     else "hub")
    selection = ProblemSelection(task, template, examples, pool, split_size,
                                 held_out or config.limit, how, source)
    _warn(selection, config, evaluation)
    return selection


def _draw(pool: list[Example], n: int | None, seed: int, how: str) -> list[Example]:
    """A generated pool is already a seeded random draw: its first `n`."""
    return pool[:n] if how == "generated" else draw(pool, n, seed, how)


_WARNED: set[str] = set()  # a run selects the same problems for every stage: warn once


def _warn(selection: ProblemSelection, config, evaluation: bool) -> None:
    data = config.data or getattr(config, "dataset_name", None)
    where = f"{config.task}/{config.split}" + (f" ({data})" if data else "")
    at = f" at levels {sorted(config.levels)}" if getattr(config, "levels", None) else ""
    warnings = []
    if selection.short:
        warnings.append(f"limit {config.limit} asks for more problems than {where} has{at}: "
                        f"using all {len(selection.examples)}")
    if evaluation and selection.subset:
        warnings.append(f"evaluating on {len(selection.examples)} of the "
                        f"{selection.split_size} problems of {where}{at}: scores are on a "
                        "subset, and marked so (unset limit/levels for the whole split)")
    for warning in warnings:
        if warning not in _WARNED:
            _WARNED.add(warning)
            log.warning("%s", warning)


def load_split(config, evaluation: bool = False) -> tuple[Task, PromptTemplate, list[Example]]:
    """(task, prompt template, examples) of `select_split`."""
    selection = select_split(config, evaluation)
    return selection.task, selection.template, selection.examples


__all__ = ["TASKS", "Example", "PromptTemplate", "ProblemSelection", "Task",
           "get_task", "load_split", "select_split"]
