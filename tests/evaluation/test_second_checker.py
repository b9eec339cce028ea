"""MATH's second checker: math-verify alone scores beside dasd's checker, and an eval summary
reports both."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dasd.tasks import Example
from tests.conftest import write_jsonl


@pytest.mark.parametrize("response, gold, dasd, verify", [
    ("so $x = \\frac{1}{2}$, i.e. \\boxed{0.5}", "\\frac12", True, True),
    ("The answer is 7 apples.", "7", True, True),
    ("I think it is 3. Final: \\boxed{4}", "3", False, False),
    ("no answer here", "2", False, False),
])
def test_math_verify_alone_scores_beside_dasds_checker(response, gold, dasd, verify):
    from dasd.tasks.math import MathTask

    example = Example("m", "q", "r", gold, 1)
    task = MathTask()
    assert task.check(response, example).correct is dasd
    other = task.other_checks(response, example)["math_verify"]
    assert other.correct is verify and (other.how == "none") is (other.extracted is None)


def test_an_eval_summary_reports_both_checkers_and_its_problems(tmp_path, tiny_model, tokenizer,
                                                               one_thread):
    from dasd.evaluation.evaluate import EvalConfig, evaluate

    rows = [{"problem": f"p{i}", "solution": f"\\boxed{{{i}}}", "level": 1 + i % 2,
             "subject": "Algebra"} for i in range(6)]
    data = write_jsonl(tmp_path / "math.jsonl", rows)
    config = EvalConfig(task="math", data=str(data), limit=4, max_new_tokens=3, batch_size=4,
                        out=str(tmp_path / "e.jsonl"))
    summary = evaluate(config, model=tiny_model, tokenizer=tokenizer)
    assert summary["problems"]["n"] == 4 and summary["problems"]["of"] == 6
    assert summary["problems"]["subset"] is True
    assert set(summary["other_checks"]["math_verify"]["per_level"]) == {"1", "2"}
    first = json.loads((tmp_path / "e.jsonl").read_text().splitlines()[0])
    assert set(first["checks"]["math_verify"]) == {"extracted", "correct"}

    from dasd.plan import make_plan  # what `dasd eval --plan` says of that output now

    def status(**changes):
        (stage,) = make_plan("eval", dataclasses.replace(config, **changes))["stages"]
        return stage["status"], stage["why"]

    assert status() == ("reuse", f"4 of 4 rows already in {tmp_path / 'e.jsonl'}")
    assert status(limit=None)[0] == "resume" and status(limit=None)[1].startswith("4 of 6")
    assert status(max_new_tokens=5)[0] == "stop"
