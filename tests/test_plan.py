"""`--plan` on every shipped config, against small stand-in files in the hub's layout.

The paper's configs must state its protocol: the whole test split, a stratified training
sample of the asked size (or the whole split where it is smaller than 2,000), the paper's
hyperparameters, and the same problems for every method. The plan loads no model, reads
no hub, and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dasd.cli import main
from dasd.config import build_config, load_yaml
from dasd.errors import DasdError
from dasd.plan import PAPER, make_plan
from dasd.run_config import RunConfig
from tests.conftest import write_jsonl

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_CONFIGS = sorted([*(CONFIGS / "paper").glob("*.yaml"), *(CONFIGS / "ablations").glob(
    "*.yaml")])
SUBJECTS = ("Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra",
            "Number Theory", "Prealgebra", "Precalculus")


def math_train_rows() -> list[dict]:
    """EleutherAI/hendrycks_math's layout (level "Level k", `type`), concatenated subject by
    subject like the hub's split; strata of unequal sizes, 2,065 problems in all."""
    rows = []
    for s, subject in enumerate(SUBJECTS):
        for level in range(1, 6):
            rows += [{"problem": f"{subject} L{level} #{i}: what is {i} + {level}?",
                      "solution": f"It is $\\boxed{{{i + level}}}$.", "level": f"Level {level}",
                      "type": subject} for i in range(20 + 8 * level + 5 * s)]
    return rows


def math_test_rows() -> list[dict]:
    """HuggingFaceH4/MATH-500's layout (answer, subject, integer level, unique_id)."""
    return [{"problem": f"test {subject} {level}", "solution": "\\boxed{2}", "answer": "2",
             "subject": subject, "level": level,
             "unique_id": f"test/{subject}/{level}.json"}
            for subject in SUBJECTS for level in range(1, 6)]


def mbpp_rows(first: int, count: int) -> list[dict]:
    return [{"text": f"Write a function f{i} returning {i}.",
             "code": f"def f{i}():\r\n  return {i}",
             "task_id": i, "test_setup_code": "", "test_list": [f"assert f{i}() == {i}"],
             "challenge_test_list": []} for i in range(first, first + count)]


def arc_rows(prefix: str, count: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "question": f"Question {i}?",
             "choices": {"text": ["red", "green", "blue", "grey"], "label": list("ABCD")},
             "answerKey": "ABCD"[i % 4]} for i in range(count)]


def gsm8k_rows(count: int) -> list[dict]:
    return [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
            for i in range(count)]


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Per task: (training file, test file) in the hub's layout."""
    root = tmp_path_factory.mktemp("hub")
    return {
        "math": (write_jsonl(root / "math-train.jsonl", math_train_rows()),
                 write_jsonl(root / "math-500.jsonl", math_test_rows())),
        "mbpp": (write_jsonl(root / "mbpp-train.jsonl", mbpp_rows(601, 24)),
                 write_jsonl(root / "mbpp-test.jsonl", mbpp_rows(11, 12))),
        "arc_challenge": (write_jsonl(root / "arc-train.jsonl", arc_rows("train", 30)),
                          write_jsonl(root / "arc-test.jsonl", arc_rows("test", 17))),
        "gsm8k": (write_jsonl(root / "gsm8k-train.jsonl", gsm8k_rows(80)),
                  write_jsonl(root / "gsm8k-test.jsonl", gsm8k_rows(20))),
        "custom": (own_data_set(root / "own"), None),
    }


def own_data_set(folder: Path) -> Path:
    """A data set folder as configs/own-data.yaml reads it: `problem`, `solution`, `final`
    in train.jsonl and test.jsonl."""
    folder.mkdir()
    rows = [{"problem": f"What is {i} + {i}?", "solution": f"{i} + {i} = {2 * i}.\n"
             f"The answer is {2 * i}.", "final": str(2 * i)} for i in range(90)]
    write_jsonl(folder / "train.jsonl", rows[:70])
    write_jsonl(folder / "test.jsonl", rows[70:])
    return folder


