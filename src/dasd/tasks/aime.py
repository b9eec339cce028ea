"""AIME-format contest problems: integer answers from 0 to 999, read from a local file.

Rows have `problem` (or `question`), `answer` (an integer 0-999, or its text) and, where a
worked solution exists, `solution`; `id` (or `ID`) names a row, else its place in the file.
A row without a solution gets "The answer is N." as its reference, enough for evaluation
(what AIME sets are used for: long budgets, Avg@n, Maj@n and pass@k with `eval.samples`),
though not a solution to distil from. The answer is checked as a number, from a
`\\boxed{}` or a final "The answer is" line. There is no hub data set: every AIME
collection lays out its files its own way, so give one with `--data`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck, answers
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.prompts import BOXED_PROMPTS


def _field(row: dict[str, Any], *names: str) -> Any:
    return next((row[name] for name in names if row.get(name) not in (None, "")), None)


def _example(row: dict[str, Any], index: int, split: str, source: str) -> Example:
    question = _field(row, "problem", "question", "Problem", "Question")
    answer = _field(row, "answer", "Answer")
    if question is None or answer is None:
        raise DasdError(f"{source}: an AIME row needs 'problem' (or 'question') and 'answer'")
    text = str(answer).strip()
    if not (text.isdigit() and 0 <= int(text) <= 999):
        raise DasdError(f"{source}: AIME answers are integers 0-999; got {answer!r}")
    gold = str(int(text))
    solution = _field(row, "solution", "Solution")
    reference = str(solution) if solution is not None else f"The answer is {gold}."
    name = _field(row, "id", "ID")
    return Example(str(name) if name is not None else f"aime-{split}-{index}", str(question),
                   reference, gold, meta={"year": row.get("year") or row.get("Year")})


class AIMETask(Task):
    """AIME-format problems (integer answers 0-999) from a local file."""

    name: ClassVar[str] = "aime"
    prompts: ClassVar[PromptTemplate] = BOXED_PROMPTS
    fields: ClassVar[tuple[str, ...]] = ("problem", "question", "answer", "solution", "id",
                                         "year")

    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        return [_example(row, i, split, source(i)) for i, row in enumerate(rows[:limit])]

    def check(self, response: str, example: Example) -> AnswerCheck:
        return answers.check_numeric(response, example.answer)
