"""Your own problems, checked the way you name (`checker`).

Rows have `question`, `reference` (a worked solution) and `answer`, and optionally `id`
and `level` (1, "3" or "Level 3"); `columns` maps other column names onto these. There is
no hub data set: give a file (`data`) or a data set (`dataset_name`). The checker decides
how the prompts ask for the answer and how it is checked, each as a built-in task does:

- `math-verify`: a LaTeX answer in `\\boxed{}`, checked as MATH checks it (dasd's
  extraction and `math_equal`; math-verify alone is reported beside it);
- `exact`: "The answer is X." (or a box, or the last line's number), equal to `answer` as
  numbers when both read as one, else as text up to case and spacing;
- `choice`: multiple choice as ARC: `choices` is a list of option texts (labelled A, B,
  C, ...) or ARC's `{label: [...], text: [...]}`; `answer` is the correct label (or the
  option's text). Without a `reference`, the reference is the correct option ("The
  correct answer is (B) wet palms.");
- `code`: Python, as MBPP: `tests` is a list of assert lines (no `answer`), run in the
  sandbox after the response's code; `reference` is a solution's code.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.registry import lookup
from dasd.sandbox import SandboxSettings, run_python, sandbox_python
from dasd.scoring import AnswerCheck, answers, choice
from dasd.tasks import mbpp
from dasd.tasks.arc import parse_choices, reference_solution
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.io import parse_level, require
from dasd.tasks.prompts import BOXED_PROMPTS, CHOICE_PROMPTS, NUMERIC_PROMPTS, render_choices

# What a row becomes: (question as the model sees it, reference, golden answer, meta).
Parts = tuple[str, str, str, dict[str, Any]]


@dataclass(frozen=True)
class Checker:
    """One way to ask for and check an answer: the prompts, how a row becomes the parts of
    an Example, the check, other verdicts reported beside it, and the sandbox that runs
    the answers (code)."""

    prompts: PromptTemplate
    parts: Callable[[dict[str, Any], str], Parts]
    check: Callable[[str, Example], AnswerCheck]
    other_checks: Callable[[str, Example], dict[str, AnswerCheck]] = lambda response, e: {}
    sandbox: SandboxSettings | None = None


def _answer_parts(row: dict[str, Any], source: str) -> Parts:
    require(row, ("question", "reference", "answer"), source, reference="reference")
    answer = str(row["answer"]).strip()
    if not answer:
        raise DasdError(f"{source}: empty 'answer'; give the final answer the checker compares")
    return str(row["question"]), str(row["reference"]), answer, {}


def _choice_parts(row: dict[str, Any], source: str) -> Parts:
    require(row, ("question", "choices", "answer"), source)
    options = row["choices"]
    if isinstance(options, list):  # option texts alone: labelled A, B, C, ...
        if len(options) > len(string.ascii_uppercase):
            raise DasdError(f"{source}: {len(options)} options; at most 26 can be labelled")
        options = {"label": list(string.ascii_uppercase[:len(options)]), "text": options}
    labels, texts = parse_choices({"choices": options}, source)
    gold = str(row["answer"]).strip()
    if gold not in labels and gold in texts:
        gold = labels[texts.index(gold)]
    if gold not in labels:
        raise DasdError(f"{source}: answer '{gold}' is neither a label ({', '.join(labels)}) "
                        "nor an option's text")
    if row.get("reference") is not None:
        require(row, ("reference",), source, reference="reference")
    reference = row.get("reference") or reference_solution(gold, texts[labels.index(gold)])
    meta = {"stem": str(row["question"]).strip(), "labels": labels, "options": texts}
    return render_choices(str(row["question"]), labels, texts), str(reference), gold, meta


def _code_parts(row: dict[str, Any], source: str) -> Parts:
    require(row, ("question", "reference", "tests"), source, reference="reference")
    tests = mbpp.assert_list(row, "tests", source, empty_ok=False)
    meta = {"test_list": tests, "test_setup_code": ""}
    return (mbpp.question_text(str(row["question"]), tests),
            str(row["reference"]).replace("\r\n", "\n"), tests[0], meta)


def _check_choice(response: str, example: Example) -> AnswerCheck:
    return choice.check_choice(response, example.answer, example.meta["labels"],
                               example.meta["options"])


SANDBOX = SandboxSettings()


def _check_code(response: str, example: Example) -> AnswerCheck:
    return mbpp.check_code(response, example, lambda code, e: run_python(
        mbpp.program_with_tests(code, e), SANDBOX))


CHECKERS: dict[str, Checker] = {
    "math-verify": Checker(BOXED_PROMPTS, _answer_parts,
                           lambda response, e: answers.check_math(response, e.answer),
                           lambda response, e: {"math_verify": answers.check_math_verify(
                               response, e.answer)}),
    "exact": Checker(NUMERIC_PROMPTS, _answer_parts,
                     lambda response, e: answers.check_exact(response, e.answer)),
    "choice": Checker(CHOICE_PROMPTS, _choice_parts, _check_choice),
    "code": Checker(mbpp.PROMPTS, _code_parts, _check_code, sandbox=SANDBOX),
}


class CustomTask(Task):
    """Your own rows, asked for and checked as `checker` says (see the module)."""

    name: ClassVar[str] = "custom"
    fields: ClassVar[tuple[str, ...]] = ("question", "reference", "answer", "id", "level",
                                         "choices", "tests")

    def __init__(self, checker: str | None = None) -> None:
        if checker is None:
            raise DasdError("task 'custom' needs a checker: set checker (--checker) to one of "
                            f"{', '.join(CHECKERS)}")
        self.checker = checker
        self.checking = lookup(CHECKERS, checker, "checker")
        self.prompts = self.checking.prompts  # (a class attribute in the other tasks)
        if self.checking.sandbox is not None:  # answers mostly wait on a subprocess
            self.check_workers = mbpp.MBPPTask.check_workers

    def load(self, split: str, path: str | None = None, limit: int | None = None,
             seed: int = 0, **rows: Any) -> list[Example]:
        """`Task.load`; a code checker first checks that the sandbox can run Python."""
        if self.checking.sandbox is not None:
            sandbox_python(self.checking.sandbox)
        return super().load(split, path, limit, seed, **rows)

    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        return [self._example(row, i, split, source(i)) for i, row in enumerate(rows[:limit])]

    def _example(self, row: dict[str, Any], index: int, split: str, source: str) -> Example:
        question, reference, answer, meta = self.checking.parts(row, source)
        name = row.get("id")
        return Example(str(name) if name not in (None, "") else f"custom-{split}-{index}",
                       question, reference, answer, parse_level(row.get("level"), source),
                       meta)

    def check(self, response: str, example: Example) -> AnswerCheck:
        return self.checking.check(response, example)

    def other_checks(self, response: str, example: Example) -> dict[str, AnswerCheck]:
        return self.checking.other_checks(response, example)
