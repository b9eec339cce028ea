"""`dasd run` on a tiny local model: every stage runs once, then is reused."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from dasd.cli import main
from dasd.config import build_config, load_yaml
from dasd.decoding.generate import GenerateConfig
from dasd.errors import DasdError
from dasd.plan import make_plan
from dasd.run import run
from dasd.run_config import RunConfig


@pytest.fixture
def model_dir(tmp_path, tiny_model, tokenizer):
    tiny_model.float().save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    return str(tmp_path / "m")


def tiny_run(tmp_path, model_dir, **overrides):
    return run(tiny_config(tmp_path, model_dir, **overrides))


def tiny_config(tmp_path, model_dir, **overrides):
    values = {
        "name": "t", "out_dir": str(tmp_path / "run"), "model": model_dir,
        "methods": [{"name": "sd"}, {"name": "dasd", "tau": 0.3}],
        "generate": {"limit": 4, "max_new_tokens": 6, "batch_size": 4},
        # random models never answer correctly: train on every row to exercise the stage
        "train": {"only_correct": False, "max_steps": 2, "per_device_train_batch_size": 2},
        "eval": {"limit": 3, "max_new_tokens": 6},
    }
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return build_config(RunConfig, values)


def reused(report):
    return {f"{name}.{stage}": summary.get("reused", False)
            for name, result in report["methods"].items() for stage, summary in result.items()}


def test_runs_every_stage_then_reuses_them(tmp_path, model_dir):
    first = tiny_run(tmp_path, model_dir)
    assert set(first["methods"]) == {"origin", "sd", "dasd"}
    assert not any(reused(first).values())
    assert first["methods"]["dasd"]["generate"]["settings"]["tau"] == 0.3
    assert first["methods"]["dasd"]["eval"]["n"] == 3
    root = tmp_path / "run"
    for path in ("config.yaml", "results.json", "results.md", "generate/dasd.jsonl",
                 "train/dasd/adapter_model.safetensors", "eval/dasd.jsonl", "eval/origin.jsonl",
                 "analysis/report.html", "analysis/high_ppl.csv", "analysis/accuracy.csv"):
        assert (root / path).exists(), path
    assert "| dasd |" in (root / "results.md").read_text()

    second = tiny_run(tmp_path, model_dir)
    assert all(reused(second).values())
    assert json.loads((root / "results.json").read_text())["methods"]["sd"]["eval"]["reused"]


def test_a_changed_setting_reruns_its_stage_and_those_after_it(tmp_path, model_dir):
    tiny_run(tmp_path, model_dir)
    report = tiny_run(tmp_path, model_dir, eval={"limit": 2})
    assert reused(report) == {"origin.eval": False, "sd.generate": True, "sd.train": True,
                              "sd.eval": False, "dasd.generate": True, "dasd.train": True,
                              "dasd.eval": False}
    report = tiny_run(tmp_path, model_dir, eval={"limit": 2},
                      methods=[{"name": "sd"}, {"name": "dasd", "tau": 0.4}])
    assert reused(report) == {"origin.eval": True, "sd.generate": True, "sd.train": True,
                              "sd.eval": True, "dasd.generate": False, "dasd.train": False,
                              "dasd.eval": False}


def test_the_plan_of_a_finished_run_reuses_it_and_a_new_seed_draws_again(tmp_path, model_dir):
    from dasd.plan import make_plan

    tiny_run(tmp_path, model_dir, methods=[{"name": "sd"}])
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["problems"]
    assert len(recorded["train"][0]["ids"]) == 4 and recorded["train"][0]["methods"] == ["sd"]
    assert recorded["test"]["n"] == 3
    before = sorted((tmp_path / "run").rglob("*"))
    plan = make_plan("run", tiny_config(tmp_path, model_dir, methods=[{"name": "sd"}]))
    assert {s["status"] for s in plan["stages"]} == {"reuse"}
    assert plan["token_budget"]["new_tokens_max_to_run"] == 0
    plan = make_plan("run", tiny_config(tmp_path, model_dir, seed=1, methods=[{"name": "sd"}]))
    assert [s["status"] for s in plan["stages"]] == ["run"] * 4  # other problems, other LoRA
    assert sorted((tmp_path / "run").rglob("*")) == before  # a plan writes nothing


def test_cli_run_takes_a_config_file_and_overrides(tmp_path, model_dir, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\nout_dir: {tmp_path / 'cli'}\nmodel: {model_dir}\n"
                      "methods: [{name: sd}]\ngenerate: {limit: 2, max_new_tokens: 4}\n"
                      "train: {only_correct: false, max_steps: 1}\n")
    assert main(["run", str(config), "--eval.limit", "2", "--eval.max-new-tokens", "4"]) == 0
    report = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert report["methods"]["sd"]["eval"]["n"] == 2
    assert "sd" in capsys.readouterr().out


def test_bad_method_is_refused_before_anything_runs(tmp_path, model_dir):
    with pytest.raises(DasdError, match="tau must be in"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "dasd", "tau": 2.0}])
    with pytest.raises(DasdError, match="unique"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "sd"}, {"name": "sd"}])
    assert not (tmp_path / "run").exists()


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*.yaml")
                                         if "accelerate" not in p.parts), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    values = load_yaml(path)
    if path.name.startswith("opsd"):
        from dasd.training.onpolicy.config import OnPolicyConfig
        build_config(OnPolicyConfig, values)
        return
    config_cls = GenerateConfig if "generate-" in path.name else RunConfig
    config = build_config(config_cls, values)
    if config_cls is RunConfig:
        from dasd.decoding.rules import RULES
        from dasd.tasks import TASKS
        assert config.task in TASKS
        from dasd.training.onpolicy import METHODS
        for spec in config.methods:
            if spec.onpolicy:
                assert spec.method in METHODS
                assert config.onpolicy_config(spec).resolved().method == spec.method
                continue
            if spec.decodes:
                assert spec.method in RULES
                assert config.data_config(spec).settings == spec.settings
            config.train_config(spec, "x.jsonl")


def test_methods_can_train_on_one_difficulty_level():
    config = build_config(RunConfig, {"methods": [{"name": "dasd-L2", "method": "dasd",
                                                   "levels": [2]}]})
    generate_config = config.data_config(config.methods[0])
    assert generate_config.levels == [2] and generate_config.method == "dasd"
    from dasd.tasks import load_split
    _, _, examples = load_split(dataclasses.replace(generate_config, limit=5))
    assert len(examples) == 5 and {e.level for e in examples} == {2}


def test_per_level_runs_feed_the_training_difficulty_analysis(tmp_path, model_dir):
    methods = [{"name": f"sd-L{k}", "method": "sd", "levels": [k]} for k in (1, 2)]
    tiny_run(tmp_path, model_dir, methods=methods)
    root = tmp_path / "run"
    rows = (root / "generate" / "sd-L2.jsonl").read_text().splitlines()
    levels = {json.loads(line)["level"] for line in rows}
    assert levels == {2}
    table = (root / "analysis" / "training_level.csv").read_text().splitlines()
    assert len(table) == 3 and table[1].startswith("sd,1,sd-L1")


def test_baselines_run_from_one_config(tmp_path, model_dir):
    methods = [
        {"name": "sd", "train": {"rejected": "reference", "reject_mentions": True,
                                 "only_correct": True}},
        {"name": "sd-mask-ppl", "method": "mask-ppl", "data_from": "sd", "threshold": 1000.0},
        {"name": "gold", "method": "reference"},
        {"name": "gold-profit", "method": "profit", "data_from": "gold", "threshold": 1e-6},
    ]
    report = tiny_run(tmp_path, model_dir, methods=methods)
    root, results = tmp_path / "run", report["methods"]
    # the random model is never correct: keep-reference trains sd on the 4 references
    assert results["sd"]["train"]["rows"]["replaced_by_reference"] == {"not_correct": 4}
    assert results["sd-mask-ppl"]["data_from"] == "sd"
    assert results["sd-mask-ppl"]["train"]["data"] == [str(root / "generate" / "sd.jsonl")]
    gold_rows = [json.loads(line) for line in (root / "generate" / "gold.jsonl").open()]
    assert len(gold_rows) == 4 and all(r["method"] == "reference" for r in gold_rows)
    assert not (root / "generate" / "gold-profit.jsonl").exists()
    assert results["gold-profit"]["train"]["rows"]["used"] == 4
    for name in ("sd", "sd-mask-ppl", "gold", "gold-profit"):
        assert results[name]["eval"]["n"] == 3, name
    table = (root / "results.md").read_text()
    assert "| sd-mask-ppl |" in table and "rows of sd" in table


def test_bad_baseline_settings_are_refused_before_anything_runs(tmp_path, model_dir):
    with pytest.raises(DasdError, match="data_from 'gold' must name an earlier method"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "x", "data_from": "gold"},
                                               {"name": "gold", "method": "reference"}])
    with pytest.raises(DasdError, match="method 'x' train: unknown setting 'only_corect' "
                                        r"\(did you mean 'only_correct'\?\)"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "x", "method": "sd",
                                                "train": {"only_corect": True}}])
    with pytest.raises(DasdError, match="'loss' is from an older dasd: ProFit is a method"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "sd", "train": {"loss": "profit"}}])
    with pytest.raises(DasdError, match="is a setting of the method: write it in the entry"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "mp", "method": "mask-ppl",
                                                "train": {"threshold": 3}}])
    with pytest.raises(DasdError, match="sd decodes its own rows; drop data_from"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "gold", "method": "reference"},
                                               {"name": "x", "method": "sd",
                                                "data_from": "gold"}])
    assert not (tmp_path / "run").exists()


def test_on_policy_methods_run_beside_data_time_methods(tmp_path, model_dir):
    methods = [{"name": "dasd"},
               {"name": "opsd", "train": {"max_steps": 2}},
               {"name": "pw", "method": "pw-opsd", "train": {"learning_rate": 1e-3}}]
    onpolicy = {"max_steps": 1, "per_device_train_batch_size": 2,
                "max_completion_length": 4, "lora_r": 4, "lora_alpha": 8}
    report = tiny_run(tmp_path, model_dir, methods=methods, onpolicy=onpolicy)
    root, results = tmp_path / "run", report["methods"]
    assert not (root / "generate" / "opsd.jsonl").exists()
    opsd = yaml.safe_load((root / "train" / "opsd" / "config.yaml").read_text())
    pw = yaml.safe_load((root / "train" / "pw" / "config.yaml").read_text())
    # the same problems as the data-time methods; each method its own paper defaults
    assert opsd["limit"] == pw["limit"] == 4 and opsd["split"] == "train"
    assert (opsd["method"], opsd["trainer"]["max_steps"], opsd["trainer"]["learning_rate"]) == (
        "opsd", 2, 2e-4)
    assert (pw["method"], pw["trainer"]["max_steps"], pw["trainer"]["learning_rate"],
            pw["settings"]["beta"]) == ("pw-opsd", 1, 1e-3, 0.0)
    assert results["opsd"]["train"]["steps"] == 2 and results["pw"]["train"]["steps"] == 1
    assert results["opsd"]["eval"]["n"] == results["dasd"]["eval"]["n"] == 3
    assert "| pw |" in (root / "results.md").read_text()
    assert "on-policy rollouts" in (root / "results.md").read_text()
    # the run's own config stays method-neutral, so rerunning it gives the same settings
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert "learning_rate" not in saved["onpolicy"]["trainer"]
    assert all(tiny_run(tmp_path, model_dir, methods=methods, onpolicy=onpolicy)["methods"][
        name]["train"].get("reused") for name in ("opsd", "pw"))


def test_on_policy_methods_refuse_decoding_settings(tmp_path, model_dir):
    with pytest.raises(DasdError, match="trains on its own rollouts: remove data_from"):
        tiny_run(tmp_path, model_dir, methods=[{"name": "dasd"}, {
            "name": "opsd", "tau": 0.3, "data_from": "dasd"}])


def test_sampled_eval_section_reports_pass_at_every_sample():
    config = build_config(RunConfig, {"eval": {"samples": 4, "temperature": 0.6}})
    assert config.eval_config("x", None).k == 4  # not the default section's k = 1
    config = build_config(RunConfig, {"eval": {"samples": 4, "temperature": 0.6,
                                               "pass_k": 2}})
    assert config.eval_config("x", None).k == 2


def test_settings_that_change_no_output_reuse_every_stage(tmp_path, model_dir):
    tiny_run(tmp_path, model_dir)
    again = tiny_run(tmp_path, model_dir, generate={"batch_size": 2, "engine": "draft-verify"},
                     train={"logging_steps": 5, "report_to": "none"}, eval={"batch_size": 1})
    assert all(reused(again).values())
    with pytest.raises(DasdError, match="generate.beta' is from an older dasd: a method "
                                        "setting: write it in the method's entry"):
        tiny_run(tmp_path, model_dir, generate={"beta": 1.0})


def test_results_table_has_level_columns_only_for_tasks_with_levels():
    from dasd.results import results_rows

    def report(per_level):
        evaluated = {"accuracy": 0.5, "n": 2, "per_level": per_level}
        return {"methods": {"origin": {"eval": evaluated}}}

    header, rows = results_rows(report({"none": {"accuracy": 0.5}}))
    assert header[:3] == ["method", "accuracy (n)", "correct/total"] and rows[0][1] == "0.500 (2)"
    header, rows = results_rows(report({"2": {"accuracy": 1.0}, "1": {"accuracy": 0.0}}))
    assert header[2:4] == ["L1", "L2"] and rows[0][2:4] == ["0.00", "1.00"]


def test_a_new_pass_k_rescores_without_decoding_again(tmp_path, model_dir):
    sampled = {"samples": 2, "temperature": 1.0, "pass_k": 1}
    tiny_run(tmp_path, model_dir, eval=sampled)
    rows = (tmp_path / "run" / "eval" / "dasd.jsonl").read_text()
    again = tiny_run(tmp_path, model_dir, eval={**sampled, "pass_k": 2})
    assert again["methods"]["dasd"]["eval"]["pass_k"] == 2
    assert not again["methods"]["dasd"]["eval"].get("reused")
    assert again["methods"]["dasd"]["train"]["reused"]
    assert again["methods"]["dasd"]["eval"]["new_tokens"] == 0  # resumed: nothing decoded
    assert (tmp_path / "run" / "eval" / "dasd.jsonl").read_text() == rows


def test_an_interrupted_training_stage_resumes_from_its_checkpoint(tmp_path, model_dir,
                                                                   monkeypatch):
    import dasd.training.sft as sft
    from tests.training.test_sft import StopAt

    real_build = sft.build_trainer

    def build_and_kill(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        trainer.add_callback(StopAt(3).callback)
        return trainer

    methods = [{"name": "sd"}]
    train = {"max_steps": 4, "save_steps": 2}
    monkeypatch.setattr(sft, "build_trainer", build_and_kill)
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path, model_dir, methods=methods, train=train)
    out = tmp_path / "run" / "train" / "sd"
    assert (out / "checkpoint-2").is_dir() and not (out / "adapter_model.safetensors").exists()
    steps_run = []

    def build_and_count(*args, **kwargs):
        from transformers import TrainerCallback

        class Count(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                steps_run.append(state.global_step)

        trainer = real_build(*args, **kwargs)
        trainer.add_callback(Count())
        return trainer

    monkeypatch.setattr(sft, "build_trainer", build_and_count)
    report = tiny_run(tmp_path, model_dir, methods=methods, train=train)
    assert report["methods"]["sd"]["generate"]["reused"]
    assert report["methods"]["sd"]["train"]["steps"] == 4
    assert steps_run == [3, 4]  # resumed after the checkpoint of step 2, not from scratch


def test_generate_only_writes_the_rows_and_the_analysis_but_trains_nothing(tmp_path, model_dir):
    report = tiny_run(tmp_path, model_dir, generate_only=True, methods=[
        {"name": "sd"}, {"name": "dasd-g0.5", "method": "dasd", "guard": 0.5},
        {"name": "dasd-s2", "method": "dasd-sample", "temperature": 1.0,
         "generate": {"samples": 2}}])
    assert set(report["methods"]) == {"sd", "dasd-g0.5", "dasd-s2"}
    assert all(set(r) == {"generate"} for r in report["methods"].values())
    assert report["methods"]["dasd-s2"]["generate"]["samples"] == 8
    root = tmp_path / "run"
    assert not (root / "train").exists() and not (root / "eval").exists()
    assert (root / "analysis" / "frontier.csv").is_file()


def test_results_carry_intervals_paired_comparisons_and_peak_memory(tmp_path, model_dir):
    from dasd.analysis.compare import CompareSettings, compare_models, problem_scores
    from dasd.records import read_jsonl

    report = tiny_run(tmp_path, model_dir, compare=[["dasd", "sd"]],
                      comparison={"resamples": 500, "seed": 3})
    root = tmp_path / "run"
    saved = json.loads((root / "results.json").read_text())
    pairs = [(c["a"], c["b"]) for c in saved["comparison"]["comparisons"] if c["level"] == "all"]
    assert pairs == [("sd", "origin"), ("dasd", "origin"), ("dasd", "sd")]
    scores = {name: problem_scores(read_jsonl(root / "eval" / f"{name}.jsonl"))
              for name in ("origin", "sd", "dasd")}
    again = compare_models(scores, pairs, CompareSettings(resamples=500, seed=3))
    assert saved["comparison"] == json.loads(json.dumps(again))  # from the eval rows alone
    assert set(saved["comparison"]["accuracy"]) == {"origin", "sd", "dasd"}
    text = (root / "results.md").read_text()
    assert "## Paired comparisons" in text and "not distinguishable from origin at n = 3" in text
    assert "peak resident memory" in text
    distance = saved["distance_from_sd"]
    assert distance["sd"]["same_as_sd_percent"] == 100.0
    assert distance["sd"]["departed_tokens_percent"] == 0.0  # sd writes the reference top-1
    assert 0.0 <= distance["dasd"]["same_as_sd_percent"] <= 100.0
    for name in ("sd", "dasd"):
        for stage in ("generate", "train", "eval"):
            assert report["methods"][name][stage]["peak_rss_mb"] > 0, (name, stage)


def test_a_compare_pair_naming_no_model_is_refused(tmp_path, model_dir):
    for pairs, message in [([["dasd", "sdd"]], "'sdd' is not a model of this run"),
                           ([["dasd"]], "each entry is a pair"),
                           ([["sd", "sd"]], "each entry is a pair")]:
        with pytest.raises(DasdError, match=message):
            tiny_config(tmp_path, model_dir, compare=pairs)
    with pytest.raises(DasdError, match="resamples must be >= 100"):
        tiny_config(tmp_path, model_dir, comparison={"resamples": 5})


def test_progress_names_each_model_as_the_run_names_it(tmp_path, model_dir, monkeypatch):
    from contextlib import contextmanager

    import dasd.decoding.generate as generate_module
    import dasd.evaluation.evaluate as evaluate_module

    labels = []
    real = generate_module.progress_bar

    @contextmanager
    def recording(description, *args, **kwargs):
        labels.append(description)
        with real(description, *args, **kwargs) as bar:
            yield bar

    monkeypatch.setattr(generate_module, "progress_bar", recording)
    monkeypatch.setattr(evaluate_module, "progress_bar", recording)
    tiny_run(tmp_path, model_dir, methods=[{"name": "dasd-g0.1", "method": "dasd",
                                            "guard": 0.1}])
    assert labels == ["eval origin on arith/test", "dasd-g0.1 on arith/train",
                      "eval dasd-g0.1 on arith/test"]


def gsm8k_file(tmp_path):
    from tests.conftest import write_jsonl

    path = tmp_path / "gsm8k-test.jsonl"
    write_jsonl(path, [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n"
                        f"#### {i + 1}"} for i in range(3)])
    return str(path)


def test_retention_evaluates_origin_and_every_trained_model_on_other_tasks(tmp_path,
                                                                           model_dir):
    retention = [{"task": "gsm8k", "data": gsm8k_file(tmp_path), "max_new_tokens": 4}]
    config = tiny_config(tmp_path, model_dir, retention=retention)
    plan = make_plan("run", config)
    stages = [(s["method"], s["stage"]) for s in plan["stages"] if "retention" in s["stage"]]
    assert stages == [("origin", "retention gsm8k"), ("sd", "retention gsm8k"),
                      ("dasd", "retention gsm8k")]
    assert plan["problems"]["retention"]["gsm8k"]["n"] == 3

    report = run(config)
    root = tmp_path / "run"
    for name in ("origin", "sd", "dasd"):
        assert (root / "retention" / "gsm8k" / f"{name}.jsonl").is_file()
        assert report["methods"][name]["retention"]["gsm8k"]["n"] == 3
    table = json.loads((root / "results.json").read_text())["retention"]["gsm8k"]
    overall = [c for c in table["comparisons"] if c["level"] == "all"]
    assert [(c["a"], c["b"], c["n"]) for c in overall] == [("sd", "origin", 3),
                                                           ("dasd", "origin", 3)]
    for c in overall:  # right->wrong and wrong->right from the verdicts themselves
        before = {r["id"]: r["correct"] for r in read_rows(root, "origin")}
        after = {r["id"]: r["correct"] for r in read_rows(root, c["a"])}
        assert c["b_better"] == sum(before[i] and not after[i] for i in before)
        assert c["a_better"] == sum(after[i] and not before[i] for i in before)
    assert "## Retention" in (root / "results.md").read_text()
    assert "gsm8k" in yaml.safe_load((root / "config.yaml").read_text())["problems"][
        "retention"]
    again = run(config)
    assert again["methods"]["dasd"]["retention"]["gsm8k"]["reused"]


def read_rows(root, name):
    from dasd.records import read_jsonl

    return read_jsonl(root / "retention" / "gsm8k" / f"{name}.jsonl")


@pytest.mark.parametrize("retention, message", [
    ([{"task": "gsm9k"}], "retention: unknown task 'gsm9k'.*did you mean 'gsm8k'"),
    ([{"task": "gsm8k", "limit": 0}], "limit must be >= 1"),
    ([{"task": "gsm8k", "max_new_tokens": 0}], "max_new_tokens must be >= 1"),
    (["gsm8k", "gsm8k"], "each task \\(and split\\) once"),
    ([{"task": "gsm8k", "splt": "test"}], "unknown config key 'retention.splt'"),
])
def test_bad_retention_entries_are_refused(tmp_path, model_dir, retention, message):
    with pytest.raises(DasdError, match=message):
        tiny_config(tmp_path, model_dir, retention=retention)


def test_seeds_repeat_training_and_evaluation_and_pool_in_the_comparisons(tmp_path, model_dir):
    from dasd.analysis.compare import CompareSettings, compare_models, problem_scores
    from dasd.records import read_jsonl

    config = tiny_config(tmp_path, model_dir, seeds=[0, 1],
                         methods=[{"name": "sd"}, {"name": "dasd", "tau": 0.3}])
    plan = make_plan("run", config)
    assert [(s["method"], s["stage"]) for s in plan["stages"]] == [
        ("origin", "eval"), ("sd", "generate"), ("sd seed 0", "train"), ("sd seed 0", "eval"),
        ("sd seed 1", "train"), ("sd seed 1", "eval"), ("dasd", "generate"),
        ("dasd seed 0", "train"), ("dasd seed 0", "eval"), ("dasd seed 1", "train"),
        ("dasd seed 1", "eval")]

    report = run(config)
    root = tmp_path / "run"
    for name in ("sd", "dasd"):
        for seed in (0, 1):
            assert (root / "train" / name / f"seed-{seed}" / "adapter_model.safetensors").is_file()
            assert (root / "eval" / f"seed-{seed}" / f"{name}.jsonl").is_file()
        per_seed = [report["methods"][name]["seeds"][str(s)]["eval"]["accuracy"] for s in (0, 1)]
        pooled = report["methods"][name]["eval"]
        assert pooled["accuracy_per_seed"] == per_seed
        assert pooled["accuracy"] == pytest.approx(sum(per_seed) / 2)
        assert json.loads((root / "eval" / f"{name}.summary.json").read_text())[
            "accuracy_per_seed"] == per_seed
    adapters = [(root / "train" / "sd" / f"seed-{s}" / "adapter_model.safetensors").read_bytes()
                for s in (0, 1)]
    assert adapters[0] != adapters[1]  # another LoRA init and order: another model
    assert not (root / "eval" / "seed-0" / "origin.jsonl").exists()  # origin runs once

    rows = {n: [r for s in (0, 1) for r in read_jsonl(root / "eval" / f"seed-{s}" / f"{n}.jsonl")]
            for n in ("sd", "dasd")}
    rows["origin"] = read_jsonl(root / "eval" / "origin.jsonl")
    pairs = [("sd", "origin"), ("dasd", "origin"), ("dasd", "sd")]
    expected = compare_models({n: problem_scores(r) for n, r in rows.items()}, pairs,
                              CompareSettings())
    saved = json.loads((root / "results.json").read_text())["comparison"]
    assert saved["comparisons"] == json.loads(json.dumps(expected["comparisons"]))
    assert "2 seeds" in (root / "results.md").read_text()

    again = run(config)
    assert all(again["methods"][n]["seeds"][str(s)][stage]["reused"]
               for n in ("sd", "dasd") for s in (0, 1) for stage in ("train", "eval"))
    analysis = root / "analysis"
    assert {r["method"] for r in read_csv_rows(analysis / "accuracy.csv")} == {
        "origin", "sd", "dasd"}


def read_csv_rows(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("overrides, message", [
    ({"seeds": []}, "seeds: give distinct training seeds"),
    ({"seeds": [0, 0]}, "seeds: give distinct training seeds"),
    ({"seeds": ["a"]}, "'seeds' expects int"),
    ({"seeds": [0, 1], "methods": [{"name": "opsd"}]}, "on-policy methods \\(opsd\\) take one"),
])
def test_bad_seeds_are_refused(tmp_path, model_dir, overrides, message):
    with pytest.raises(DasdError, match=message):
        tiny_config(tmp_path, model_dir, **overrides)


def test_validation_chooses_a_checkpoint_on_held_out_training_problems(tmp_path, model_dir):
    """Every checkpoint and the final model answer problems of the training split that
    the training draw left out (disjoint, recorded); the best is evaluated on test."""
    report = tiny_run(tmp_path, model_dir, methods=[{"name": "sd"}],
                      train={"max_steps": 3, "save_steps": 1}, validation={"problems": 3})
    root = tmp_path / "run"
    problems = yaml.safe_load((root / "config.yaml").read_text())["problems"]
    train_ids, held_out = set(problems["train"][0]["ids"]), problems["validation"][0]["ids"]
    assert len(held_out) == 3 and not train_ids & set(held_out)
    result = report["methods"]["sd"]
    choice = result["validation"]
    assert [p["step"] for p in choice["points"]] == [1, 2, 3] and choice["final"]["step"] == 3
    best = max(p["accuracy"] for p in choice["points"])
    assert choice["chosen"]["accuracy"] == best
    assert choice["chosen"]["step"] == max(p["step"] for p in choice["points"]
                                           if p["accuracy"] == best)  # ties: the later
    for name in ("final", "checkpoint-1", "checkpoint-2"):
        rows = [json.loads(line) for line in
                (root / "validation" / "sd" / f"{name}.jsonl").read_text().splitlines()]
        assert [row["id"] for row in rows] == held_out
    assert result["eval_chosen"]["step"] == choice["chosen"]["step"]
    assert result["eval_chosen"]["n"] == result["eval"]["n"] == 3
    assert "## Checkpoint choice" in (root / "results.md").read_text()
    figure = root / "analysis" / "checkpoints.png"
    assert figure.is_file() and "5c. Checkpoint choice" in (
        root / "analysis" / "report.html").read_text()
    again = tiny_run(tmp_path, model_dir, methods=[{"name": "sd"}],
                     train={"max_steps": 3, "save_steps": 1}, validation={"problems": 3})
    assert again["methods"]["sd"]["validation"]["reused"]
    assert again["methods"]["sd"]["eval_chosen"]["reused"]


@pytest.mark.parametrize("overrides, message", [
    ({"validation": {"problems": -1}}, "validation.problems must be >= 0"),
    ({"validation": {"problems": 5, "max_new_tokens": 0}}, "validation.max_new_tokens"),
    ({"validation": {"problems": 5}, "generate": {"limit": None}},
     "trains on the whole arith/train split"),
    ({"validation": {"problems": 5}, "generate_only": True}, "a generate_only run trains"),
    ({"generate": {"held_out": 5}}, "a run holds problems out itself: set validation.problems"),
    ({"eval": {"held_out": 5}}, "a run holds problems out itself"),
])
def test_bad_validation_settings_are_one_line_errors(tmp_path, model_dir, overrides, message):
    with pytest.raises(DasdError, match=message):
        tiny_config(tmp_path, model_dir, **overrides)


def test_on_policy_training_is_validated_by_the_same_stages(tmp_path, model_dir):
    onpolicy = {"max_steps": 2, "save_steps": 1, "per_device_train_batch_size": 2,
                "max_completion_length": 6}
    report = tiny_run(tmp_path, model_dir, methods=[{"name": "opsd"}], onpolicy=onpolicy,
                      validation={"problems": 2})
    assert "analysis" not in report  # nothing decoded: the token analyses have no rows
    choice = report["methods"]["opsd"]["validation"]
    assert [p["step"] for p in choice["points"]] == [1, 2]
    assert report["methods"]["opsd"]["eval_chosen"]["step"] == choice["chosen"]["step"]


def test_seeds_resample_a_sampling_method_and_share_the_greedy_rows(tmp_path, model_dir):
    """Greedy rows depend on no seed: drawn once. A sampling rule's rows are drawn once
    per training seed (its own folder and marker), each seed training on its own draw;
    the problems stay the run seed's."""
    from dasd.records import read_jsonl

    methods = [{"name": "sd"}, {"name": "ds", "method": "dasd-sample", "temperature": 5.0,
                                "tau": 0.01}]  # every top-K candidate, near uniform
    config = tiny_config(tmp_path, model_dir, seeds=[0, 1], methods=methods,
                         generate={"max_new_tokens": 12})
    stages = [(s["method"], s["stage"]) for s in make_plan("run", config)["stages"]]
    assert stages.count(("sd", "generate")) == 1
    assert ("ds seed 0", "generate") in stages and ("ds seed 1", "generate") in stages
    report = run(config)
    root = tmp_path / "run"
    draws = [read_jsonl(root / "generate" / f"seed-{s}" / "ds.jsonl") for s in (0, 1)]
    assert [r["id"] for r in draws[0]] == [r["id"] for r in draws[1]]  # the same problems
    assert [r["settings"]["seed"] for r in draws[0] + draws[1]] == [0] * 4 + [1] * 4
    assert [r["completion_ids"] for r in draws[0]] != [r["completion_ids"] for r in draws[1]]
    for seed in (0, 1):
        trained = yaml.safe_load((root / "train" / "ds" / f"seed-{seed}" / "config.yaml")
                                 .read_text())
        assert trained["data"] == [str(root / "generate" / f"seed-{seed}" / "ds.jsonl")]
    pooled = report["methods"]["ds"]["generate"]
    assert pooled["samples"] == 8 and pooled["sample_seeds"] == [0, 1]
    assert report["methods"]["ds"]["seeds"]["1"]["generate"]["samples"] == 4
    assert not (root / "generate" / "seed-0" / "sd.jsonl").exists()
