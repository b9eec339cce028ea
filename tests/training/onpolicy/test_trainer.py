"""On-policy trainers: a few steps of each method on a tiny model, the privileged teacher,
the output folder, config checks, the shipped YAMLs and the command line."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from dasd.cli import main
from dasd.config import build_config, load_yaml
from dasd.errors import DasdError
from dasd.evaluation.evaluate import apply_adapter
from dasd.tasks import get_task
from dasd.tasks.prompts import render_prompts
from dasd.training.onpolicy import METHODS
from dasd.training.onpolicy.config import OnPolicyConfig
from dasd.training.onpolicy.trainer import build_dataset, build_trainer, train_onpolicy
from dasd.training.rewards import REWARD_LOG_KEY
from tests.conftest import make_model, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = sorted(Path(__file__).resolve().parents[3].glob("configs/opsd*.yaml"))


def tiny(tokenizer):
    return make_model(len(tokenizer), eos_id=tokenizer.eos_token_id, eos_bias=0.5).float()


def fast(out, **overrides) -> OnPolicyConfig:
    """Flat keys as in YAML: TRL's arguments and the method's settings included."""
    values = dict(limit=4, max_completion_length=6, per_device_train_batch_size=2,
                  max_steps=3, lora_r=4, lora_alpha=8, learning_rate=1e-2, out=str(out))
    return build_config(OnPolicyConfig, {**values, **overrides})


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_and_saves_a_loadable_adapter(tmp_path, method):
    tokenizer = make_tokenizer()
    model = tiny(tokenizer)
    fresh = copy.deepcopy(model)
    out = tmp_path / method
    groups = {"num_generations": 2} if METHODS[method].settings().reward_weight else {}
    summary = train_onpolicy(fast(out, method=method, **groups), model, tokenizer)
    assert summary["steps"] == 3 and summary["method"] == method
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert all("divergence" in row for row in log if "loss" in row)
    assert all(REWARD_LOG_KEY in row for row in log if "loss" in row)  # every method's rollouts
    peaks = [row["peak_memory_mb"] for row in log if "loss" in row]
    assert len(peaks) == 3 and min(peaks) > 0 and summary["peak_memory_mb"] == max(peaks)
    assert summary["seconds_per_step"] > 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"] == method and saved["trainer"]["learning_rate"] == 1e-2
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 3
    merged = apply_adapter(fresh, out)  # the `dasd eval --adapter` path
    ids = torch.tensor([[5, 6, 7, 8]])
    assert not torch.allclose(merged(ids).logits, tiny(tokenizer)(ids).logits)


def test_a_method_without_beta_or_clip_trains(tmp_path, monkeypatch):
    """A new method needs only `reward_weight`: the logged divergence falls back to
    OPSD's beta and clip (a method of the adding-a-method guide, reverse KL)."""
    import dasd.training.onpolicy as onpolicy
    from dasd.training.losses import opsd_loss
    from dasd.training.onpolicy.method import OnPolicyMethod, reward_weight_field

    @dataclasses.dataclass
    class ReverseKL:
        reward_weight: float = reward_weight_field(0.0, "distillation only")

    def loss(student, teacher, mask, settings):
        return opsd_loss(student, teacher, mask, 1.0, None)

    method = OnPolicyMethod(name="rkl-opsd", paper="test", loss=loss, settings=ReverseKL)
    monkeypatch.setitem(onpolicy.METHODS, "rkl-opsd", method)
    tokenizer = make_tokenizer()
    summary = train_onpolicy(fast(tmp_path / "rkl", method="rkl-opsd"), tiny(tokenizer),
                             tokenizer)
    log = [json.loads(line) for line in (tmp_path / "rkl" / "train_log.jsonl").read_text()
           .splitlines()]
    assert summary["steps"] == 3 and all("divergence" in row for row in log if "loss" in row)


@pytest.mark.parametrize("teacher", ["live", "ema"])
def test_trls_other_teachers_are_passed_through(tmp_path, teacher):
    """dasd's default teacher is the initial policy (base); TRL's live and EMA teachers run
    under their TRL name, recorded and shown by the plan."""
    from dasd.plan import make_plan

    assert fast(tmp_path / "b").resolved_trainer()["teacher_model_kind"] == "base"
    config = fast(tmp_path / teacher, teacher_model_kind=teacher, max_steps=2)
    stage = next(s for s in make_plan("train", config)["stages"] if "teacher" in s)
    assert stage["teacher"] == teacher
    tokenizer = make_tokenizer()
    summary = train_onpolicy(config, tiny(tokenizer), tokenizer)
    saved = yaml.safe_load((tmp_path / teacher / "config.yaml").read_text())
    assert summary["steps"] == 2 and saved["trainer"]["teacher_model_kind"] == teacher


