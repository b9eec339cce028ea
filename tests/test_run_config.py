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
