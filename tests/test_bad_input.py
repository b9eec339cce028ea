"""Bad input ends in one line naming the input and the fix, exit code 2, nothing written.

Two tables: hand-written cases that once ended in a traceback, and every flag of every
subcommand given a malformed value, so that a new option inherits the check.
"""

import json
import subprocess
from pathlib import Path

import pytest

from dasd.cli import COMMANDS, main, make_parser

NO_MODEL = "/nonexistent/model-dir"


def run_cli(argv, capsys):
    """(exit code, stderr) of `dasd argv`; a traceback escapes and fails the test."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: usage + one error line
        code = exit_.code
    return code, capsys.readouterr().err


def one_line_error(err: str) -> bool:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return bool(lines) and "Traceback" not in err and (
        len(lines) == 1 or lines[0].startswith("usage:"))


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty-model").mkdir()
    (tmp_path / "empty-model" / "config.json").write_text("{}")
    (tmp_path / "text-model").mkdir()
    (tmp_path / "text-model" / "notes.txt").write_text("not a model")
    (tmp_path / "a-file").write_text("x")

    def rows(name, row):
        (tmp_path / name).write_text(json.dumps(row) + "\n")
        return str(tmp_path / name)

    return {
        "dir": tmp_path,
        "hard": rows("hard.jsonl", {"question": "1+1?", "reference": "2", "answer": "2",
                                     "level": "hard"}),
        "list": rows("list.jsonl", {"question": ["a"], "answer": "x #### 1"}),
        "surrogate": rows("surrogate.jsonl", {"question": "q \ud800", "answer": "x #### 1"}),
        "rows": rows("rows.jsonl", {"id": "r1", "prompt_ids": [1], "completion_ids": [2],
                                     "correct": True}),
        "no-id": rows("no-id.jsonl", {"completion_ids": [2], "correct": True}),
        "mine": rows("mine.jsonl", {"q": "1+1?", "sol": "1 + 1 = 2.", "final": 2}),
    }


CASES = [
    (["generate", "--model", "{dir}/empty-model"], "names no model_type"),
    (["generate", "--model", "{dir}/text-model"], "has no config.json"),
    (["generate", "--out", "{dir}/a-file/x.jsonl"], "a-file is a file, not a folder"),
    (["eval", "--out", "{dir}/a-file/x.jsonl"], "a-file is a file, not a folder"),
    (["train", "--data", "{rows}", "--out", "{dir}/a-file"], "is a file; give a folder"),
    (["train", "--data", "{rows}", "--out", "{dir}/a-file/sub"], "is a file, not a folder"),
    (["generate", "--data", "{hard}", "--model", NO_MODEL], "level must be an integer"),
    (["generate", "--task", "gsm8k", "--data", "{list}", "--model", NO_MODEL],
     "field 'question' must be text"),
    (["generate", "--task", "gsm8k", "--data", "{surrogate}", "--model", NO_MODEL],
     "lone UTF-16 surrogate"),
    (["generate", "--chat-template-kwargs", "{{bad"], "'chat_template_kwargs' expects dict"),
    (["train", "--data", "{no-id}", "--out", "{dir}/t"], "row at .*no-id.jsonl:1 lacks"),
    # your own data: columns, dataset_name/dataset_config, task custom and its checker
    (["generate", "--task", "gsm8k", "--data", "{mine}", "--columns", "foo=q", "--model",
      NO_MODEL], "columns: task 'gsm8k' reads question, answer; 'foo' is not one of them"),
    (["eval", "--task", "gsm8k", "--data", "{mine}", "--columns", "question=problem",
      "--model", NO_MODEL], r"mine.jsonl:1: no column 'problem' \(columns: "
                            r"question=problem\); the row has q, sol, final"),
    (["generate", "--task", "gsm8k", "--data", "{mine}", "--columns", "question=3", "--model",
      NO_MODEL], "columns: 'question' must name a column of your rows"),
    (["generate", "--columns", "question"], "'columns' expects dict"),
    (["generate", "--data", "{mine}", "--dataset-name", "me/mine", "--model", NO_MODEL],
     "data .* and dataset_name .* both name the problems: keep one"),
    (["generate", "--dataset-name", "not a/hub/id"], "neither a local folder nor a hub id"),
    (["generate", "--dataset-config", "hard"], "dataset_config 'hard' needs dataset_name"),
    (["generate", "--task", "custom", "--checker", "exakt", "--data", "{mine}", "--model",
      NO_MODEL], r"unknown checker 'exakt': .* \(did you mean 'exact'\?\)"),
    (["eval", "--task", "gsm8k", "--checker", "exact", "--model", NO_MODEL],
     "checker 'exact' is for task custom; task 'gsm8k' checks its answers its own way"),
    (["generate", "--task", "custom", "--data", "{mine}", "--model", NO_MODEL],
     "task 'custom' needs a checker: .* math-verify, exact, choice, code"),
    (["generate", "--task", "custom", "--checker", "exact", "--model", NO_MODEL],
     "task 'custom' has no hub data set: .*--data .*--dataset-name"),
    # thinking models and vLLM's paths
    (["generate", "--thinking-block", "both"], "thinking_block"),
    (["generate", "--reference-chat-template-kwargs", "{{bad"],
     "'reference_chat_template_kwargs' expects dict"),
    (["generate", "--base-chat-template-kwargs", "[1]"], "'base_chat_template_kwargs' expects"),
    (["generate", "--engine", "vllm", "--vllm.path", "lockstepp"], "vllm.path|path"),
    (["generate", "--engine", "vllm", "--method", "hint"],
     "cannot use the draft-verify engine"),
    # a run's own keys: the checker beside task, held-out problems drawn by the run
    (["run", "--task", "custom", "--checker", "exakt"], r"unknown checker 'exakt'"),
    (["run", "--checker", "exact"], "checker 'exact' is for task custom"),
    (["run", "--generate.held-out", "5"], "is not set here: a run holds problems out"),
    (["run", "--eval.limit", "10", "--eval.held-out", "5"], "a run holds problems out itself"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(files, capsys, argv, message):
    import re

    before = sorted(p for p in files["dir"].rglob("*"))
    argv = [a.format(**files) for a in argv]
    code, err = run_cli(argv, capsys)
    assert code == 2 and one_line_error(err), err
    assert re.search(message, err.replace("\n", " ")), err
    assert sorted(p for p in files["dir"].rglob("*")) == before


def test_a_data_set_not_cached_offline_is_one_line(tmp_path, capsys, monkeypatch):
    import datasets
    import huggingface_hub.constants as hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    code, err = run_cli(["generate", "--task", "custom", "--checker", "exact", "--dataset-name",
                         "someorg/not-cached", "--dataset-config", "hard", "--split", "dev",
                         "--model", NO_MODEL], capsys)
    assert code == 2 and one_line_error(err), err
    assert "could not load 'someorg/not-cached' (hard, dev)" in err
    assert "go online" in err and "--data" in err
    assert not list(tmp_path.glob("runs"))


def test_a_read_only_output_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    import dasd.records as records

    monkeypatch.setattr(records, "_read_only", lambda path: True)
    for argv in (["generate", "--out", str(tmp_path / "x.jsonl")],
                 ["eval", "--out", str(tmp_path / "x.jsonl")],
                 ["train", "--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "t")]):
        if argv[0] == "train":
            (tmp_path / "x.jsonl").write_text("{}\n")
        code, err = run_cli(argv, capsys)
        assert code == 2 and "is not writable (read-only file system" in err, err


def test_a_real_read_only_mount_is_refused(tmp_path, capsys):
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip("cannot mount a read-only file system here")
    try:
        code, err = run_cli(["generate", "--out", str(mount / "x.jsonl")], capsys)
        assert code == 2 and "read-only file system" in err
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def flags_of(command: str) -> list[tuple[str, bool]]:
    """(--flag, takes a value) of every config option of `command`."""
    parser = make_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return [(a.option_strings[0], a.nargs != "?") for a in sub._actions
            if a.option_strings and a.option_strings[0].startswith("--")
            and a.dest not in ("help", "config")]


# Every command gets inputs that stop it fast: no model, no data, a fresh output folder.
BASE = {
    "generate": ["--model", NO_MODEL, "--limit", "2"],
    "eval": ["--model", NO_MODEL, "--limit", "2"],
    "train": ["--model", NO_MODEL, "--data", "{dir}/missing.jsonl"],
    "run": ["--model", NO_MODEL, "--analyze", "false", "--out-dir", "{dir}/run"],
    "analyze": ["{dir}/missing"],
    "show": ["{dir}/missing.jsonl", "--id", "1"],
    "export": ["{dir}/missing", "--out", "{dir}/export"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_with_a_malformed_value_is_one_line(tmp_path, capsys, monkeypatch,
                                                      command):
    """Each flag gets '@@bad' (YAML cannot even parse it); the command must end with one
    error line and exit 2, never a traceback, and write nothing where it runs."""
    monkeypatch.chdir(tmp_path)
    base = [a.format(dir=tmp_path) for a in BASE[command]]
    checked = 0
    for flag, takes_value in flags_of(command):
        argv = [command, *base, flag, *(["@@bad"] if takes_value else ["maybe"])]
        code, err = run_cli(argv, capsys)
        assert code == 2 and one_line_error(err), (flag, err)
        checked += 1
    assert checked
    assert not (Path(tmp_path) / "run" / "generate").exists()
    assert not list(Path(tmp_path).glob("@@bad*")), "a malformed value left a file behind"


# Classes of input that once ended in a traceback or a refusal, each tried on every command
# that reads it: number spellings, file encodings, device strings, logging integrations.

SPELLINGS = ["2e-1", "2E-1", "+2e-1", "2_0e-2", ".2", "0.2"]  # all float("...") == 0.2


def _members(tp) -> set:
    import typing

    args = typing.get_args(tp)
    return {tp} if not args else {a for arg in args for a in _members(arg)} | {tp}


@pytest.mark.parametrize("command", ["generate", "train", "eval", "run", "analyze"])
def test_every_float_accepts_the_spellings_python_reads(tmp_path, command):
    """YAML 1.1 reads `2e-5` as a string; every float key (dasd's, a method's, TRL's),
    from a flag or a YAML file, must read it as the number. A key may still refuse 0.2 for
    its range, never for its type."""
    from argparse import Namespace

    import yaml

    from dasd.config import _flatten, _nest, config_from_args, config_keys, resolved_config
    from dasd.errors import DasdError

    for cls in COMMANDS[command][1]():
        keys = [k for k, (_, tp) in config_keys(cls).items()
                if float in _members(tp) and str not in _members(tp)]
        assert keys, cls
        for key, spelling in [(k, s) for k in keys for s in SPELLINGS]:
            path = tmp_path / "c.yaml"
            path.write_text(yaml.safe_dump(_nest({key: spelling})).replace("'", ""))
            for args in (Namespace(**{key: spelling}), Namespace(config=str(path))):
                try:
                    config = config_from_args(cls, args)
                except DasdError as err:
                    assert "expects" not in str(err), (key, spelling, str(err))
                    continue
                leaf = key.split(".")[-1]
                values = [v for k, v in _flatten(resolved_config(config)).items()
                          if k.split(".")[-1] == leaf]
                assert 0.2 in values, (key, spelling, values)


def _encodings(tmp_path: Path) -> dict[str, Path]:
    row = '{"id": "a", "question": "caf\u00e9 1+1?", "answer": "x #### 2"}\n'
    files = {
        "latin-1": row.encode("latin-1"),
        "utf-16": row.encode("utf-16"),
        "binary": bytes(range(128, 256)) * 3,
    }
    paths = {}
    for name, data in files.items():
        for suffix in (".jsonl", ".json", ".yaml"):
            paths[name + suffix] = tmp_path / f"{name}{suffix}"
            paths[name + suffix].write_bytes(data)
    return paths


@pytest.mark.parametrize("make_argv", [
    lambda p: ["generate", "--task", "gsm8k", "--data", p(".jsonl"), "--model", NO_MODEL],
    lambda p: ["generate", "--task", "gsm8k", "--data", p(".json"), "--model", NO_MODEL],
    lambda p: ["eval", "--task", "gsm8k", "--data", p(".jsonl"), "--model", NO_MODEL],
    lambda p: ["train", "--data", p(".jsonl"), "--model", NO_MODEL],
    lambda p: ["generate", "--config", p(".yaml")],
    lambda p: ["run", p(".yaml")],
    lambda p: ["generate", "--prompts", p(".yaml"), "--model", NO_MODEL],
], ids=["generate-jsonl", "generate-json", "eval", "train", "config", "run", "prompts"])
def test_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys, monkeypatch, make_argv):
    monkeypatch.chdir(tmp_path)
    paths = _encodings(tmp_path)
    for name in ("latin-1", "utf-16", "binary"):
        before = sorted(tmp_path.rglob("*"))
        code, err = run_cli(make_argv(lambda suffix, n=name: str(paths[n + suffix])), capsys)
        assert code == 2 and one_line_error(err) and "is not UTF-8 text" in err, (name, err)
        assert sorted(tmp_path.rglob("*")) == before


def test_a_utf8_byte_order_mark_is_read_as_the_data_it_is(tmp_path):
    from dasd.config import load_yaml
    from dasd.records import read_jsonl
    from dasd.tasks.io import read_rows

    row = {"id": "a", "question": "1+1?", "answer": "x #### 2"}
    for suffix, text in ((".jsonl", json.dumps(row) + "\n"), (".json", json.dumps([row]))):
        path = tmp_path / f"bom{suffix}"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert read_rows(path) == [row]
    assert read_jsonl(tmp_path / "bom.jsonl") == [row]
    (tmp_path / "c.yaml").write_bytes(b"\xef\xbb\xbfname: x\n")
    assert load_yaml(tmp_path / "c.yaml") == {"name": "x"}


DEVICES = ["tpu", "gpu", "cuda:x", "cuda:-1", "cpu:0:1", "", "cuda:99"]


@pytest.mark.parametrize("command", ["generate", "eval", "train", "run"])
def test_device_strings_torch_or_this_machine_refuse_are_one_line(tmp_path, capsys,
                                                                   monkeypatch, command):
    """A device torch cannot parse, and one this machine or this torch build lacks (CUDA
    on a CPU build, an index past the last GPU), end before anything is written."""
    import torch

    monkeypatch.chdir(tmp_path)
    base = {"generate": ["--limit", "1"], "eval": ["--limit", "1"],
            "train": ["--data", str(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "t")],
            "run": ["--out-dir", str(tmp_path / "r"), "--generate.limit", "1"]}[command]
    (tmp_path / "rows.jsonl").write_text(json.dumps(
        {"id": "r1", "prompt_ids": [1], "completion_ids": [2], "correct": True}) + "\n")
    absent = [d for d in ("cuda", "cuda:0", "mps")
              if not (torch.cuda.is_available() if d.startswith("cuda")
                      else torch.backends.mps.is_available())]
    for device in DEVICES + absent:
        before = sorted(tmp_path.rglob("*"))
        code, err = run_cli([command, *base, "--device", device], capsys)
        assert code == 2 and one_line_error(err) and "device" in err, (device, err)
        assert sorted(tmp_path.rglob("*")) == before, device


@pytest.mark.parametrize("argv", [
    ["train", "--report-to", "carrier-pigeon"],
    ["train", "--report-to", "[tensorboard, carrier-pigeon]"],
    ["train", "--method", "opsd", "--report-to", "carrier-pigeon"],
    ["run", "--train.report-to", "carrier-pigeon"],
    ["run", "--onpolicy.report-to", "carrier-pigeon"],
], ids=["train", "list", "onpolicy", "run-train", "run-onpolicy"])
def test_an_unknown_or_absent_logging_integration_is_one_line(tmp_path, capsys, monkeypatch,
                                                              argv):
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text(json.dumps(
        {"id": "r1", "prompt_ids": [1], "completion_ids": [2], "correct": True}) + "\n")
    where = {"train": ["--data", "rows.jsonl", "--out", "t"], "run": ["--out-dir", "r"]}
    absent = [n for n in INTEGRATION_TO_CALLBACK if n not in
              get_available_reporting_integrations()][:1]
    for value in ["carrier-pigeon", *absent]:
        full = [a.replace("carrier-pigeon", value) for a in argv] + where[argv[0]]
        code, err = run_cli(full, capsys)
        assert code == 2 and one_line_error(err) and f"report_to '{value}'" in err, err
        assert not list(tmp_path.glob("[tr]")), "nothing may be written"
