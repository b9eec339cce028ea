"""GSM8K (Cobbe et al. 2021): grade-school word problems with worked solutions.

Rows have `question` and `answer`; the answer is a worked solution with calculator
annotations (`<<48/2=24>>`) and a final line `#### 72`. The model sees the solution
without annotations and with "The answer is 72." in place of the `####` line, the
same ending the prompts ask for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck, answers
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.io import require
from dasd.tasks.prompts import NUMERIC_PROMPTS

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL_LINE = re.compile(r"\n?[ \t]*####[ \t]*(.+?)\s*$")


def parse_solution(text: str, source: str) -> tuple[str, str]:
    """(reference solution, golden answer) from a GSM8K `answer` field."""
    match = _FINAL_LINE.search(text)
    if match is None:
        raise DasdError(f"{source}: the answer has no final '#### N' line")
    gold = match.group(1).replace(",", "").strip()
    steps = _ANNOTATION.sub("", text[:match.start()]).rstrip()
    reference = f"{steps}\nThe answer is {gold}." if steps else f"The answer is {gold}."
    return reference, gold


def _example(row: dict[str, Any], index: int, split: str, source: str) -> Example:
    require(row, ("question", "answer"), source, reference="answer")
    reference, gold = parse_solution(str(row["answer"]), source)
    return Example(f"gsm8k-{split}-{index}", row["question"], reference, gold)


class GSM8KTask(Task):
    """GSM8K, from the hub (`openai/gsm8k`, train/test) or a local file in its layout."""

    name: ClassVar[str] = "gsm8k"
    prompts: ClassVar[PromptTemplate] = NUMERIC_PROMPTS
    fields: ClassVar[tuple[str, ...]] = ("question", "answer")
    hub_id: ClassVar[str] = "openai/gsm8k"
    hub_config: ClassVar[str] = "main"

    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        return [_example(row, i, split, source(i)) for i, row in enumerate(rows[:limit])]

    def check(self, response: str, example: Example) -> AnswerCheck:
        return answers.check_numeric(response, example.answer)
