"""Task custom: your rows, asked for and checked by the checker you name (math-verify,
exact, choice, code), from the command line to the exported conversation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from dasd.cli import main
from dasd.errors import DasdError
from dasd.records import read_jsonl
from dasd.tasks import get_task
from dasd.tasks.custom import CHECKERS, CustomTask
from dasd.tasks.mbpp import PROMPTS as CODE_PROMPTS
from dasd.tasks.prompts import BOXED_PROMPTS, CHOICE_PROMPTS, NUMERIC_PROMPTS
from tests.conftest import write_jsonl


def load(tmp_path: Path, checker: str, rows: list[dict], **options):
    path = write_jsonl(tmp_path / f"{checker}.jsonl", rows)
    return get_task("custom", checker).load("train", str(path), **options)


def test_the_checker_picks_the_prompts() -> None:
    assert list(CHECKERS) == ["math-verify", "exact", "choice", "code"]
    prompts = {name: get_task("custom", name).prompts for name in CHECKERS}
    assert prompts == {"math-verify": BOXED_PROMPTS, "exact": NUMERIC_PROMPTS,
                       "choice": CHOICE_PROMPTS, "code": CODE_PROMPTS}
    assert get_task("custom", "code").check_workers == min(8, os.cpu_count() or 1)
    assert get_task("custom", "math-verify").check_workers == 1  # signals: main thread only


def test_exact_compares_numbers_as_numbers_and_text_up_to_case_and_spacing(tmp_path) -> None:
    number, word = load(tmp_path, "exact", [
        {"id": "n", "question": "3 * 6?", "reference": "3 * 6 = 18.", "answer": 18, "level": 2},
        {"question": "Capital of France?", "reference": "It is Paris.", "answer": " New  York"}])
    assert (number.id, number.level, word.id, word.level) == ("n", 2, "custom-train-1", None)
    task = get_task("custom", "exact")
    assert task.check("So 3 * 6 = 18.00, and the answer is 18.00.", number).correct
    assert task.check("The answer is $18.", number).extracted == "18"
    assert not task.check("The answer is 17.", number).correct
    assert task.check("The answer is new   york.", word).correct
    assert not task.check("The answer is York.", word).correct
    assert not task.check("I do not know", word).correct


def test_math_verify_checks_as_math_does(tmp_path) -> None:
    [example] = load(tmp_path, "math-verify", [
        {"question": "What is 1/2 + 0?", "reference": "It is $\\boxed{\\frac{1}{2}}$.",
         "answer": "\\frac{1}{2}"}])
    task = get_task("custom", "math-verify")
    right = "So the result is $\\boxed{\\frac12}$."
    assert task.check(right, example).correct
    assert not task.check("So the result is $\\boxed{2}$.", example).correct
    assert task.other_checks(right, example)["math_verify"].correct


def test_choice_takes_a_list_or_arcs_layout(tmp_path) -> None:
    listed, arc = load(tmp_path, "choice", [
        {"question": "Which is wet?", "choices": ["dry palms", "wet palms"],
         "answer": "wet palms"},
        {"question": "Which is first?", "choices": {"label": ["1", "2", "3"],
                                                     "text": ["one", "two", "three"]},
         "answer": "1", "reference": "One comes first."}])
    assert listed.question == "Which is wet?\n\n(A) dry palms\n(B) wet palms"
    assert (listed.answer, listed.reference) == ("B", "The correct answer is (B) wet palms.")
    assert (arc.answer, arc.reference, arc.meta["labels"]) == ("1", "One comes first.",
                                                               ["1", "2", "3"])
    task = get_task("custom", "choice")
    assert task.check("The answer is (B).", listed).correct
    assert not task.check("The answer is (A).", listed).correct
    assert task.check("The answer is 1.", arc).correct


def test_code_runs_the_tests_in_the_sandbox(tmp_path) -> None:
    [example] = load(tmp_path, "code", [
        {"id": 7, "question": "Write add(a, b).", "reference": "def add(a, b):\r\n  return a+b",
         "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}])
    assert example.id == "7" and example.answer == "assert add(1, 2) == 3"
    assert example.question.endswith("these tests:\n\nassert add(1, 2) == 3\n"
                                     "assert add(0, 0) == 0")
    assert example.reference == "def add(a, b):\n  return a+b"
    task = get_task("custom", "code")
    good, bad = task.check_many([("```python\ndef add(a, b):\n    return b + a\n```", example),
                                 ("```python\ndef add(a, b):\n    return 3\n```", example)])
    assert (good.correct, good.outcome, bad.correct, bad.outcome) == (True, "passed", False,
                                                                      "failed")


@pytest.mark.parametrize("checker, row, message", [
    ("exact", {"question": "q", "reference": "r"}, r"custom.jsonl:1: missing field 'answer'"),
    ("exact", {"question": "q", "reference": "r", "answer": " "}, r"empty 'answer'"),
    ("exact", {"question": "q", "reference": " ", "answer": "1"}, r"empty reference solution"),
    ("exact", {"question": "q", "reference": "r", "answer": "1", "level": "hard"},
     r"level must be an integer"),
    ("choice", {"question": "q", "choices": ["a", "b"], "answer": "C"},
     r"answer 'C' is neither a label \(A, B\) nor an option's text"),
    ("choice", {"question": "q", "choices": ["a"], "answer": "A"}, r"two or more distinct"),
    ("choice", {"question": "q", "choices": "a, b", "answer": "A"}, r"'choices' must be an"),
    ("code", {"question": "q", "reference": "x = 1", "tests": "assert x"},
     r"'tests' must be a list of assert strings"),
    ("code", {"question": "q", "reference": "x = 1", "tests": []}, r"'tests' is empty"),
])
def test_malformed_rows_are_one_line_errors(tmp_path, checker, row, message) -> None:
    path = write_jsonl(tmp_path / "custom.jsonl", [row])
    with pytest.raises(DasdError, match=message):
        get_task("custom", checker).load("train", str(path))


@pytest.mark.parametrize("args, message", [
    (("custom",), r"^task 'custom' needs a checker: set checker \(--checker\) to one of "
                  r"math-verify, exact, choice, code$"),
    (("custom", "exakt"), r"^unknown checker 'exakt': choose one of math-verify, exact, "
                          r"choice, code \(did you mean 'exact'\?\)$"),
    (("gsm8k", "exact"), r"^checker 'exact' is for task custom; task 'gsm8k' checks its "
                         r"answers its own way"),
])
def test_the_checker_is_needed_known_and_only_for_custom(args, message) -> None:
    with pytest.raises(DasdError, match=message):
        get_task(*args)


def test_custom_has_no_hub_data_set() -> None:
    with pytest.raises(DasdError, match=r"task 'custom' has no hub data set: .*--data .*"
                                        r"--dataset-name"):
        CustomTask("exact").load("train")


# --- end to end: the command line, the resolved config, the export -------------------------

MINE = [{"q": f"What is {i} + {i}?", "sol": f"{i} + {i} = {2 * i}.", "final": 2 * i}
        for i in range(1, 4)]


@pytest.fixture
def model_dir(tmp_path, tokenizer, tiny_model) -> Path:
    tiny_model.float().save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_generate_on_my_own_file_from_the_command_line(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_jsonl(tmp_path / "mine.jsonl", MINE)
    out = tmp_path / "r" / "generate" / "sd.jsonl"
    code = main(["generate", "--task", "custom", "--checker", "exact", "--data", str(data),
                 "--columns", "question=q,reference=sol,answer=final", "--model", str(model_dir),
                 "--method", "sd", "--max-new-tokens", "6", "--out", str(out)])
    assert code == 0
    rows = read_jsonl(out)
    assert [(r["task"], r["question"], r["gold_answer"]) for r in rows] == [
        ("custom", m["q"], str(m["final"])) for m in MINE]
    assert all("The answer is N." in r["prompt"] for r in rows)  # exact's prompts
    saved = yaml.safe_load((tmp_path / "r" / "generate" / "sd.config.yaml").read_text())
    assert saved["checker"] == "exact" and saved["dataset_name"] is None
    assert saved["columns"] == {"question": "q", "reference": "sol", "answer": "final"}
    summary = json.loads((tmp_path / "r" / "generate" / "sd.summary.json").read_text())
    assert summary["problems"]["source"] == str(data)

    from dasd.export import ExportConfig, export  # the conversation comes back from it

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    export(ExportConfig(path=str(tmp_path / "r"), out=str(tmp_path / "x"),
                        style="conversational", only_correct=False, format="jsonl"))
    exported = read_jsonl(tmp_path / "x" / "data" / "train.jsonl")
    assert [e["prompt"][-1]["content"] for e in exported] == [
        NUMERIC_PROMPTS.base.replace("{question}", m["q"]) for m in MINE]


def test_a_data_set_folder_is_recorded_in_the_resolved_config(tmp_path, model_dir,
                                                              monkeypatch):
    import datasets
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    (tmp_path / "my-set").mkdir()
    write_jsonl(tmp_path / "my-set" / "test.jsonl", [
        {"question": m["q"], "choices": [str(m["final"]), "0"], "answer": "A"} for m in MINE])
    out = tmp_path / "eval" / "origin.jsonl"
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "task": "custom", "checker": "choice", "dataset_name": str(tmp_path / "my-set"),
        "split": "test", "model": str(model_dir), "max_new_tokens": 4, "out": str(out)}))
    assert main(["eval", "--config", str(config)]) == 0
    saved = yaml.safe_load((tmp_path / "eval" / "origin.config.yaml").read_text())
    assert (saved["checker"], saved["dataset_name"]) == ("choice", str(tmp_path / "my-set"))
    assert len(read_jsonl(out)) == 3
