"""Tasks: registry, loading, the arith generator, row errors and prompt rendering."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from dasd.errors import DasdError
from dasd.tasks import TASKS, Example, PromptTemplate, get_task
from dasd.tasks import io as task_io
from dasd.tasks.arith import ArithTask, generate
from dasd.tasks.gsm8k import GSM8KTask, parse_solution
from dasd.tasks.io import parse_level
from dasd.tasks.math import MathTask
from dasd.tasks.prompts import check_template, load_prompt_template, render_prompts
from tests.conftest import write_jsonl


def _shared_data() -> Path:
    """Real benchmark rows for checks: $DASD_SHARED_DATA, else ../shared/data beside the
    checkout, else the workspace's /work/shared/data (a fresh clone may live elsewhere)."""
    candidates = [os.environ.get("DASD_SHARED_DATA"),
                  Path(__file__).resolve().parents[3] / "shared" / "data", "/work/shared/data"]
    found = [Path(c) for c in candidates if c and Path(c).is_dir()]
    return found[0] if found else Path(candidates[1])


DATA = _shared_data()
GSM8K_TRAIN = DATA / "gsm8k" / "train.jsonl"
MATH_TRAIN = DATA / "math" / "train.jsonl"






# --- registry -------------------------------------------------------------------------------

def test_a_task_with_only_files_needs_data(tmp_path: Path) -> None:
    """The shared loading in `Task`: a task that maps its rows and has no hub data set
    reads a file, and without one is a one-line error asking for it."""
    from dasd.scoring import answers
    from dasd.tasks.base import Task
    from dasd.tasks.prompts import NUMERIC_PROMPTS

    class QATask(Task):
        name, prompts = "qa", NUMERIC_PROMPTS

        def examples(self, rows, split, limit, source):
            return [Example(f"qa-{i}", r["question"], r["solution"], str(r["answer"]))
                    for i, r in enumerate(rows[:limit])]

        def check(self, response, example):
            return answers.check_numeric(response, example.answer)

    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": f"{i} + 1?", "solution": f"The answer is {i + 1}.", "answer": i + 1}
        for i in range(3)])
    assert [e.answer for e in QATask().load("train", str(path), limit=2)] == ["1", "2"]
    with pytest.raises(DasdError, match="task 'qa' has no hub data set: pass a local"):
        QATask().load("train")


def test_registry() -> None:
    assert set(TASKS) == {"arith", "gsm8k", "math", "arc_challenge", "mbpp", "aime", "custom"}
    for name, cls in TASKS.items():
        task = get_task(name, "exact" if name == "custom" else None)
        assert isinstance(task, cls) and task.name == name
        check_template(task.prompts, name)
        assert task.prompts.system is None


def test_unknown_task_suggests() -> None:
    with pytest.raises(DasdError, match=r"unknown task 'gsmk8': choose one of arith, gsm8k, "
                                        r"math, .*\(did you mean 'gsm8k'\?\)"):
        get_task("gsmk8")
    with pytest.raises(DasdError) as error:
        get_task("zzz")
    assert "did you mean" not in str(error.value)


# --- arith ----------------------------------------------------------------------------------

_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def test_arith_is_deterministic_per_seed() -> None:
    task = ArithTask()
    assert task.load("train", limit=20) == task.load("train", limit=20)
    assert task.load("train", limit=20, seed=1) != task.load("train", limit=20)
    assert task.load("train", limit=5) == task.load("train", limit=20)[:5]
    assert len(task.load("test")) == 500


def test_arith_levels_cycle_and_ids() -> None:
    examples = ArithTask().load("validation", limit=23)
    assert [e.level for e in examples] == [i % 5 + 1 for i in range(23)]
    assert examples[17].id == "arith-validation-00017"
    counts = Counter(e.level for e in ArithTask().load("train", limit=100))
    assert set(counts.values()) == {20}


def test_arith_splits_are_disjoint() -> None:
    questions = {split: {e.question for e in generate(split, 1000)}
                 for split in ("train", "validation", "test")}
    assert all(len(qs) == 1000 for qs in questions.values())
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]


