"""ARC-Challenge (Clark et al. 2018): grade-school science questions, multiple choice.

Rows are in the hub layout of `allenai/ai2_arc` (config `ARC-Challenge`, splits
train/validation/test): `id`, `question`, `choices: {text: [...], label: [...]}` and
`answerKey`. Most rows have four options labelled A-D; a few have three or five, and
some are labelled 1-4 (the answer key then uses the same digits).

ARC has no worked solutions, so the reference solution is the correct option with its
text: "The correct answer is (B) wet palms." The model sees the question with its
options one per line ("(A) dry palms"), and is asked to end with "The answer is (X).".
`Example.answer` is the golden label; `check` reads the chosen label with
`dasd.scoring.choice` and compares labels. ARC has no difficulty levels.

A malformed row (a missing field, text and label lists of different lengths, fewer than
two options, a repeated or multi-character label, an answer key that is not one of the
labels) stops loading with an error naming the first such row and how many there are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck, choice
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.io import require
from dasd.tasks.prompts import CHOICE_PROMPTS, render_choices


def reference_solution(label: str, text: str) -> str:
    """"The correct answer is (B) wet palms.": the option as the prompt asks to state it."""
    text = text.strip()
    return f"The correct answer is ({label}) {text}{'' if text.endswith(('.', '!', '?')) else '.'}"


def parse_choices(row: dict[str, Any], source: str) -> tuple[list[str], list[str]]:
    """(labels, texts) of a row's `choices`, or a DasdError naming `source` and the problem."""
    choices = row["choices"]
    if not isinstance(choices, dict) or not {"text", "label"} <= set(choices):
        raise DasdError(f"{source}: 'choices' must be an object with lists 'text' and 'label'")
    texts, labels = choices["text"], choices["label"]
    if not isinstance(texts, list) or not isinstance(labels, list):
        raise DasdError(f"{source}: 'choices.text' and 'choices.label' must be lists")
    if len(texts) != len(labels):
        raise DasdError(f"{source}: {len(texts)} option texts but {len(labels)} labels")
    labels = [str(label).strip() for label in labels]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise DasdError(f"{source}: needs two or more distinct labels, got {labels}")
    if any(len(label) != 1 or not label.isalnum() for label in labels):
        raise DasdError(f"{source}: labels must be single letters or digits, got {labels}")
    if any(not isinstance(text, str) or not text.strip() for text in texts):
        raise DasdError(f"{source}: an option text is empty or not a string")
    return labels, [text.strip() for text in texts]


def _example(row: dict[str, Any], index: int, split: str, source: str) -> Example:
    require(row, ("question", "choices", "answerKey"), source)
    if not str(row["question"]).strip():
        raise DasdError(f"{source}: empty 'question'")
    labels, texts = parse_choices(row, source)
    gold = str(row["answerKey"]).strip()
    if gold not in labels:
        raise DasdError(f"{source}: answerKey '{gold}' is not one of the labels "
                        f"{', '.join(labels)}")
    return Example(str(row.get("id") or f"arc_challenge-{split}-{index}"),
                   render_choices(str(row["question"]), labels, texts),
                   reference_solution(gold, texts[labels.index(gold)]), gold,
                   meta={"stem": str(row["question"]).strip(), "labels": labels,
                         "options": texts})


def _examples(rows: list[dict[str, Any]], split: str,
              source: Callable[[int], str]) -> list[Example]:
    """Every row as an Example; any malformed row is an error naming the first and the count."""
    examples, problems = [], []
    for i, row in enumerate(rows):
        try:
            examples.append(_example(row, i, split, source(i)))
        except DasdError as error:
            problems.append(str(error))
    if problems:
        raise DasdError(f"{problems[0]} ({len(problems)} of {len(rows)} ARC rows are malformed;"
                        " fix or remove them)")
    return examples


class ARCTask(Task):
    """ARC-Challenge, from the hub (`allenai/ai2_arc`, `ARC-Challenge`) or a local file."""

    name: ClassVar[str] = "arc_challenge"
    prompts: ClassVar[PromptTemplate] = CHOICE_PROMPTS
    fields: ClassVar[tuple[str, ...]] = ("id", "question", "choices", "answerKey")
    hub_id: ClassVar[str] = "allenai/ai2_arc"
    hub_config: ClassVar[str] = "ARC-Challenge"
    hub_splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")

    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        return _examples(rows[:limit], split, source)

    def check(self, response: str, example: Example) -> AnswerCheck:
        return choice.check_choice(response, example.answer, example.meta["labels"],
                                   example.meta["options"])
