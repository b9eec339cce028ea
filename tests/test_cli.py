"""The command line: flags reach the stage, bad input exits 2 with one line."""

import json

from dasd.cli import main


def test_impossible_tau_exits_2_with_one_line(capsys, tmp_path):
    out = tmp_path / "x.jsonl"
    assert main(["generate", "--tau", "1.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tau must be in (0, 1]" in err
    assert not out.exists()


def test_unknown_model_exits_2(capsys, tmp_path):
    assert main(["generate", "--model", "nope", "--limit", "1",
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_generate_runs_on_a_local_model(tmp_path, tokenizer, tiny_model):
    tiny_model.float().save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "r" / "sd.jsonl"
    code = main(["generate", "--model", str(tmp_path / "m"), "--method", "sd", "--limit", "3",
                 "--max-new-tokens", "8", "--out", str(out)])
    assert code == 0
    assert len(out.read_text().splitlines()) == 3
    assert json.loads((tmp_path / "r" / "sd.summary.json").read_text())["samples"] == 3


def test_analyze_and_show_from_the_command_line(tmp_path, tokenizer, tiny_model, capsys):
    tiny_model.float().save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "r" / "dasd.jsonl"
    assert main(["generate", "--model", str(tmp_path / "m"), "--limit", "2",
                 "--max-new-tokens", "6", "--out", str(out)]) == 0
    assert main(["analyze", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "analysis" / "report.html").is_file()
    assert main(["show", str(out), "--id", "1", "--color-by", "p_base"]) == 0
    assert "arith-train-00001" in capsys.readouterr().out


def test_show_without_an_id_is_a_one_line_error(capsys):
    assert main(["show", "runs/x.jsonl"]) == 2
    assert "--id" in capsys.readouterr().err