def plan_json(argv: list[str], capsys) -> dict:
    assert main([*argv, "--plan", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_paper_configs_plan_the_papers_protocol(path, standins, tmp_path, capsys):
    config = build_config(RunConfig, load_yaml(path))
    train_file, test_file = standins[config.task]
    out = tmp_path / "run"
    plan = plan_json(["run", str(path), "--generate.data", str(train_file), "--eval.data",
                      str(test_file), "--out-dir", str(out),
                      *local_retention(load_yaml(path), standins)], capsys)
    assert not out.exists(), "a plan writes nothing"
    # retention (the paper's second claim): other tasks' whole test splits, every model
    assert bool(config.retention) == (path.parent.name == "paper")  # not the ablations
    assert all(e.limit is None for e in config.retention)
    for entry in config.retention:
        problems = plan["problems"]["retention"][entry.key]
        assert problems["n"] == problems["of"] and not problems["subset"]
        assert [s["method"] for s in plan["stages"] if s["stage"] == f"retention {entry.key}"
                ] == ["origin", *[m.name for m in config.methods]]
    assert plan["warnings"] == []
    # what differs from the paper is only a method's own setting: the ablation sweeps, or
    # Hint's final-answer marker, which follows the task's answer format
    assert {(d["where"], d["setting"]) for d in plan["deviations"]} <= {
        (f"method {m.name}", key) for m in config.methods if m.name != "dasd"
        for key in ("tau", "top_k", "fallback", "marker")}

    test = plan["problems"]["test"]  # the whole test split
    assert (test["n"], test["of"], test["subset"]) == (len(test_file.read_text().splitlines()),) \
        * 2 + (False,)
    assert config.eval.limit is None and config.eval.levels is None

    (train,) = plan["problems"]["train"]  # one draw: the same problems for every method
    assert train["methods"] == [m.name for m in config.methods if m.data_from is None]
    split = len(train_file.read_text().splitlines())
    assert train["n"] == min(PAPER["train_problems"], split) and train["of"] == split
    if train["n"] < split:  # a sample of the asked size, stratified in proportion to the split
        assert train["sample"] == "stratified"
        for group in ("by_level", "by_subject"):
            for key, total in train["split_counts"][group].items():
                assert abs(train[group][key] - total * train["n"] / split) <= 3, (group, key)

    for spec in config.methods:  # the paper's hyperparameters
        settings = config.train_config(spec, "x.jsonl")
        assert (settings.trainer["learning_rate"], settings.trainer["warmup_steps"],
                settings.lora_target_modules, settings.only_correct) == (2e-5, 0.2,
                                                                         "all-linear", True)
        if spec.method == "dasd" and spec.name == "dasd":
            assert (spec.settings["top_k"], spec.settings["tau"], spec.settings["fallback"]) \
                == (6, 0.2, "ref")
    stages = {(s["method"], s["stage"]): s for s in plan["stages"]}
    assert {s["status"] for s in stages.values()} == {"run"}
    assert stages[("dasd", "eval")]["problems"] == test["n"]
    budget = stages[("dasd", "generate")]
    assert budget["new_tokens_max"] == train["n"] * config.generate.max_new_tokens


CPU_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml"))


def local_retention(values: dict, standins: dict[str, tuple[Path, Path]]) -> list[str]:
    """`--retention` with each hub task's test stand-in (its other keys kept)."""
    entries = [{"task": e} if isinstance(e, str) else dict(e)
               for e in values.get("retention") or []]
    if not entries:
        return []
    for entry in entries:
        entry.setdefault("data", str(standins[entry["task"]][1]))
    return ["--retention", json.dumps(entries)]


def local_data(values: dict, section: str, standin: Path | None) -> list[str]:
    """`--<section>.data FILE` with a stand-in where the config reads the hub (or a file
    this machine does not have); nothing where it has its data or makes it up (arith)."""
    data = (values.get(section) or {}).get("data") if section else values.get("data")
    if standin is None or (data and Path(data).is_file()):
        return []
    return [f"--{section}.data" if section else "--data", str(standin)]


@pytest.mark.parametrize("path", CPU_CONFIGS, ids=lambda p: p.name)
def test_every_other_config_has_a_plan_and_writes_nothing(path, standins, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # configs name their data relative to the repository
    values = load_yaml(path)
    train, test = standins.get(values.get("task"), (None, None))
    if path.name.startswith("opsd"):
        command = ["train", "--config", str(path), "--out", str(tmp_path / "adapter"),
                   *local_data(values, "", train)]
    elif path.name.startswith("generate-"):
        command = ["generate", "--config", str(path), "--out", str(tmp_path / "g.jsonl"),
                   *local_data(values, "", train)]
    elif values.get("task") == "custom":  # a data set folder the config's header makes
        command = ["run", str(path), "--out-dir", str(tmp_path / "run"),
                   *[flag for section in ("generate", "eval") for flag in (
                       f"--{section}.dataset-name", str(train))]]
    else:
        command = ["run", str(path), "--out-dir", str(tmp_path / "run"),
                   *local_data(values, "generate", train), *local_data(values, "eval", test),
                   *local_retention(values, standins)]
    plan = plan_json(command, capsys)
    assert list(tmp_path.iterdir()) == []
    assert plan["stages"] and all(s["status"] == "run" for s in plan["stages"])
    test_problems = plan.get("problems", {}).get("test")
    if test_problems and test_problems["subset"]:  # a CPU demo's cut: its comment says so
        assert "limit" in path.read_text().split("\neval:")[1].split("\n#")[0]


def test_plan_without_local_data_is_one_line_and_never_downloads(tmp_path, capsys,
                                                                monkeypatch):
    import datasets
    import huggingface_hub.constants as hub

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def download(*args, **kwargs):
        raise AssertionError("the plan tried the hub")

    monkeypatch.setattr(datasets, "load_dataset", download)
    path = CONFIGS / "paper" / "math-llama3.2-3b.yaml"
    assert main(["run", str(path), "--plan", "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "'HuggingFaceH4/MATH-500' (test) is not in the local Hugging Face cache" in err
    assert "eval.data" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_cached_hub_data_set_is_read_offline(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants as hub

    from dasd.tasks.io import load_hub_rows, local_only

    (tmp_path / "datasets" / "openai___gsm8k").mkdir(parents=True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    seen = []

    def cached(hub_id, config, split):
        seen.append((hub_id, datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE))
        return [{"question": "q", "answer": "a #### 1"}]

    monkeypatch.setattr(datasets, "load_dataset", cached)
    with local_only():
        assert load_hub_rows("openai/gsm8k", "main", "train") == [
            {"question": "q", "answer": "a #### 1"}]
    assert seen == [("openai/gsm8k", True, True)]
    assert not datasets.config.HF_HUB_OFFLINE or seen[0][1]  # restored afterwards


def test_plan_names_test_subsets_short_splits_and_deviations(standins, tmp_path):
    train_file, test_file = standins["mbpp"]
    values = load_yaml(CONFIGS / "paper" / "mbpp-llama3.2-3b.yaml")
    values.update(out_dir=str(tmp_path / "run"))
    values["generate"].update(data=str(train_file), limit=100)
    values["eval"].update(data=str(test_file), limit=5)
    values["train"].update(learning_rate=1e-4)
    values["retention"] = [{"task": t, "data": str(standins[t][1])}
                           for t in values["retention"]]
    plan = make_plan("run", build_config(RunConfig, values))
    assert plan["problems"]["test"]["n"] == 5 and plan["problems"]["test"]["subset"]
    text = " | ".join(plan["warnings"])
    assert "limit 100 asks for more problems than mbpp/train has (24): all 24 are used" in text
    assert "evaluation on 5 of the 12 problems of mbpp/test (limit)" in text
    deviations = {(d["setting"], str(d["value"])) for d in plan["deviations"]}
    assert ("learning_rate", "0.0001") in deviations and ("problems", "5 of 12") in deviations


def test_json_needs_plan(capsys):
    assert main(["eval", "--json"]) == 2
    assert "--json goes with --plan" in capsys.readouterr().err


def test_plan_of_missing_training_rows_is_an_error(tmp_path):
    from dasd.training import TrainConfig

    with pytest.raises(DasdError, match="data file not found"):
        make_plan("train", TrainConfig(data=[str(tmp_path / "none.jsonl")],
                                       out=str(tmp_path / "a")))


def test_a_method_setting_is_compared_with_its_default_even_when_omitted_at_it():
    from dasd.plan import method_deviations

    # `guard` is left out of written settings at its default (1.0), yet is a deviation
    assert method_deviations("g", "dasd", {"top_k": 6, "guard": 0.1}) == [
        {"where": "method g", "setting": "guard", "value": 0.1, "paper": 1.0}]
    assert method_deviations("d", "dasd", {"top_k": 6, "tau": 0.2}) == []
