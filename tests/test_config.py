"""Config layering: dataclass defaults < YAML < flags, with one-line errors."""

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from dasd.config import add_config_arguments, config_from_args, write_resolved_config
from dasd.decoding.generate import GenerateConfig
from dasd.errors import DasdError


@dataclass
class Inner:
    lr: float = 2e-5
    steps: int = 10


@dataclass
class Outer:
    name: str = "x"
    mode: Literal["ref", "base"] = "ref"
    flag: bool = False
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def test_defaults_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "from-yaml", "inner": {"lr": 0.1, "steps": 5}}))
    config = parse(Outer, ["--config", str(path), "--inner.steps", "7", "--flag"])
    assert config == Outer(name="from-yaml", flag=True, inner=Inner(lr=0.1, steps=7))


def test_flags_accept_dashes_and_none():
    config = parse(GenerateConfig, ["--max-new-tokens", "12", "--limit", "none", "--tau", "0.3"])
    assert (config.max_new_tokens, config.limit, config.settings["tau"]) == (12, None, 0.3)


def test_unknown_yaml_key_suggests_a_fix(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("nmae: y\n")
    with pytest.raises(DasdError, match="unknown config key 'nmae' \\(did you mean 'name'\\?\\)"):
        parse(Outer, ["--config", str(path)])


@pytest.mark.parametrize("argv, message", [
    (["--mode", "both"], "must be one of ref, base"),
    (["--inner.steps", "ten"], "'inner.steps' expects int"),
    (["--flag", "maybe"], "'flag' expects bool"),
])
def test_bad_values_name_the_key(argv, message):
    with pytest.raises(DasdError, match=message):
        parse(Outer, argv)


def test_missing_config_file_is_one_line_error(tmp_path):
    with pytest.raises(DasdError, match="config file not found"):
        parse(Outer, ["--config", str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize("argv, message", [
    (["--tau", "0"], "tau must be in"),
    (["--top-k", "0"], "top_k must be"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--method", "sdd"], "did you mean 'sd'"),
])
def test_generate_config_rejects_impossible_settings(argv, message):
    with pytest.raises(DasdError, match=message):
        parse(GenerateConfig, argv)


def test_resolved_config_round_trips(tmp_path):
    config = GenerateConfig(task="arith", method="sd", limit=3)
    write_resolved_config(config, tmp_path / "c.yaml")
    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert saved["method"] == "sd" and saved["out"] == "runs/arith/sd.jsonl"
    assert "dasd_version" in saved and "git_revision" in saved


def test_method_settings_are_flat_flags_and_belong_to_their_method(tmp_path):
    config = parse(GenerateConfig, ["--method", "hint", "--beta", "1.5", "--marker", ""])
    assert config.settings == {"beta": 1.5, "temperature": 0.3, "top_p": 0.95, "marker": "",
                               "tau": 0.2}
    with pytest.raises(DasdError, match="method 'sd' has no setting 'top_k'; its settings "
                                        "are tau"):
        parse(GenerateConfig, ["--method", "sd", "--top-k", "9"])
    path = tmp_path / "c.yaml"
    path.write_text("method: dasd\nsettings: {top_k: 9}\n")
    assert parse(GenerateConfig, ["--config", str(path), "--tau", "0.3"]).settings == {
        "top_k": 9, "tau": 0.3, "fallback": "ref"}


def test_only_the_settings_that_change_rows_decide_a_resume():
    from dasd.config import ROWS, STAGE, fingerprint

    base = GenerateConfig(task="arith", method="dasd", limit=3)
    same_rows = [dict(batch_size=2), dict(limit=10), dict(engine="draft-verify"),
                 dict(device="cpu"), dict(out="x.jsonl"), dict(overwrite=True)]
    for change in same_rows:
        other = GenerateConfig(task="arith", method="dasd", **{"limit": 3, **change})
        assert fingerprint(other, ROWS) == fingerprint(base, ROWS), change
    assert fingerprint(GenerateConfig(task="arith", method="dasd", limit=10), STAGE) != \
        fingerprint(base, STAGE)
    tau = GenerateConfig(task="arith", method="dasd", limit=3, settings={"tau": 0.3})
    assert fingerprint(tau, ROWS) != fingerprint(base, ROWS)


def test_a_key_of_an_older_dasd_says_how_to_write_it_now(tmp_path):
    from dasd.training import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text("mask: mask_ppl\n")
    with pytest.raises(DasdError, match="'mask' is from an older dasd: .*method: mask-ppl"):
        parse(TrainConfig, ["--config", str(path)])