def test_arith_references_are_right_and_checked_correct() -> None:
    task = ArithTask()
    for example in task.load("train", limit=400):
        lines = example.reference.split("\n")
        assert len(lines) == example.level + 2
        assert lines[-1] == f"The answer is {example.answer}."
        steps = [_STEP.search(line).groups() for line in lines[1:-1]]
        for left, op, right, result in steps:
            a, b, c = int(left), int(right), int(result)
            assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
            assert op != "/" or a % b == 0
            assert 0 <= c <= 300
        assert steps[-1][3] == example.answer
        assert [s[1] for s in steps] == example.meta["steps"]
        check = task.check(example.reference, example)
        assert check.correct and check.how == "final-answer"
        assert not task.check("The answer is 100000.", example).correct


def test_arith_wording_varies() -> None:
    examples = ArithTask().load("train", limit=500)
    templates = Counter(t for e in examples for t in e.meta["templates"])
    assert len(templates) >= 80
    assert len({e.meta["theme"] for e in examples}) >= 6
    assert len({e.question.split(". ")[0].split()[0] for e in examples}) >= 20
    assert max(templates.values()) < 0.1 * sum(templates.values())
    ops = Counter(op for e in examples for op in e.meta["steps"])
    assert set(ops) == {"+", "-", "*", "/"}


def test_arith_level_one_is_short() -> None:
    level_one = [e for e in ArithTask().load("test", limit=500) if e.level == 1]
    lengths = [len(e.question.split()) for e in level_one]
    assert max(lengths) <= 40 and sum(lengths) / len(lengths) <= 25
    assert all(int(e.answer) <= 40 for e in level_one)


def test_arith_from_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"question": "1+1?", "solution": "1 + 1 = 2. The answer is 2.", "answer": 2, "level": 1},
        {"question": "2+2?", "reference": "The answer is 4.", "answer": "4", "id": "q2"},
    ])
    first, second = ArithTask().load("test", path=str(path))
    assert (first.id, first.answer, first.level) == ("arith-test-00000", "2", 1)
    assert (second.id, second.reference, second.level) == ("q2", "The answer is 4.", None)
    assert ArithTask().load("test", path=str(path), limit=1) == [first]


def test_bad_split_and_limit() -> None:
    with pytest.raises(DasdError, match="no split 'dev'"):
        ArithTask().load("dev")
    with pytest.raises(DasdError, match="no split 'validation'"):
        GSM8KTask().load("validation")
    with pytest.raises(DasdError, match="limit"):
        ArithTask().load("train", limit=-1)


# --- GSM8K ----------------------------------------------------------------------------------

def test_gsm8k_parse_solution() -> None:
    answer = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 1,072")
    reference, gold = parse_solution(answer, "row")
    assert gold == "1072"
    assert reference == ("Natalia sold 48/2 = 24 clips in May.\n"
                         "Natalia sold 48+24 = 72 clips altogether.\nThe answer is 1072.")
    with pytest.raises(DasdError, match=r"row: .*'#### N'"):
        parse_solution("no final line", "row")


def test_gsm8k_loads_local_file(no_hub: None) -> None:
    if not GSM8K_TRAIN.is_file():
        pytest.skip(f"{GSM8K_TRAIN} not present")
    task = GSM8KTask()
    examples = task.load("train", path=str(GSM8K_TRAIN), limit=200)
    assert len(examples) == 200
    assert examples[0].id == "gsm8k-train-0" and examples[0].answer == "72"
    failures = [e.id for e in examples if not task.check(e.reference, e).correct]
    assert failures == []
    for example in examples:
        assert "<<" not in example.reference and "####" not in example.reference
        assert example.reference.endswith(f"The answer is {example.answer}.")
        assert example.level is None and "," not in example.answer


# --- MATH -----------------------------------------------------------------------------------

def test_math_loads_local_file(no_hub: None) -> None:
    if not MATH_TRAIN.is_file():
        pytest.skip(f"{MATH_TRAIN} not present")
    task = MathTask()
    examples = task.load("train", path=str(MATH_TRAIN), limit=200)
    assert len(examples) == 200
    assert examples[0].id.startswith("train/") and examples[0].id.endswith(".json")
    assert all(e.level in {1, 2, 3, 4, 5} for e in examples)
    assert all(e.meta["subject"] for e in examples)
    failures = [(e.id, e.answer) for e in examples if not task.check(e.reference, e).correct]
    assert failures == []


