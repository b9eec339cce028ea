"""Tasks: data sets with their prompts and answer checkers, looked up by name."""

from __future__ import annotations

import difflib

from dasd.errors import DasdError
from dasd.tasks.arc import ARCTask
from dasd.tasks.arith import ArithTask
from dasd.tasks.base import AnswerCheck, Example, PromptTemplate, Task
from dasd.tasks.gsm8k import GSM8KTask
from dasd.tasks.math import MathTask
from dasd.tasks.mbpp import MBPPTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (ArithTask, GSM8KTask, MathTask,
                                                                ARCTask, MBPPTask)}


def get_task(name: str) -> Task:
    """The task called `name`; a typo gets a did-you-mean hint."""
    if name in TASKS:
        return TASKS[name]()
    hint = difflib.get_close_matches(name.lower(), TASKS, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise DasdError(f"unknown task '{name}': choose one of {', '.join(TASKS)}{suggestion}")


def load_split(config) -> tuple[Task, PromptTemplate, list[Example]]:
    """The task, prompt template and examples a decoding stage config asks for
    (`task`, `prompts`, `split`, `data`, `levels`, `limit`, `seed`); an empty selection is
    an error. With `levels`, the first `limit` examples at those levels are taken from the
    whole split (for `arith`: from its default pool of 500 problems, 100 per level)."""
    from dasd.tasks.prompts import load_prompt_template

    task = get_task(config.task)
    template = load_prompt_template(config.prompts) if config.prompts else task.prompts
    levels = getattr(config, "levels", None)
    examples = task.load(config.split, path=config.data, seed=config.seed,
                         limit=None if levels else config.limit)
    if levels:
        examples = [e for e in examples if e.level in set(levels)][: config.limit]
    if not examples:
        at = f" at levels {levels}" if levels else ""
        raise DasdError(f"task '{config.task}' split '{config.split}' has no examples{at}")
    return task, template, examples


__all__ = ["TASKS", "AnswerCheck", "Example", "PromptTemplate", "Task", "get_task",
           "load_split"]
