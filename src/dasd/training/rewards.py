"""Verifiable rewards: each task's own answer checker as a TRL reward function.

The reward of a rollout is 1.0 when the task's `check` (the one `dasd eval` scores with:
math-verify / numeric answers, the MBPP sandbox, the ARC letter) accepts its final answer
(read after any thinking block), else 0.0. A TRL reward function is called as
`f(prompts, completions, **columns)` with every dataset column as a keyword
(`GRPOTrainer`, `SDPOTrainer`); the on-policy datasets carry each problem's `id`, which
is how the checker finds the gold answer (and, for code, the tests). Completions may be
plain text or TRL's conversational form (`[{"role": "assistant", "content": ...}]`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dasd.errors import DasdError
from dasd.tasks import Example, Task
from dasd.tasks.thinking import answer_part, opens_thinking

RewardFn = Callable[..., list[float]]
# The key under which TRL's SDPOTrainer logs the mean reward of a step's rollouts
REWARD_LOG_KEY = "self_distillation/reward_mean"


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or the last message's content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise DasdError(f"a completion must be text or a list of chat messages; got "
                    f"{type(completion).__name__}")


def task_reward(task: Task, examples: Iterable[Example]) -> RewardFn:
    """The reward function of `task` over `examples` (looked up by the `id` column).

    Its `__name__` (`<task>_correct`) is the name TRL logs the reward under."""
    by_id = {example.id: example for example in examples}

    def reward(prompts: Sequence[Any], completions: Sequence[Any],
               id: Sequence[str] | None = None, **columns: Any) -> list[float]:
        if id is None:
            raise DasdError(f"the {task.name} reward needs the dataset's `id` column (the "
                            "problem each rollout answers)")
        missing = sorted({i for i in id if i not in by_id})
        if missing:
            raise DasdError(f"the {task.name} reward has no problem with id "
                            f"{', '.join(map(str, missing[:3]))}: build it from the same "
                            "problems as the dataset")
        pairs = [(answer_part(completion_text(c), isinstance(p, str) and opens_thinking(p)),
                  by_id[i]) for p, c, i in zip(prompts, completions, id, strict=True)]
        return [1.0 if check.correct else 0.0 for check in task.check_many(pairs)]

    reward.__name__ = reward.__qualname__ = f"{task.name}_correct"
    return reward
