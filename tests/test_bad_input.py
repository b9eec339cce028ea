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
