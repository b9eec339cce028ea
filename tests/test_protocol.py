"""The protocol of a run: which problems a limit draws, how a subset score is marked, what
is recorded for reproducing it, and the second MATH checker."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import yaml

from dasd.config import build_config, resolved_config
from dasd.tasks import Example, load_split, select_split
from dasd.tasks.sample import draw, stratum
from tests.conftest import write_jsonl


def pool(sizes: dict[tuple[int, str], int]) -> list[Example]:
    """Problems in file order, stratum after stratum (like the hub's MATH train split)."""
    return [Example(f"{level}-{subject}-{i}", "q", "r", "1", level, {"subject": subject})
            for (level, subject), size in sizes.items() for i in range(size)]


SIZES = {(1, "a"): 7, (1, "b"): 40, (2, "a"): 23, (2, "b"): 11, (3, "a"): 100, (3, "b"): 19}


@pytest.mark.parametrize("n", [1, 10, 33, 64, 150, 199])
def test_a_stratified_draw_follows_the_splits_proportions(n):
    examples = pool(SIZES)
    drawn = Counter(stratum(e) for e in draw(examples, n, seed=3))
    total = sum(SIZES.values())
    for (level, subject), size in SIZES.items():
        assert abs(drawn[(str(level), subject)] - n * size / total) <= 1
    assert sum(drawn.values()) == n


def test_a_draw_is_seeded_and_grows_by_adding_problems():
    examples = pool(SIZES)
    first = [e.id for e in draw(examples, 40, seed=0)]
    assert first == [e.id for e in draw(examples, 40, seed=0)]
    assert first != [e.id for e in draw(examples, 40, seed=1)]
    assert [e.id for e in draw(examples, 90, seed=0)][:40] == first  # a larger limit extends
    assert draw(examples, 5, 0, "first") == examples[:5]
    assert draw(examples, 500, 0) == examples == draw(examples, None, 0)  # whole split: file order


def test_the_hub_layout_first_2000_would_be_two_subjects(tmp_path):
    """MATH train on the hub is subject after subject: first-N is not representative."""
    rows = [{"problem": f"{s} {i}", "solution": "\\boxed{1}", "level": f"Level {1 + i % 5}",
             "type": s} for s in ("Algebra", "Geometry", "Precalculus") for i in range(30)]
    path = write_jsonl(tmp_path / "math.jsonl", rows)

    def subjects(sample):
        config = build_config(_Problems, {"task": "math", "data": str(path), "limit": 30,
                                          "sample": sample})
        return Counter(e.meta["subject"] for e in load_split(config)[2])

    assert subjects("first") == {"Algebra": 30}
    assert subjects("stratified") == {"Algebra": 10, "Geometry": 10, "Precalculus": 10}


def _problems_cls():
    from dasd.config import ProblemConfig

    return ProblemConfig


_Problems = _problems_cls()


@pytest.mark.parametrize("task, row", [
    ("gsm8k", lambda i: {"question": f"q{i}", "answer": f"s\n#### {i}"}),
    ("arc_challenge", lambda i: {"id": f"a{i}", "question": f"q{i}", "answerKey": "A",
                                 "choices": {"text": ["x", "y"], "label": ["A", "B"]}}),
    ("arith", lambda i: {"question": f"q{i}", "reference": "r", "answer": str(i)}),
])
def test_every_task_honours_the_seed(tmp_path, task, row):
    path = write_jsonl(tmp_path / "rows.jsonl", [row(i) for i in range(50)])

    def ids(seed):
        config = _Problems(task=task, data=str(path), limit=10, seed=seed, split="train")
        return [e.id for e in load_split(config)[2]]

    assert ids(0) == ids(0) and ids(0) != ids(1)


def test_generated_arith_keeps_its_own_seeded_problems():
    """arith makes its problems from the seed: a limit is how many, as before."""
    from dasd.tasks.arith import ArithTask

    config = _Problems(task="arith", split="test", limit=20)
    selection = select_split(config)
    assert selection.examples == ArithTask().load("test", limit=20)
    assert (selection.how, selection.split_size, selection.subset) == ("generated", None, False)


def test_a_limit_beyond_the_split_and_a_test_subset_are_warned(tmp_path, caplog):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": f"q{i}", "answer": f"#### {i}"}
                                              for i in range(8)])
    with caplog.at_level(logging.WARNING):
        short = select_split(_Problems(task="gsm8k", data=str(path), limit=20))
        subset = select_split(_Problems(task="gsm8k", data=str(path), split="test", limit=3),
                              evaluation=True)
    assert len(short.examples) == 8 and short.short and not short.subset
    assert f"limit 20 asks for more problems than gsm8k/train ({path}) has: using all 8" \
        in caplog.text
    assert subset.record()["n"] == 3 and subset.record()["of"] == 8
    assert f"evaluating on 3 of the 8 problems of gsm8k/test ({path})" in caplog.text


