"""Task rewards: every task's checker as a TRL reward function, found by the row's id."""

from __future__ import annotations

from pathlib import Path

import pytest

from dasd.errors import DasdError
from dasd.tasks import TASKS, Example, get_task
from dasd.training.rewards import completion_text, task_reward
from tests.conftest import write_jsonl

MBPP_MINI = Path(__file__).resolve().parents[2] / "configs" / "data" / "mbpp-mini.jsonl"
ARC_ROW = {"id": "palms", "question": "Which skin surface will produce the most heat?",
           "choices": {"text": ["dry palms", "wet palms", "oily palms", "lotion"],
                       "label": ["A", "B", "C", "D"]}, "answerKey": "A"}


def problem(name: str, tmp_path: Path) -> tuple[Example, str, str]:
    """(example, a right completion, a wrong one) of task `name`."""
    if name == "arith":
        example = get_task("arith").load("train", limit=1)[0]
        return example, example.reference, "The answer is 123456789."
    if name == "gsm8k":
        return (Example("g-1", "Tom has 3 apples and buys 15 more. How many?",
                        "3 + 15 = 18.\nThe answer is 18.", "18"),
                "He has 3 + 15 = 18 apples.\n#### 18", "The answer is 17.")
    if name == "math":
        return (Example("m-1", "What is 1/2 + 0?", "It is $\\boxed{\\frac{1}{2}}$.",
                        "\\frac{1}{2}", level=1),
                "So the result is $\\boxed{\\frac12}$.", "So the result is $\\boxed{2}$.")
    if name == "arc_challenge":
        example = get_task(name).load("test", path=str(write_jsonl(tmp_path / "arc.jsonl",
                                                                   [ARC_ROW])))[0]
        return example, "The answer is A.", "The answer is B."
    if name == "mbpp":
        example = get_task(name).load("test", path=str(MBPP_MINI), limit=1)[0]
        return (example, f"```python\n{example.reference}\n```",
                "```python\ndef add_numbers(a, b):\n    return a - b\n```")
    if name == "aime":
        return (Example("a-1", "Find the remainder when 2^10 is divided by 1000.",
                        "2^10 = 1024.\nThe answer is 24.", "24"),
                "1024 mod 1000 is $\\boxed{24}$.", "The answer is 124.")
    if name == "custom":  # its exact checker here; tests/tasks/test_custom.py has the others
        return (Example("c-1", "What is the capital of France?", "It is Paris.", "Paris"),
                "The answer is paris.", "The answer is Lyon.")
    raise AssertionError(f"no test problem for task {name}: add one here")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_checker_is_a_reward(name, tmp_path, no_hub):
    example, right, wrong = problem(name, tmp_path)
    reward = task_reward(get_task(name, "exact" if name == "custom" else None), [example])
    assert reward.__name__ == f"{name}_correct"
    got = reward(prompts=["p", "p"], completions=[right, wrong], id=[example.id] * 2,
                 privileged_context=["r", "r"], trainer_state=None)
    assert got == [1.0, 0.0]


def test_conversational_completions_and_the_id_column():
    examples = get_task("arith").load("train", limit=2)
    reward = task_reward(get_task("arith"), examples)
    chat = [[{"role": "assistant", "content": examples[1].reference}],
            [{"role": "assistant", "content": examples[1].reference}]]
    # the id picks the gold answer: the second problem's solution is right only for it
    assert reward(["p", "p"], chat, id=[examples[1].id, examples[0].id]) == [
        1.0, float(examples[0].answer == examples[1].answer)]
    with pytest.raises(DasdError, match="needs the dataset's `id` column"):
        reward(["p"], ["x"])
    with pytest.raises(DasdError, match="no problem with id nope"):
        reward(["p"], ["x"], id=["nope"])
    with pytest.raises(DasdError, match="text or a list of chat messages"):
        completion_text(3)
