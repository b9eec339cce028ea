"""MATH (Hendrycks et al. 2021): competition problems with LaTeX solutions.

Rows have `problem`, `solution`, `level` ("Level 3", 3 or null) and `type` or
`subject`; the golden answer is the `answer` field when present, else the last
`\\boxed{}` of the solution. The reference solution is shown as written. On the hub,
test is MATH-500 and train is the full MATH training set (7,500 problems; none of
them is in MATH-500, which is drawn from MATH's test set).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck, answers
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.io import load_hub_rows, parse_level, require
from dasd.tasks.prompts import BOXED_PROMPTS

logger = logging.getLogger(__name__)

TEST_HUB_ID = "HuggingFaceH4/MATH-500"
TRAIN_HUB_ID = "EleutherAI/hendrycks_math"
TRAIN_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                  "number_theory", "prealgebra", "precalculus")


def _example(row: dict[str, Any], index: int, split: str, source: str) -> Example | None:
    """The row as an Example; None when its golden answer is empty (it cannot be scored)."""
    require(row, ("problem", "solution"), source, reference="solution")
    gold = row.get("answer")
    if gold is None:
        gold = answers.last_boxed(row["solution"])
        if gold is None:
            raise DasdError(f"{source}: no 'answer' field and no \\boxed{{}} in the solution")
    if not str(gold).strip():
        return None
    meta = {"subject": row.get("subject") or row.get("type")}
    return Example(str(row.get("unique_id") or f"math-{split}-{index}"), row["problem"],
                   row["solution"], str(gold).strip(), parse_level(row.get("level"), source),
                   meta)


def _hub_rows(split: str) -> list[dict[str, Any]]:
    if split == "test":
        return load_hub_rows(TEST_HUB_ID, None, "test")
    return [row for subject in TRAIN_SUBJECTS
            for row in load_hub_rows(TRAIN_HUB_ID, subject, "train")]


def _examples(rows: list[dict[str, Any]], split: str, limit: int | None,
              source: Callable[[int], str]) -> list[Example]:
    """The first `limit` scorable rows as Examples, in file order.

    Rows with an empty golden answer (two MATH problems box nothing: `\\boxed{}`) are
    skipped with a warning rather than failing the whole file.
    """
    examples, skipped = [], []
    for i, row in enumerate(rows):
        if limit is not None and len(examples) >= limit:
            break
        example = _example(row, i, split, source(i))
        if example is None:
            skipped.append(source(i))
        else:
            examples.append(example)
    if skipped:
        logger.warning("skipped %d MATH row(s) with an empty answer: %s", len(skipped),
                       ", ".join(skipped))
    return examples


class MathTask(Task):
    """MATH: test from MATH-500, train from hendrycks_math, or a local file."""

    name: ClassVar[str] = "math"
    prompts: ClassVar[PromptTemplate] = BOXED_PROMPTS
    fields: ClassVar[tuple[str, ...]] = ("problem", "solution", "answer", "level", "type",
                                         "subject", "unique_id")

    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        return _examples(rows, split, limit, source)

    def hub_rows(self, split: str) -> list[dict[str, Any]]:
        return _hub_rows(split)

    def hub_source(self, split: str) -> Callable[[int], str]:
        hub_id = TEST_HUB_ID if split == "test" else TRAIN_HUB_ID
        return lambda i: f"{hub_id} ({split}) row {i + 1}"

    def check(self, response: str, example: Example) -> AnswerCheck:
        return answers.check_math(response, example.answer)

    def other_checks(self, response: str, example: Example) -> dict[str, AnswerCheck]:
        return {"math_verify": answers.check_math_verify(response, example.answer)}