def test_math_hub_layout(tmp_path: Path) -> None:
    """hendrycks_math rows: "Level 3" strings, `type`, no `answer`, no `unique_id`."""
    path = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "What is $1/2$?", "solution": "It is $\\boxed{\\frac{1}{2}}$.",
         "level": "Level 3", "type": "Algebra"},
        {"problem": "?", "solution": "So \\boxed{}.", "answer": "", "level": None},
        {"problem": "Odd", "solution": "Thus \\boxed 9.", "level": "Level ?"},
    ])
    task = MathTask()
    first, third = task.load("test", path=str(path))
    assert (first.id, first.answer, first.level, first.meta["subject"]) == \
        ("math-test-0", "\\frac{1}{2}", 3, "Algebra")
    assert (third.id, third.answer, third.level) == ("math-test-2", "9", None)
    assert task.check("The answer is $0.5$.", first).correct
    assert not task.check("The answer is $\\frac{1}{3}$.", first).correct
    assert task.load("test", path=str(path), limit=1) == [first]


def test_parse_level() -> None:
    levels = [parse_level(v, "x.jsonl:1") for v in ("Level 3", 4, None, "Level ?", "2")]
    assert levels == [3, 4, None, None, 2]
    with pytest.raises(DasdError, match=r"x.jsonl:1: level must be an integer .* got 'hard'"):
        parse_level("hard", "x.jsonl:1")


@pytest.mark.parametrize("task, row, message", [
    ("arith", {"question": "1+1?", "reference": "2", "answer": "2", "level": "hard"},
     "rows.jsonl:1: level must be an integer"),
    ("math", {"problem": "p", "solution": "\\boxed{1}", "level": "hard"},
     "rows.jsonl:1: level must be an integer"),
    ("gsm8k", {"question": ["a", "list"], "answer": "x #### 1"},
     "rows.jsonl:1: field 'question' must be text, got list"),
    ("gsm8k", {"question": "what is \ud800?", "answer": "x #### 1"},
     "rows.jsonl:1: field 'question' holds a lone UTF-16 surrogate"),
])
def test_malformed_rows_are_one_line_errors(tmp_path, task, row, message) -> None:
    from dasd.tasks import get_task

    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DasdError, match=message) as err:
        get_task(task).load("train", path=str(path))
    assert "\n" not in str(err.value)


# --- reading rows and their errors ----------------------------------------------------------

def test_read_rows_formats(tmp_path: Path) -> None:
    rows = [{"question": "q", "answer": "a"}, {"question": "r", "answer": "b"}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert task_io.read_rows(tmp_path / "rows.json") == rows
    assert task_io.read_rows(write_jsonl(tmp_path / "rows.jsonl", rows)) == rows
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    assert task_io.read_rows(tmp_path / "rows.parquet") == rows


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DasdError, match="data file not found: .*nope.jsonl"):
        task_io.read_rows(tmp_path / "nope.jsonl")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(DasdError, match=r"rows.csv: unknown extension '.csv'"):
        task_io.read_rows(tmp_path / "rows.csv")


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": oops}\n')
    with pytest.raises(DasdError, match=r"bad.jsonl:2: not valid JSON"):
        GSM8KTask().load("train", path=str(path))
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DasdError, match=r"bad.jsonl:2: expected a JSON object"):
        task_io.read_rows(path)


def test_missing_field_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"question": "q", "answer": "#### 1"}, {"question": "q"}])
    message = r"train.jsonl:2: missing field 'answer' \(row has: question\)"
    with pytest.raises(DasdError, match=message):
        GSM8KTask().load("train", path=str(path))
    path = write_jsonl(tmp_path / "math.jsonl", [{"level": 1}])
    with pytest.raises(DasdError, match=r"math.jsonl:1: missing fields 'problem', 'solution'"):
        MathTask().load("train", path=str(path))


def test_empty_reference_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"question": "q", "reference": "ok", "answer": "1"},
        {"question": "q", "reference": "  \n", "answer": "1"}])
    message = r"empty reference solution \('reference'\) in .*train.jsonl:2"
    with pytest.raises(DasdError, match=message):
        ArithTask().load("train", path=str(path))


def test_hub_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def fail(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub\n(traceback details)")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DasdError) as error:
        GSM8KTask().load("test", limit=3)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("could not load 'openai/gsm8k' (main, test) from the hub: "
                              "Couldn't reach")
    assert message.endswith("pass a local JSONL/Parquet file with --data instead")


# --- prompts --------------------------------------------------------------------------------

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
          "{% if think is defined and think %}<think>{% endif %}{% endif %}")


