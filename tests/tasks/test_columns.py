"""Your own data: `columns` renames the rows' columns to the task's fields, and
`dataset_name`/`dataset_config` read a data set of yours (here only local folders and
stand-ins: nothing reaches the network)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dasd.config import ROWS, add_config_arguments, config_from_args, outcome
from dasd.decoding.generate import GenerateConfig
from dasd.errors import DasdError
from dasd.tasks import get_task, select_split
from dasd.tasks.gsm8k import GSM8KTask
from tests.conftest import write_jsonl

ROWS_OF_MINE = [{"problem": f"Tom has {i} apples and buys 2 more. How many?",
                 "worked": f"{i} + 2 = {i + 2}\n#### {i + 2}", "n": i} for i in range(3)]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The hub unreachable (offline mode, as HF_HUB_OFFLINE=1 sets it) and the `datasets`
    cache in tmp_path, so a local data set folder leaves nothing in the user's cache."""
    import datasets
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def parse(argv: list[str]) -> GenerateConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, GenerateConfig)
    return config_from_args(GenerateConfig, parser.parse_args(argv))


# --- columns ---------------------------------------------------------------------------------

def test_columns_rename_a_files_columns_to_the_tasks_fields(tmp_path: Path, no_hub) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", ROWS_OF_MINE)
    examples = GSM8KTask().load("train", str(path),
                                columns={"question": "problem", "answer": "worked"})
    assert [e.question for e in examples] == [r["problem"] for r in ROWS_OF_MINE]
    assert [e.answer for e in examples] == ["2", "3", "4"]
    assert examples[1].reference == "1 + 2 = 3\nThe answer is 3."


def test_columns_apply_to_hub_rows_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def hub_rows(hub_id, config, split):
        seen.append((hub_id, config, split))
        return [dict(row) for row in ROWS_OF_MINE]

    monkeypatch.setattr("dasd.tasks.base.load_hub_rows", hub_rows)
    examples = GSM8KTask().load("test", columns={"question": "problem", "answer": "worked"})
    assert seen == [("openai/gsm8k", "main", "test")] and len(examples) == 3


def test_one_column_may_feed_two_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", [{"q": "2 + 2?", "a": "4"}])
    [example] = get_task("custom", "exact").load(
        "train", str(path), columns={"question": "q", "reference": "a", "answer": "a"})
    assert (example.question, example.reference, example.answer) == ("2 + 2?", "4", "4")


@pytest.mark.parametrize("columns, message", [
    ({"foo": "problem"}, r"^columns: task 'gsm8k' reads question, answer; 'foo' is not one "
                         r"of them$"),
    ({"questoin": "problem"}, r"'questoin' is not one of them \(did you mean 'question'\?\)"),
    ({"question": 3}, r"columns: 'question' must name a column of your rows \(a non-empty "
                      r"string\), got 3"),
    ({"question": " "}, r"'question' must name a column .* got ' '"),
    ({"question": None}, r"'question' must name a column .* got None"),
    ({"question": "prolbem"}, r"mine.jsonl:1: no column 'prolbem' \(columns: "
                              r"question=prolbem\); the row has problem, worked, n"),
])
def test_bad_columns_are_one_line_errors(tmp_path: Path, columns, message) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", ROWS_OF_MINE)
    with pytest.raises(DasdError, match=message):
        GSM8KTask().load("train", str(path), columns=columns)


def test_a_column_missing_from_a_later_row_names_that_row(tmp_path: Path) -> None:
    rows = [*ROWS_OF_MINE[:2], {"problem": "q", "answer": "x #### 1"}]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    with pytest.raises(DasdError, match=r"mine.jsonl:3: no column 'worked' \(columns: "
                                        r"answer=worked\); the row has problem, answer"):
        GSM8KTask().load("train", str(path), columns={"answer": "worked"})


def test_columns_on_generated_problems_are_an_error() -> None:
    with pytest.raises(DasdError, match="arith generates its problems"):
        get_task("arith").load("train", limit=2, columns={"question": "q"})


@pytest.mark.parametrize("value, expected", [
    ("question=problem,answer=worked", {"question": "problem", "answer": "worked"}),
    ("question = problem", {"question": "problem"}),
    ("{question: problem, answer: worked}", {"question": "problem", "answer": "worked"}),
])
def test_columns_from_the_command_line(value: str, expected: dict) -> None:
    assert parse(["--columns", value]).columns == expected


def test_every_mapping_flag_takes_name_value_pairs() -> None:
    config = parse(["--chat-template-kwargs", "enable_thinking=false,depth=2"])
    assert config.chat_template_kwargs == {"enable_thinking": False, "depth": 2}


@pytest.mark.parametrize("value", ["=problem", "question=problem,", "question"])
def test_malformed_pairs_name_the_key(value: str) -> None:
    with pytest.raises(DasdError, match=r"config key 'columns' expects dict .*name=value"):
        parse(["--columns", value])


