"""A run's config.yaml records the problems each stage drew, id by id."""

from __future__ import annotations

import yaml

from dasd.config import build_config
from tests.conftest import write_jsonl


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


def test_a_run_on_your_own_data_set_checks_with_one_checker(tmp_path):
    """Task custom in a run: `checker` sits beside `task` and reaches every stage; the
    sections read a data set folder through a column mapping."""
    import pytest

    from dasd.errors import DasdError
    from dasd.run_config import RunConfig, select_problems

    folder = tmp_path / "set"
    folder.mkdir()
    rows = [{"problem": f"{i} + 1?", "solution": f"The answer is {i + 1}.", "final": i + 1}
            for i in range(20)]
    write_jsonl(folder / "train.jsonl", rows[:12])
    write_jsonl(folder / "test.jsonl", rows[12:])
    section = {"dataset_name": str(folder),
               "columns": {"question": "problem", "reference": "solution", "answer": "final"}}
    config = build_config(RunConfig, {
        "task": "custom", "checker": "exact", "methods": [{"name": "sd"}],
        "generate": {**section, "limit": 4}, "eval": {**section, "split": "test"}})
    spec = config.methods[0]
    assert config.data_config(spec).checker == config.eval_config("sd", None).checker == "exact"
    problems = select_problems(config)
    assert len(problems["sd"].examples) == 4 and len(problems["test"].examples) == 8
    assert problems["test"].examples[0].answer == "13"
    with pytest.raises(DasdError, match="set checker at the top of the run config"):
        build_config(RunConfig, {"task": "custom", "generate": {"checker": "exact"}})
