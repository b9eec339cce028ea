"""Which problems a stage draws: stratified, seeded draws that grow by adding problems; every
task honours the seed; limits beyond a split and test subsets are warned."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from dasd.config import ProblemConfig, build_config
from dasd.errors import DasdError
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
        config = build_config(ProblemConfig, {"task": "math", "data": str(path), "limit": 30,
                                          "sample": sample})
        return Counter(e.meta["subject"] for e in load_split(config)[2])

    assert subjects("first") == {"Algebra": 30}
    assert subjects("stratified") == {"Algebra": 10, "Geometry": 10, "Precalculus": 10}


@pytest.mark.parametrize("task, row", [
    ("gsm8k", lambda i: {"question": f"q{i}", "answer": f"s\n#### {i}"}),
    ("arc_challenge", lambda i: {"id": f"a{i}", "question": f"q{i}", "answerKey": "A",
                                 "choices": {"text": ["x", "y"], "label": ["A", "B"]}}),
    ("arith", lambda i: {"question": f"q{i}", "reference": "r", "answer": str(i)}),
])
def test_every_task_honours_the_seed(tmp_path, task, row):
    path = write_jsonl(tmp_path / "rows.jsonl", [row(i) for i in range(50)])

    def ids(seed):
        config = ProblemConfig(task=task, data=str(path), limit=10, seed=seed, split="train")
        return [e.id for e in load_split(config)[2]]

    assert ids(0) == ids(0) and ids(0) != ids(1)


def test_generated_arith_keeps_its_own_seeded_problems():
    """arith makes its problems from the seed: a limit is how many, as before."""
    from dasd.tasks.arith import ArithTask

    config = ProblemConfig(task="arith", split="test", limit=20)
    selection = select_split(config)
    assert selection.examples == ArithTask().load("test", limit=20)
    assert (selection.how, selection.split_size, selection.subset) == ("generated", None, False)


def test_a_limit_beyond_the_split_and_a_test_subset_are_warned(tmp_path, caplog):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": f"q{i}", "answer": f"#### {i}"}
                                              for i in range(8)])
    with caplog.at_level(logging.WARNING):
        short = select_split(ProblemConfig(task="gsm8k", data=str(path), limit=20))
        subset = select_split(ProblemConfig(task="gsm8k", data=str(path), split="test", limit=3),
                              evaluation=True)
    assert len(short.examples) == 8 and short.short and not short.subset
    assert f"limit 20 asks for more problems than gsm8k/train ({path}) has: using all 8" \
        in caplog.text
    assert subset.record()["n"] == 3 and subset.record()["of"] == 8
    assert f"evaluating on 3 of the 8 problems of gsm8k/test ({path})" in caplog.text


# --- results: subset marks and the rows training used --------------------------------------


@pytest.mark.parametrize("task", ["gsm8k", "arith"])
def test_held_out_problems_are_a_seeded_draw_disjoint_from_the_limit(tmp_path, task):
    path = write_jsonl(tmp_path / "g.jsonl", [
        {"question": f"q{i}", "answer": f"s\n#### {i}"} for i in range(40)])
    data = str(path) if task == "gsm8k" else None
    drawn = select_split(ProblemConfig(task=task, data=data, limit=20, seed=3))
    held = select_split(ProblemConfig(task=task, data=data, limit=20, seed=3, held_out=8))
    again = select_split(ProblemConfig(task=task, data=data, limit=20, seed=3, held_out=8))
    ids = [e.id for e in held.examples]
    assert len(ids) == 8 and not set(ids) & {e.id for e in drawn.examples}
    assert ids == [e.id for e in again.examples] and held.record()["asked"] == 8


@pytest.mark.parametrize("values", [{"held_out": 0, "limit": 5}, {"held_out": 3}])
def test_held_out_needs_a_positive_count_and_a_limit(values):
    with pytest.raises(DasdError, match="held_out must be >= 1 and needs a limit"):
        ProblemConfig(task="arith", **values)


def test_held_out_flag_is_a_one_line_error(tmp_path, capsys):
    from tests.test_bad_input import one_line_error, run_cli

    code, err = run_cli(["eval", "--task", "arith", "--held-out", "5", "--out",
                         str(tmp_path / "e.jsonl")], capsys)
    assert code == 2 and one_line_error(err) and "needs a limit" in err
    assert not list(tmp_path.iterdir())
