"""MBPP (Austin et al. 2021): short Python programming problems checked by assert tests.

Rows have `text` (the problem), `code` (a reference solution), `task_id`, `test_list`
(assert statements), and optionally `test_setup_code` and `challenge_test_list`. As in
the MBPP paper's prompt, the question shows the problem and its test asserts, so the
model knows the function's name and signature. The reference solution is the row's code
with `\\r\\n` turned into `\\n`. `Example.answer` is the first assert (a readable gold
answer in result rows); all tests live in `Example.meta`.

`check` takes the code of a response (see `extract_code`), appends `test_setup_code`
and then every assert of `test_list`, and runs it in the sandbox (`dasd.sandbox.supervisor`):
correct means every assert passed, which with greedy decoding is pass@1. The challenge
tests are kept in `meta` but not run, as in the standard MBPP score.

A malformed row (a missing field, an empty solution, tests that are not a list of
strings) stops loading with an error naming the first such rows and how many there are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, ClassVar

from dasd.errors import DasdError
from dasd.sandbox import SandboxResult, SandboxSettings, run_python, sandbox_python
from dasd.scoring import AnswerCheck
from dasd.tasks.base import Example, PromptTemplate, Task
from dasd.tasks.io import require
from dasd.tasks.prompts import check_template

_ASK_CODE = "Write the complete Python code in one ```python code block."
PROMPTS = check_template(PromptTemplate(
    base=f"{{question}}\n\n{_ASK_CODE}",
    reference=("{question}\n\nReference solution:\n```python\n{reference}\n```\n\n"
               "Refer to the reference solution and write your own solution, without "
               f"mentioning the reference. {_ASK_CODE}"),
), "mbpp prompts")
# An opening fence with its language tag, then the code up to a closing fence or the end.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3")
# A response that starts straight with code (its opening fence left out, e.g. after SFT on
# unfenced references) and closes it with a bare fence before the explanation.
_CODE_START = re.compile(r"(def|class|import|from|async def)\b|@\w")
_BARE_FENCE = re.compile(r"^[ \t]*```[ \t]*$", re.MULTILINE)


def question_text(text: str, tests: list[str]) -> str:
    """The problem and its asserts, as in the MBPP paper's prompt."""
    return f"{text.strip()}\nYour code should pass these tests:\n\n" + "\n".join(tests)


def extract_code(response: str) -> tuple[str, str]:
    """(code, how): the code of a model response and where it was found.

    `how` is "python-block" (the first ```python block), "unopened-block" (the response
    starts with code and the first fence is a bare one closing it), "code-block" (the
    first fenced block, when none is tagged python), or "raw" (no fence: the whole
    response). The first block wins over the last because models tend to add usage
    examples after the solution. A block cut off by the length limit (no closing fence)
    still counts.
    """
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(response)]
    for tag, body in blocks:
        if tag in _PYTHON_TAGS:
            return body.strip("\n"), "python-block"
    first_fence = _BARE_FENCE.search(response)
    head = response[:first_fence.start()] if first_fence else ""
    if first_fence and "```" not in head and _CODE_START.match(head.lstrip()):
        return head.strip("\n"), "unopened-block"
    if blocks:
        return blocks[0][1].strip("\n"), "code-block"
    return response.strip("\n"), "raw"


def program_with_tests(code: str, example: Example) -> str:
    """The program the sandbox runs: the candidate code, the setup code, every assert.

    The setup goes after the code because it may use the code's definitions (task 927
    builds its test trees with the solution's `Node` class); it runs before the asserts.
    """
    parts = [code, example.meta.get("test_setup_code", ""), *example.meta["test_list"]]
    return "\n\n".join(part for part in parts if part.strip()) + "\n"


def assert_list(row: dict[str, Any], name: str, source: str, empty_ok: bool) -> list[str]:
    """The assert lines of `row[name]`, or a DasdError naming `source` (also for an empty
    list unless `empty_ok`, which also lets the field be absent)."""
    value = row.get(name)
    if value is None and empty_ok:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DasdError(f"{source}: '{name}' must be a list of assert strings")
    if not value and not empty_ok:
        raise DasdError(f"{source}: '{name}' is empty; at least one test is needed")
    return value


def _example(row: dict[str, Any], split: str, source: str) -> Example:
    require(row, ("text", "code", "task_id", "test_list"), source, reference="code")
    tests = assert_list(row, "test_list", source, empty_ok=False)
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise DasdError(f"{source}: 'test_setup_code' must be a string")
    meta = {"task_id": row["task_id"], "text": str(row["text"]), "test_list": tests,
            "test_setup_code": setup.replace("\r\n", "\n"),
            "challenge_test_list": assert_list(row, "challenge_test_list", source, True)}
    return Example(f"mbpp-{row['task_id']}", question_text(str(row["text"]), tests),
                   str(row["code"]).replace("\r\n", "\n"), tests[0], meta=meta)


def _examples(rows: list[dict[str, Any]], split: str,
              source: Callable[[int], str]) -> list[Example]:
    """Every row as an Example; malformed rows are an error that names them and counts them."""
    examples, problems = [], []
    for i, row in enumerate(rows):
        try:
            examples.append(_example(row, split, source(i)))
        except DasdError as error:
            problems.append(str(error))
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise DasdError(f"{len(problems)} malformed MBPP row(s) of {len(rows)}: {shown}")
    return examples


class MBPPTask(Task):
    """MBPP, from the hub (`google-research-datasets/mbpp`, config `full`) or a local file."""

    name: ClassVar[str] = "mbpp"
    prompts: ClassVar[PromptTemplate] = PROMPTS
    fields: ClassVar[tuple[str, ...]] = ("text", "code", "task_id", "test_list",
                                         "test_setup_code", "challenge_test_list")
    hub_id: ClassVar[str] = "google-research-datasets/mbpp"
    hub_config: ClassVar[str] = "full"
    file_splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test", "prompt")
    hub_splits: ClassVar[tuple[str, ...]] = file_splits
    sandbox: ClassVar[SandboxSettings] = SandboxSettings()
    check_workers: ClassVar[int] = min(8, os.cpu_count() or 1)

    def load(self, split: str, path: str | None = None, limit: int | None = None,
             seed: int = 0, **rows: Any) -> list[Example]:
        """The first `limit` rows in file order (`seed` is unused: the order is the file's).

        Every row of the file or split is checked, so a malformed row is reported even
        beyond `limit`. The sandbox's interpreter is checked first (once per process), so a
        machine where no program could import the standard library stops here, not with
        every answer scored wrong. `rows`: where else the rows come from (`Task.load`).
        """
        sandbox_python(self.sandbox)
        return super().load(split, path, limit, seed, **rows)

    def examples(self, rows: list[dict[str, Any]], split: str, limit: int | None,
                 source: Callable[[int], str]) -> list[Example]:
        return _examples(rows, split, source)[:limit]

    def run_tests(self, code: str, example: Example) -> SandboxResult:
        """Run `code` against the example's setup and asserts in the sandbox."""
        return run_python(program_with_tests(code, example), self.sandbox)

    def check(self, response: str, example: Example) -> AnswerCheck:
        return check_code(response, example, self.run_tests)


def check_code(response: str, example: Example,
               run_tests: Callable[[str, Example], SandboxResult]) -> AnswerCheck:
    """The code of `response` run against the example's tests (`run_tests`): correct when
    every assert passes; `outcome` is the sandbox's status, or "no-code"."""
    code, how = extract_code(response)
    if not code.strip():
        return AnswerCheck(None, "none", False, outcome="no-code")
    result = run_tests(code, example)
    return AnswerCheck(code, how, result.passed, outcome=result.status)
