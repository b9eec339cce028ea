"""MBPP: loading (local, hub, malformed rows), code extraction, checking, prompts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dasd.errors import DasdError
from dasd.tasks import TASKS, get_task
from dasd.tasks.mbpp import MBPPTask, extract_code, program_with_tests
from dasd.tasks.prompts import check_template, render_prompts
from tests.conftest import write_jsonl

MINI = Path(__file__).resolve().parents[2] / "configs" / "data" / "mbpp-mini.jsonl"
SHARED = next((Path(p) / "mbpp" for p in (os.environ.get("DASD_SHARED_DATA"),
                                          Path(__file__).resolve().parents[3] / "shared" / "data",
                                          "/work/shared/data") if p and Path(p).is_dir()),
              None)
ROW = {"text": "Write a function to add two numbers.", "task_id": 7,
       "code": "def add(a, b):\r\n  return a + b", "test_setup_code": "",
       "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
       "challenge_test_list": []}






@pytest.fixture
def example(tmp_path: Path, no_hub: None):
    return MBPPTask().load("test", path=str(write_jsonl(tmp_path / "m.jsonl", [ROW])))[0]


def test_registered() -> None:
    assert TASKS["mbpp"] is MBPPTask and isinstance(get_task("mbpp"), MBPPTask)
    check_template(MBPPTask.prompts, "mbpp")


def test_local_row_becomes_an_example(example) -> None:
    assert example.id == "mbpp-7"
    assert example.question == ("Write a function to add two numbers.\nYour code should pass "
                                "these tests:\n\nassert add(1, 2) == 3\nassert add(0, 0) == 0")
    assert example.reference == "def add(a, b):\n  return a + b"  # \r\n normalised
    assert example.answer == "assert add(1, 2) == 3" and example.level is None
    assert example.meta["test_list"] == ROW["test_list"] and example.meta["task_id"] == 7


def test_limit_and_optional_fields(tmp_path: Path, no_hub: None) -> None:
    bare = {k: ROW[k] for k in ("text", "code", "task_id", "test_list")}
    rows = [dict(bare, task_id=i) for i in range(5)]
    examples = MBPPTask().load("train", path=str(write_jsonl(tmp_path / "m.jsonl", rows)), limit=2)
    assert [e.id for e in examples] == ["mbpp-0", "mbpp-1"]
    assert examples[0].meta["test_setup_code"] == ""
    assert examples[0].meta["challenge_test_list"] == []


def test_malformed_rows_are_reported_and_counted(tmp_path: Path, no_hub: None) -> None:
    rows = [ROW, {k: v for k, v in ROW.items() if k != "code"}, dict(ROW, test_list="assert 1"),
            ROW, dict(ROW, code="  "), dict(ROW, test_list=[])]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DasdError) as error:
        MBPPTask().load("train", path=str(path), limit=1)  # rows beyond the limit count too
    message = str(error.value)
    assert message.startswith("4 malformed MBPP row(s) of 6: ")
    assert f"{path}:2: missing field 'code'" in message
    assert f"{path}:3: 'test_list' must be a list" in message
    assert f"empty reference solution ('code') in {path}:5" in message
    assert message.endswith("; ...") and "\n" not in message


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"split": "train", "path": "missing.jsonl"}, "data file not found: missing.jsonl"),
    ({"split": "dev", "path": None}, "mbpp has no split 'dev'"),
    ({"split": "train", "path": None, "limit": -1}, "limit must be 0 or more"),
])
def test_bad_arguments(kwargs: dict, match: str, no_hub: None) -> None:
    with pytest.raises(DasdError, match=match):
        MBPPTask().load(**kwargs)


def test_hub_id_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_hub(hub_id: str, config: str, split: str) -> list[dict]:
        calls.append((hub_id, config, split))
        return [ROW]

    monkeypatch.setattr("dasd.tasks.base.load_hub_rows", fake_hub)
    assert [e.id for e in MBPPTask().load("prompt")] == ["mbpp-7"]
    assert calls == [("google-research-datasets/mbpp", "full", "prompt")]


@pytest.mark.parametrize(("response", "code", "how"), [
    ("Here:\n```python\ndef f():\n    return 1\n```\nUsage:\n```python\nprint(f())\n```",
     "def f():\n    return 1", "python-block"),
    ("```\nx = 1\n```\n```py\ny = 2\n```", "y = 2", "python-block"),
    ("```\nx = 1\n```", "x = 1", "code-block"),
    ("```python\ndef g():\n    return 2", "def g():\n    return 2", "python-block"),  # cut off
    ("def h():\n    return 3\n", "def h():\n    return 3", "raw"),
    # the opening fence left out: the code runs up to the bare fence, not the prose after
    ("def sq(n):\n    return n ** 2\n```\n\nThis function squares `n`.",
     "def sq(n):\n    return n ** 2", "unopened-block"),
    ("import math\nx = 1\n```\nUsage:\n```\nprint(x)\n```", "import math\nx = 1",
     "unopened-block"),
    ("Here it is:\n```\nx = 1\n```", "x = 1", "code-block"),  # prose first: a real block
])
def test_extract_code(response: str, code: str, how: str) -> None:
    assert extract_code(response) == (code, how)


def test_check_runs_the_asserts(example) -> None:
    task = MBPPTask()
    good = task.check("```python\ndef add(a, b):\n    return b + a\n```", example)
    assert (good.correct, good.how, good.outcome) == (True, "python-block", "passed")
    assert good.extracted == "def add(a, b):\n    return b + a"
    half = task.check("```python\ndef add(a, b):\n    return 3\n```", example)  # passes test 1 only
    assert (half.correct, half.outcome) == (False, "failed")
    syntax = task.check("def add(a, b) return a + b", example)
    assert (syntax.correct, syntax.outcome) == (False, "error")  # it never ran
    empty = task.check("I don't know.\n```python\n```", example)
    assert (empty.extracted, empty.how, empty.correct) == (None, "none", False)
    assert empty.outcome == "no-code"


def test_check_many_runs_sandboxes_at_once_and_keeps_the_order(example, monkeypatch) -> None:
    task = MBPPTask()
    monkeypatch.setattr(MBPPTask, "check_workers", 4)
    together = threading.Barrier(2, timeout=30)  # breaks unless two checks overlap
    run_tests = MBPPTask.run_tests

    def meet_then_run(self, code, example):
        together.wait()
        return run_tests(self, code, example)

    monkeypatch.setattr(MBPPTask, "run_tests", meet_then_run)
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return 3\n```"
    checks = task.check_many([(good, example), (bad, example), (bad, example), (good, example)])
    assert [c.correct for c in checks] == [True, False, False, True]


def test_in_process_checkers_stay_on_the_main_thread(monkeypatch) -> None:
    task = get_task("arith")
    assert task.check_workers == 1
    seen = []
    monkeypatch.setattr(type(task), "check",
                        lambda self, response, ex: seen.append(threading.current_thread()))
    task.check_many([("1", None), ("2", None)])
    assert seen == [threading.main_thread()] * 2


def test_setup_code_runs_after_the_code_and_before_the_asserts(tmp_path: Path,
                                                              no_hub: None) -> None:
    row = dict(ROW, code="class Box:\n    def __init__(self, v):\n        self.v = v\n"
                         "def unbox(b):\n    return b.v",
               test_setup_code="box = Box(4)", test_list=["assert unbox(box) == 4"])
    example = MBPPTask().load("train", path=str(write_jsonl(tmp_path / "m.jsonl", [row])))[0]
    assert program_with_tests("CODE", example) == "CODE\n\nbox = Box(4)\n\nassert unbox(box) == 4\n"
    assert MBPPTask().check(f"```python\n{example.reference}\n```", example).correct


def test_prompts_render_with_the_tokenizer(example, tokenizer) -> None:
    base, reference = render_prompts(tokenizer, MBPPTask.prompts, example)
    ask = "Write the complete Python code in one ```python code block."
    chat_end = "<|im_end|>\n<|im_start|>assistant\n"
    assert base == f"<|im_start|>user\n{example.question}\n\n{ask}{chat_end}"
    assert "return a + b" not in base and "assert add(0, 0) == 0" in base
    assert f"Reference solution:\n```python\n{example.reference}\n```" in reference
    assert reference.startswith(f"<|im_start|>user\n{example.question}\n\n")


def test_mini_problems_load_and_their_references_pass(no_hub: None) -> None:
    task = MBPPTask()
    examples = task.load("test", path=str(MINI))
    assert 8 <= len(examples) <= 12 and len({e.id for e in examples}) == len(examples)
    for e in examples:
        assert task.check(f"```python\n{e.reference}\n```", e).correct, e.id
    wrong = task.check("```python\ndef add_numbers(a, b):\n    return a * b\n```", examples[0])
    assert not wrong.correct


@pytest.mark.skipif(SHARED is None, reason="no shared MBPP data (../shared/data/mbpp)")
def test_real_references_pass_including_setup_code(no_hub: None) -> None:
    """The few-shot split and task 927 (the one training row with setup code) pass."""
    task = MBPPTask()
    examples = task.load("prompt", path=str(SHARED / "prompt.jsonl"))
    examples += [e for e in task.load("train", path=str(SHARED / "train.jsonl"))
                 if e.id == "mbpp-927"]
    assert len(examples) == 11
    failed = [e.id for e in examples if not task.check(f"```python\n{e.reference}\n```", e).correct]
    assert failed == []