def test_new_keys_at_their_defaults_leave_old_outputs_valid() -> None:
    """`omit_default`: a config that sets none of the new keys decides the same rows as
    one written before they existed."""
    settings = outcome(GenerateConfig(), ROWS)
    assert not {"columns", "dataset_name", "dataset_config", "checker"} & set(settings)
    mine = outcome(GenerateConfig(columns={"question": "q"}, dataset_name="org/mine"), ROWS)
    assert mine["columns"] == {"question": "q"} and mine["dataset_name"] == "org/mine"


# --- dataset_name / dataset_config -----------------------------------------------------------

def _folder(tmp_path: Path, rows: list[dict], file_format: str = "jsonl") -> Path:
    folder = tmp_path / "my-set"
    folder.mkdir()
    if file_format == "jsonl":
        write_jsonl(folder / "train.jsonl", rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), folder / "train.parquet")
    return folder


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_a_local_data_set_folder_as_dataset_name(tmp_path: Path, offline, file_format) -> None:
    folder = _folder(tmp_path, ROWS_OF_MINE, file_format)
    examples = GSM8KTask().load("train", dataset_name=str(folder),
                                columns={"question": "problem", "answer": "worked"})
    assert [e.answer for e in examples] == ["2", "3", "4"]


def test_dataset_name_takes_any_split_and_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def hub_rows(hub_id, config, split):
        seen.append((hub_id, config, split))
        return [{"question": "1 + 1?", "reference": "2", "answer": "2"}, {"question": "q"}]

    monkeypatch.setattr("dasd.tasks.base.load_hub_rows", hub_rows)
    task = get_task("custom", "exact")
    with pytest.raises(DasdError, match=r"^me/mine \(hard, holdout\) row 2: missing fields "
                                        r"'reference', 'answer'"):
        task.load("holdout", dataset_name="me/mine", dataset_config="hard")
    assert seen == [("me/mine", "hard", "holdout")]


def test_tasks_without_a_hub_set_read_dataset_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dasd.tasks.base.load_hub_rows", lambda *args: [
        {"problem": "Find 2^3.", "answer": "8"}])
    [example] = get_task("aime").load("test", dataset_name="me/aime-like")
    assert example.answer == "8"


def test_data_and_dataset_name_together_are_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", ROWS_OF_MINE)
    with pytest.raises(DasdError, match=r"^data \(.*mine.jsonl\) and dataset_name \(me/mine\) "
                                        r"both name the problems: keep one$"):
        GSM8KTask().load("train", str(path), dataset_name="me/mine")


def test_a_data_set_that_is_not_cached_offline_says_what_to_do(offline) -> None:
    with pytest.raises(DasdError) as error:
        GSM8KTask().load("holdout", dataset_name="someorg/not-cached", dataset_config="hard")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("could not load 'someorg/not-cached' (hard, holdout) from the "
                              "hub: ")
    assert message.endswith("go online (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) to "
                            "download it, or pass a local JSONL/Parquet file with --data "
                            "instead")


def test_plan_reads_a_local_data_set_folder(tmp_path: Path, offline) -> None:
    """`--plan` reads hub sets only from the cache; a local folder is read as it is."""
    from dasd.tasks.io import load_hub_rows, local_only

    folder = _folder(tmp_path, ROWS_OF_MINE)
    with local_only():
        assert len(load_hub_rows(str(folder), None, "train")) == 3
        with pytest.raises(DasdError, match="is not in the local Hugging Face cache"):
            load_hub_rows("someorg/not-cached", None, "train")


def test_bad_dataset_keys_are_refused() -> None:
    """A config without its data set is refused at once; a name that is neither a folder
    nor a hub id when the problems are read (a config's folder may be made later)."""
    from dasd.tasks import select_split

    with pytest.raises(DasdError, match=r"dataset_config 'hard' needs dataset_name"):
        GenerateConfig(dataset_config="hard")
    config = GenerateConfig(task="gsm8k", dataset_name="not an/id/at all")
    with pytest.raises(DasdError, match=r"dataset_name 'not an/id/at all' is neither a "
                                        r"local folder nor a hub id"):
        select_split(config)


def test_the_selection_names_the_data_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dasd.tasks.base.load_hub_rows", lambda *args: [
        {"q": f"{i} + 1?", "sol": f"The answer is {i + 1}.", "final": i + 1} for i in range(4)])
    config = GenerateConfig(task="custom", checker="exact", dataset_name="me/mine",
                            split="dev", limit=2, sample="first",
                            columns={"question": "q", "reference": "sol", "answer": "final"})
    selection = select_split(config)
    assert selection.source == "me/mine" and selection.split_size == 4
    assert [e.answer for e in selection.examples] == ["1", "2"]
    assert json.dumps(selection.record())  # recordable as it is