def test_teacher_is_the_frozen_model_on_the_reference_prompt(tmp_path):
    tokenizer = make_tokenizer()
    model = tiny(tokenizer)
    base = copy.deepcopy(model).eval()
    config = fast(tmp_path / "t", limit=2)
    dataset = build_dataset(config, tokenizer)
    trainer = build_trainer(config, model, tokenizer, dataset)
    with torch.no_grad():  # a trained-looking adapter: LoRA B starts at zero
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    batch = trainer._prepare_training_batch([dataset[0], dataset[1]])
    logits = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, batch)

    example = get_task("arith").load("train", limit=1)[0]
    _, reference = render_prompts(tokenizer, get_task("arith").prompts, example)
    completion = batch["completion_ids"][0][batch["completion_mask"][0].bool()].tolist()
    teacher_row = batch["teacher_input_ids"][0][batch["teacher_attention_mask"][0].bool()]
    assert tokenizer.decode(teacher_row.tolist()) == reference + tokenizer.decode(completion)

    # Teacher = base weights (adapter off) on reference + rollout, scaled by temperature.
    width = batch["completion_ids"].shape[1]
    with torch.no_grad():
        expected = base(input_ids=batch["teacher_input_ids"],
                        attention_mask=batch["teacher_attention_mask"]).logits
    expected = expected[:, -width - 1:-1] / config.resolved_trainer()["temperature"]
    keep = logits.loss_mask.bool()
    assert torch.allclose(logits.teacher_logits[keep], expected[keep], atol=1e-4)
    # The student sees the question only, with the adapter on: different distributions.
    assert not torch.allclose(logits.student_logits[keep], logits.teacher_logits[keep],
                              atol=1e-2)


def test_method_defaults_fill_unset_fields_and_explicit_values_win():
    unresolved = OnPolicyConfig(method="pw-opsd")
    assert "learning_rate" not in unresolved.trainer  # a shared section stays method-neutral
    pw = unresolved.resolved()
    assert (pw.trainer["learning_rate"], pw.trainer["max_grad_norm"], pw.settings["beta"]) == (
        5e-6, 0.1, 0.0)
    opsd = dataclasses.replace(unresolved, method="opsd", settings={}).resolved()
    assert (opsd.trainer["learning_rate"], opsd.settings["beta"], opsd.lora_r,
            opsd.lora_alpha) == (2e-4, 0.5, 64, 128)
    assert (opsd.trainer["temperature"], opsd.trainer["top_p"], opsd.trainer["top_k"],
            opsd.settings["clip"]) == (1.1, 0.95, 20, 0.05)
    explicit = build_config(OnPolicyConfig, {"method": "pw-opsd", "learning_rate": 1e-4})
    assert explicit.resolved().trainer["learning_rate"] == 1e-4
    assert OnPolicyConfig(method="da-opsd").out == "runs/arith/train/da-opsd"


@pytest.mark.parametrize("values, message", [
    ({"method": "opsdd"}, "did you mean 'opsd'"),
    ({"beta": 1.5}, "beta must be in"),
    ({"clip": 0.0}, "clip must be > 0"),
    ({"top_p": 0.0}, "top_p"),
    ({"temperature": 0.0}, "temperature"),
    ({"method": "da-opsd", "rho": -0.1}, "rho must be in"),
    ({"method": "opsd", "rho": 0.1}, "method 'opsd' has no setting 'rho'"),
    ({"da_rho": 0.1}, "older dasd: write `rho`"),
    ({"batch_size": 2}, "older dasd: write TRL's `per_device_train_batch_size`"),
    ({"per_device_train_batch_size": 3, "num_generations": 2}, "num_generations"),
    ({"max_steps": 0}, "max_steps"),
    ({"teacher_model_kind": "frozen"}, "teacher_model_kind must be one of base, live, ema"),
])
def test_bad_settings_are_one_line_errors(values, message):
    with pytest.raises(DasdError, match=message) as err:
        build_config(OnPolicyConfig, values)
    assert "\n" not in str(err.value)


def test_over_long_teacher_prompt_is_refused_not_truncated(tmp_path):
    with pytest.raises(DasdError, match="max_prompt_length 50"):
        build_dataset(fast(tmp_path, max_prompt_length=50), make_tokenizer())


def test_existing_adapter_needs_overwrite(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_text("x")
    with pytest.raises(DasdError, match="--overwrite"):
        train_onpolicy(fast(tmp_path), tiny(make_tokenizer()), make_tokenizer())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_yaml_configs_load(path):
    config = build_config(OnPolicyConfig, load_yaml(path))
    assert config.method in METHODS and config.resolved_trainer()["max_steps"] > 0


def test_configs_exist_for_every_method():
    assert {build_config(OnPolicyConfig, load_yaml(p)).method for p in CONFIGS} == set(METHODS)


def test_command_line_picks_the_method_from_yaml_and_refuses_unknown_ones(tmp_path, capsys):
    tokenizer = make_tokenizer()
    tiny(tokenizer).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    settings = {"method": "da-opsd", "model": str(tmp_path / "m"), "limit": 2,
                "max_completion_length": 4, "per_device_train_batch_size": 2, "max_steps": 2,
                "num_generations": 2,
                "lora_r": 2,
                "lora_alpha": 4}
    (tmp_path / "da.yaml").write_text(yaml.safe_dump(settings))
    out = tmp_path / "da"
    assert main(["train", "--config", str(tmp_path / "da.yaml"), "--out", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "da-opsd"
    assert "da-opsd" in capsys.readouterr().out
    assert main(["train", "--method", "grpo", "--out", str(tmp_path / "x")]) == 2
    assert "unknown training method 'grpo'" in capsys.readouterr().err


def test_command_line_without_method_is_still_sft_on_data(tmp_path, recwarn):
    from tests.training.test_sft import make_row, write_rows

    tokenizer = make_tokenizer()
    tiny(tokenizer).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(4)])
    out = tmp_path / "sft"
    assert main(["train", "--model", str(tmp_path / "m"), "--data", data, "--max-steps", "1",
                 "--lora-r", "2", "--lora-alpha", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 1 and summary["data"] == [data] and "method" not in summary
    # peft's and TRL's reads of transformers' deprecated attribute stay out of the output
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]