# --- results: subset marks and the rows training used --------------------------------------

def report(**eval_summary):
    ev = {"accuracy": 0.412, "n": 100, "correct": 41, "per_level": {}, **eval_summary}
    return {"name": "r", "model": "m", "task": "math", "total_seconds": 1, "methods": {
        "origin": {"eval": ev},
        "sd": {"generate": {"kept": 3, "samples": 10, "high_ppl_percent_kept": 5.0},
               "train": {"rows": {"read": 10, "used": 10, "replaced_by_reference": {}}},
               "eval": ev}}}


def test_the_results_table_marks_a_subset_and_shows_the_rows_trained_on():
    from dasd.results import results_markdown, results_rows

    subset = {"problems": {"n": 100, "of": 500, "subset": True}}
    header, rows = results_rows(report(**subset))
    assert rows[0][1] == "0.412 (100 of 500)"
    sd = dict(zip(header, rows[1], strict=True))
    assert (sd["correct/total"], sd["trained on"]) == ("3/10", "10")  # only_correct: false
    assert "100 of 500" in results_markdown(report(**subset))
    whole = {"problems": {"n": 100, "of": 100, "subset": False}}
    assert results_rows(report(**whole))[1][0][1] == "0.412 (100)"


def test_the_analysis_marks_a_subset():
    from dasd.analysis.tables import accuracy_table

    summary = {"n": 4, "correct": 3, "accuracy": 0.75, "per_level": {},
               "problems": {"n": 4, "of": 10, "subset": True}}
    (row,) = accuracy_table({"dasd": summary})
    assert (row["n"], row["of"], row["subset"]) == (4, 10, True)


# --- reproducibility ------------------------------------------------------------------------

def test_versions_are_recorded(capsys):
    from dasd.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    out = capsys.readouterr().out
    assert out.startswith("dasd ") and "  transformers " in out and "  torch " in out
    versions = resolved_config(_Problems())["versions"]
    assert {"torch", "transformers", "trl", "peft", "datasets"} <= set(versions)


def test_the_constraints_file_matches_the_upper_bounds():
    """Every pinned library is within the bounds pyproject.toml gives it."""
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    pins = dict(line.split("==") for line in (root / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    project = (root / "pyproject.toml").read_text()
    deps = [Requirement(line.strip().strip('",')) for line in project.splitlines()
            if line.strip().startswith('"') and any(op in line for op in (">=", "<"))]
    for dep in deps:
        if dep.name in pins:
            assert dep.specifier.contains(pins[dep.name]), (dep, pins[dep.name])
    assert {"transformers", "trl", "peft", "datasets", "accelerate"} <= set(pins)


# --- math-verify beside dasd's extraction ---------------------------------------------------

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


def test_run_config_yaml_records_the_drawn_problems(tmp_path):
    from dasd.run_config import RunConfig, problems_record, select_problems

    rows = [{"question": f"q{i}", "answer": f"s\n#### {i}"} for i in range(30)]
    data = write_jsonl(tmp_path / "g.jsonl", rows)
    config = build_config(RunConfig, {
        "task": "gsm8k", "methods": [{"name": "sd"}, {"name": "gold", "method": "reference"}],
        "generate": {"data": str(data), "limit": 12}, "eval": {"data": str(data)}})
    record = problems_record(select_problems(config), ids=True)
    (train,) = record["train"]
    assert train["methods"] == ["sd", "gold"] and len(train["ids"]) == 12
    assert record["test"]["n"] == 30 and not record["test"]["subset"]
    yaml.safe_dump(record)  # plain data, as config.yaml holds it
