"""GSM8K (Cobbe et al. 2021): grade-school word problems with worked solutions.

Rows have `question` and `answer`; the answer is a worked solution with calculator
annotations (`<<48/2=24>>`) and a final line `#### 72`. The model sees the solution
without annotations and with "The answer is 72." in place of the `####` line, the
same ending the prompts ask for.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck, answers
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.io import check_limit, check_split, load_hub_rows, read_rows, require, row_source
from dasd.tasks.prompts import NUMERIC_PROMPTS

HUB_ID, HUB_CONFIG, HUB_SPLITS = "openai/gsm8k", "main", ("train", "test")
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

    def load(self, split: str, path: str | None = None, limit: int | None = None,
             seed: int = 0) -> list[Example]:
        """The first `limit` rows in file order (`seed` is unused: the order is the file's)."""
        check_limit(limit)
        if path is not None:
            check_split(self.name, split, ("train", "validation", "test"))
            rows = read_rows(path)[:limit]
            return [_example(row, i, split, row_source(path, i)) for i, row in enumerate(rows)]
        check_split(self.name, split, HUB_SPLITS)
        rows = load_hub_rows(HUB_ID, HUB_CONFIG, split)[:limit]
        return [_example(row, i, split, f"{HUB_ID} ({split}) row {i + 1}")
                for i, row in enumerate(rows)]

    def check(self, response: str, example: Example) -> AnswerCheck:
        return answers.check_numeric(response, example.answer)