def _tokenizer(chat_template: str | None):
    """A tiny word-level tokenizer built in code (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="[UNK]")
    tokenizer.chat_template = chat_template
    return tokenizer


EXAMPLE = Example("x-1", "What is {reference} 2+2?", "2 + 2 = 4.\nThe answer is 4.", "4")


def test_render_with_chat_template() -> None:
    template = PromptTemplate("Q: {question} Box it: \\boxed{}", "Q: {question}\nRef: {reference}")
    base, ref = render_prompts(_tokenizer(CHATML), template, EXAMPLE)
    assert base == ("<|im_start|>user\nQ: What is {reference} 2+2? Box it: \\boxed{}<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert ref == ("<|im_start|>user\nQ: What is {reference} 2+2?\nRef: 2 + 2 = 4.\n"
                   "The answer is 4.<|im_end|>\n<|im_start|>assistant\n")
    system = PromptTemplate(template.base, template.reference, system="Be brief.")
    base, _ = render_prompts(_tokenizer(CHATML), system, EXAMPLE,
                             SimpleNamespace(chat_template_kwargs={"think": True}))
    assert base.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert base.endswith("<|im_start|>assistant\n<think>")


def test_render_without_chat_template() -> None:
    template = PromptTemplate("{question}", "{question}\n{reference}", system="Be brief.")
    base, ref = render_prompts(_tokenizer(None), template, EXAMPLE)
    assert base == "Be brief.\n\nQuestion: What is {reference} 2+2?\n\nAnswer:"
    assert ref.startswith("Be brief.\n\nQuestion: What is {reference} 2+2?\n2 + 2 = 4.")


def test_default_prompts_contain_the_reference_only_in_the_reference_context() -> None:
    for name in TASKS:
        task = get_task(name, "exact" if name == "custom" else None)
        base, ref = render_prompts(_tokenizer(CHATML), task.prompts, EXAMPLE)
        assert "2 + 2 = 4." not in base and "2 + 2 = 4." in ref


def test_load_prompt_template(tmp_path: Path) -> None:
    path = tmp_path / "prompts.yaml"
    path.write_text('base: "{question} Put it in \\\\boxed{}."\n'
                    'reference: "{question}\\n{reference}"\nsystem: "Hi"\n')
    template = load_prompt_template(path)
    assert template == PromptTemplate("{question} Put it in \\boxed{}.",
                                      "{question}\n{reference}", "Hi")
    bad = {
        'reference: "{question} {reference}"\n': "missing or empty 'base'",
        'base: "Solve."\nreference: "{question} {reference}"\n':
            "'base' prompt lacks the {question}",
        'base: "{question}"\nreference: "{question}"\n': "'reference' prompt lacks the {reference}",
        'base: "{question} {reference}"\nreference: "{question} {reference}"\n':
            "'base' prompt must not contain {reference}",
        'base: "{question}"\nreference: "{question} {reference}"\nextra: 1\n': "unknown key",
        "- just a list\n": "expected a mapping",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(DasdError, match=re.escape(message)):
            load_prompt_template(path)
    with pytest.raises(DasdError, match="prompt file not found"):
        load_prompt_template(tmp_path / "none.yaml")


def test_aime_reads_its_layouts_and_refuses_answers_out_of_range(tmp_path: Path) -> None:
    from dasd.tasks.aime import AIMETask

    path = write_jsonl(tmp_path / "aime.jsonl", [
        {"ID": "2024-I-1", "Problem": "p1", "Solution": "s1 $\\boxed{204}$", "Answer": 204},
        {"problem": "p2", "answer": "033"},
    ])
    first, second = AIMETask().load("test", str(path))
    assert (first.id, first.reference, first.answer) == ("2024-I-1", "s1 $\\boxed{204}$", "204")
    assert (second.id, second.reference, second.answer) == ("aime-test-1", "The answer is 33.",
                                                           "33")
    assert AIMETask().check("So $\\boxed{33}$.", second).correct
    assert not AIMETask().check("The answer is 34.", second).correct
    for bad in ({"problem": "p", "answer": 1000}, {"problem": "p", "answer": "1/2"},
                {"problem": "p"}):
        with pytest.raises(DasdError, match="aime.jsonl"):
            AIMETask().load("test", str(write_jsonl(tmp_path / "aime.jsonl", [bad])))
    with pytest.raises(DasdError, match="task 'aime' has no hub data set"):
        AIMETask().load("test")
