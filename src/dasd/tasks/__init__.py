"""Tasks: data sets with their prompts and answer checkers, looked up by name."""

from __future__ import annotations

import difflib

from dasd.errors import DasdError
from dasd.tasks.arith import ArithTask
from dasd.tasks.base import AnswerCheck, Example, PromptTemplate, Task
from dasd.tasks.gsm8k import GSM8KTask
from dasd.tasks.math import MathTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (ArithTask, GSM8KTask, MathTask)}


def get_task(name: str) -> Task:
    """The task called `name`; a typo gets a did-you-mean hint."""
    if name in TASKS:
        return TASKS[name]()
    hint = difflib.get_close_matches(name.lower(), TASKS, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise DasdError(f"unknown task '{name}': choose one of {', '.join(TASKS)}{suggestion}")


__all__ = ["TASKS", "AnswerCheck", "Example", "PromptTemplate", "Task", "get_task"]
