"""ARC-Challenge: loading (local files, hub layout, malformed rows), prompts and checking."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from dasd.errors import DasdError
from dasd.scoring import AnswerCheck
from dasd.tasks import get_task
from dasd.tasks.arc import ARCTask, reference_solution
from dasd.tasks.prompts import CHOICE_PROMPTS, check_template, render_prompts
from tests.conftest import make_tokenizer, write_jsonl


def _arc_data() -> Path:
    """Real ARC rows: $DASD_SHARED_DATA, else ../shared/data beside the checkout, else
    /work/shared/data."""
    candidates = [os.environ.get("DASD_SHARED_DATA"),
                  Path(__file__).resolve().parents[3] / "shared" / "data", "/work/shared/data"]
    found = [Path(c) for c in candidates if c and Path(c).is_dir()]
    return (found[0] if found else Path(candidates[1])) / "arc_challenge"


ARC = _arc_data()

PALMS = {"id": "Mercury_SC_415702",
         "question": "George wants to warm his hands quickly by rubbing them. "
                     "Which skin surface will produce the most heat?",
         "choices": {"text": ["dry palms", "wet palms", "palms covered with oil",
                              "palms covered with lotion"], "label": ["A", "B", "C", "D"]},
         "answerKey": "A"}
DIGITS = {"id": "q-digits", "question": "Which season is coldest?",
          "choices": {"text": ["winter", "spring", "summer", "fall"],
                      "label": ["1", "2", "3", "4"]}, "answerKey": "1"}
THREE = {"id": "q-three", "question": "What is ice?",
         "choices": {"text": ["a solid.", "a liquid.", "a gas."], "label": ["A", "B", "C"]},
         "answerKey": "A"}
FIVE = {"question": "Pick the mammal.",
        "choices": {"text": ["shark", "trout", "whale", "frog", "crab"],
                    "label": ["A", "B", "C", "D", "E"]}, "answerKey": "C"}






def test_registered() -> None:
    task = get_task("arc_challenge")
    assert isinstance(task, ARCTask) and task.prompts is CHOICE_PROMPTS
    check_template(task.prompts, "arc_challenge")


def test_loads_local_file(tmp_path: Path, no_hub: None) -> None:
    path = write_jsonl(tmp_path / "arc.jsonl", [PALMS, DIGITS, THREE, FIVE])
    palms, digits, three, five = ARCTask().load("test", path=str(path))
    assert palms.id == "Mercury_SC_415702" and palms.answer == "A" and palms.level is None
    assert palms.question == (
        "George wants to warm his hands quickly by rubbing them. Which skin surface will "
        "produce the most heat?\n\n(A) dry palms\n(B) wet palms\n(C) palms covered with oil\n"
        "(D) palms covered with lotion")
    assert palms.reference == "The correct answer is (A) dry palms."
    assert digits.question.endswith("\n\n(1) winter\n(2) spring\n(3) summer\n(4) fall")
    assert (digits.answer, digits.reference) == ("1", "The correct answer is (1) winter.")
    assert three.reference == "The correct answer is (A) a solid."
    assert three.meta["labels"] == ["A", "B", "C"]
    assert (five.id, five.answer) == ("arc_challenge-test-3", "C")
    assert five.question.endswith("(E) crab")
    assert ARCTask().load("test", path=str(path), limit=2) == [palms, digits]


def test_parquet_in_hub_layout(tmp_path: Path, no_hub: None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([PALMS, DIGITS]), tmp_path / "arc.parquet")
    palms, digits = ARCTask().load("validation", path=str(tmp_path / "arc.parquet"))
    assert (palms.answer, digits.answer) == ("A", "1")
    assert digits.meta["options"] == ["winter", "spring", "summer", "fall"]


def test_hub_is_ai2_arc_challenge(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(hub_id: str, config: str | None, split: str) -> list[dict]:
        calls.append((hub_id, config, split))
        return [PALMS, DIGITS, THREE]

    monkeypatch.setattr("dasd.tasks.base.load_hub_rows", fake)
    examples = ARCTask().load("validation", limit=2)
    assert calls == [("allenai/ai2_arc", "ARC-Challenge", "validation")]
    assert calls[0][:2] == (ARCTask.hub_id, ARCTask.hub_config)
    assert [e.answer for e in examples] == ["A", "1"]
    with pytest.raises(DasdError, match="no split 'dev'"):
        ARCTask().load("dev")


def test_wrong_path() -> None:
    with pytest.raises(DasdError, match="data file not found: .*nowhere.jsonl"):
        ARCTask().load("train", path="/nowhere/nowhere.jsonl")


BAD_ROWS = [
    ({"question": "q", "answerKey": "A"}, r"missing field 'choices'"),
    ({**PALMS, "answerKey": "E"}, r"answerKey 'E' is not one of the labels A, B, C, D"),
    ({**PALMS, "answerKey": "1"}, r"answerKey '1' is not one of the labels"),
    ({**PALMS, "choices": {"text": ["x", "y", "z"], "label": ["A", "B"]}},
     r"3 option texts but 2 labels"),
    ({**PALMS, "choices": ["dry", "wet"]}, r"'choices' must be an object"),
    ({**PALMS, "choices": {"text": ["x", "y"], "label": ["A", "A"]}},
     r"needs two or more distinct labels"),
    ({**PALMS, "choices": {"text": ["x", "y"], "label": ["AB", "CD"]}},
     r"labels must be single letters"),
    ({**PALMS, "choices": {"text": ["x", " "], "label": ["A", "B"]}}, r"an option text is empty"),
    ({**PALMS, "question": "  "}, r"empty 'question'"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_malformed_row_is_named(tmp_path: Path, row: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "arc.jsonl", [PALMS, row])
    with pytest.raises(DasdError, match=r"arc.jsonl:2: " + message) as error:
        ARCTask().load("train", path=str(path))
    assert str(error.value).endswith("(1 of 2 ARC rows are malformed; fix or remove them)")


def test_malformed_rows_are_counted(tmp_path: Path) -> None:
    rows = [PALMS, {**PALMS, "answerKey": "Z"}, DIGITS, {"question": "q"}, THREE]
    path = write_jsonl(tmp_path / "arc.jsonl", rows)
    with pytest.raises(DasdError) as error:
        ARCTask().load("train", path=str(path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:2: answerKey 'Z'")
    assert "(2 of 5 ARC rows are malformed" in message
    # rows past the limit are not read, so a clean head still loads
    assert len(ARCTask().load("train", path=str(path), limit=1)) == 1


def test_reference_solution() -> None:
    assert reference_solution("B", "wet palms") == "The correct answer is (B) wet palms."
    assert reference_solution("2", "It melts. ") == "The correct answer is (2) It melts."
    assert reference_solution("C", "Why?") == "The correct answer is (C) Why?"


def test_prompts_show_options_and_only_the_reference_context_the_answer(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "arc.jsonl", [DIGITS])
    task = ARCTask()
    (example,) = task.load("train", path=str(path))
    base, ref = render_prompts(make_tokenizer(), task.prompts, example)
    ending = 'End with "The answer is (X).", where X is the label of the correct option.'
    assert base == ("<|im_start|>user\nWhich season is coldest?\n\n(1) winter\n(2) spring\n"
                    f"(3) summer\n(4) fall\n\n{ending}<|im_end|>\n<|im_start|>assistant\n")
    assert "The correct answer is (1) winter." not in base
    assert ref.startswith("<|im_start|>user\nWhich season is coldest?\n\n(1) winter\n")
    assert "Reference solution:\n---\nThe correct answer is (1) winter.\n---\n" in ref
    assert ref.endswith(f"{ending}<|im_end|>\n<|im_start|>assistant\n")
    plain, _ = render_prompts(make_tokenizer(chat_template=None), task.prompts, example)
    assert plain.startswith("Question: Which season is coldest?\n\n(1) winter")
    assert plain.endswith(f"{ending}\n\nAnswer:")


def test_check_uses_the_labels_and_options(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "arc.jsonl", [PALMS, DIGITS])
    task = ARCTask()
    palms, digits = task.load("train", path=str(path))
    assert task.check("Friction... The answer is (A).", palms).correct
    assert not task.check("The answer is (B).", palms).correct
    assert task.check("A plant... I think dry palms.", palms).how == "option-text"
    check = task.check("The answer is winter.", digits)
    assert (check.extracted, check.how, check.correct) == ("1", "final-answer", True)
    assert not task.check("The answer is (A).", digits).correct


@pytest.mark.parametrize("split", ["train", "validation"])
def test_real_rows_load_and_their_references_pass(split: str, no_hub: None) -> None:
    path = ARC / f"{split}.jsonl"
    if not ARC.is_dir():
        pytest.skip(f"{ARC} not present")
    task = ARCTask()
    examples = task.load(split, path=str(path))
    expected = {"train": 1119, "validation": 299}[split]
    assert len(examples) == expected == len(path.read_text().splitlines())
    failures = [e.id for e in examples
                if task.check(e.reference, e) != AnswerCheck(e.answer, "final-answer", True)]
    assert failures == []
    sizes = Counter(len(e.meta["labels"]) for e in examples)
    assert set(sizes) <= {3, 4, 5} and sizes[4] > 0.9 * expected
    assert any(e.meta["labels"][0] == "1" for e in examples)
    wrongly_right = [(e.id, label) for e in examples for label in e.meta["labels"]
                     if label != e.answer and task.check(f"The answer is ({label}).", e).correct]
    assert wrongly_right == []


def test_generate_stage_runs_on_arc(tmp_path: Path, tiny_model, tokenizer, one_thread) -> None:
    """The whole generate stage takes ARC rows: options in both prompts, labels as gold."""
    from dasd.decoding.generate import GenerateConfig, generate

    data = write_jsonl(tmp_path / "arc.jsonl", [PALMS, DIGITS])
    out = tmp_path / "gen.jsonl"
    config = GenerateConfig(task="arc_challenge", data=str(data), split="train", limit=2,
                            batch_size=2, max_new_tokens=4, out=str(out))
    generate(config, model=tiny_model, tokenizer=tokenizer)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["gold_answer"] for row in rows] == ["A", "1"]
    assert "(4) fall" in rows[1]["prompt"] and "(4) fall" in rows[1]["ref_prompt"]
    assert "The correct answer is (1) winter." in rows[1]["ref_prompt"]
    hows = {"final-answer", "boxed", "last-line", "option-text", "last-label", "none"}
    assert all(row["answer_how"] in hows for row in rows)
