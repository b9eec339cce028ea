"""da-opsd: the direction term beside TRL's GRPO loss on the task's reward (SDPOTrainer),
the reward setting of every on-policy method, and the loss-only variant."""

import json

import pytest
import torch
import yaml
from trl.trainer.utils import selective_log_softmax

from dasd.config import build_config
from dasd.errors import DasdError
from dasd.training.losses import opsd_loss
from dasd.training.onpolicy import METHODS
from dasd.training.onpolicy.config import OnPolicyConfig
from dasd.training.onpolicy.trainer import build_dataset, build_trainer, train_onpolicy
from dasd.training.rewards import REWARD_LOG_KEY
from tests.conftest import make_tokenizer
from tests.training.onpolicy.test_trainer import fast, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_da_opsd_trains_on_the_reward_and_logs_the_routing(tmp_path):
    tokenizer = make_tokenizer()
    out = tmp_path / "da"
    summary = train_onpolicy(fast(out, method="da-opsd", num_generations=2), tiny(tokenizer),
                             tokenizer)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss" in row]
    assert len(steps) == 3
    for row in steps:
        assert 0.0 <= row[REWARD_LOG_KEY] <= 1.0
        assert "self_distillation/policy_loss" in row  # the GRPO term ran
        assert row["direction/pulled"] + row["direction/pushed"] <= 1.0
        assert row["direction/pushed"] > 0 and "direction/signed_divergence" in row
    assert summary["reward_mean"] is not None
    settings = yaml.safe_load((out / "config.yaml").read_text())["settings"]
    assert (settings["reward_weight"], settings["direction_weight"]) == (1.0, 1.0)


def fixed_rollouts(trainer, completions):
    """Rollouts that are always `completions` (the tiny model's samples may coincide)."""
    def generate(prompt_ids):
        return prompt_ids, [list(c) for c in completions]
    trainer._generate = generate


def mean_logps(trainer, batch) -> torch.Tensor:
    with torch.no_grad():
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logits = trainer._forward_logits(trainer.model, ids, mask,
                                         batch["completion_ids"].size(1))
        logps = selective_log_softmax(logits, batch["completion_ids"])
        keep = batch["completion_mask"]
        return (logps * keep).sum(-1) / keep.sum(-1)


def test_the_reward_term_raises_the_rewarded_rollout(tmp_path):
    """direction_weight 0: the loss is TRL's GRPO alone. One plain gradient step on a group
    of two rollouts, the first rewarded, moves probability from the second to the first."""
    tokenizer = make_tokenizer()
    config = fast(tmp_path / "r", method="da-opsd", num_generations=2, direction_weight=0.0)
    dataset = build_dataset(config, tokenizer)

    def first_is_right(prompts, completions, **columns):
        return [1.0 if i % 2 == 0 else 0.0 for i in range(len(completions))]

    trainer = build_trainer(config, tiny(tokenizer), tokenizer, dataset,
                            rewards=[first_is_right])
    eos = tokenizer.eos_token_id
    fixed_rollouts(trainer, [[40, 41, 42, eos], [50, 51, 52, eos]])
    trainer.model.eval()  # no accumulation scaling outside train()
    batch = trainer._prepare_training_batch([dataset[0], dataset[0]])
    assert batch["advantages"][0] > 0 > batch["advantages"][1]
    before = mean_logps(trainer, batch)
    trainer.compute_loss(trainer.model, batch).backward()
    with torch.no_grad():
        for param in trainer.model.parameters():
            if param.grad is not None:
                param -= 0.5 * param.grad
    after = mean_logps(trainer, batch)
    assert after[0] > before[0] and after[1] < before[1]


def test_without_reward_weight_the_loss_is_exactly_the_methods(tmp_path):
    tokenizer = make_tokenizer()
    config = fast(tmp_path / "o", method="opsd")
    dataset = build_dataset(config, tokenizer)
    trainer = build_trainer(config, tiny(tokenizer), tokenizer, dataset)
    fixed_rollouts(trainer, [[40, 41, tokenizer.eos_token_id], [50, 51, 52, 53]])
    trainer.model.eval()
    batch = trainer._prepare_training_batch([dataset[0], dataset[1]])
    logits = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, batch)
    expected = opsd_loss(logits.student_logits, logits.teacher_logits, logits.loss_mask)
    with torch.no_grad():
        assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(
            expected.item(), rel=1e-9)
    assert 0.0 <= batch["rewards"].mean().item() <= 1.0  # scored and logged all the same


def test_defaults_and_the_loss_only_variant():
    da = build_config(OnPolicyConfig, {"method": "da-opsd"}).resolved()
    assert da.trainer["num_generations"] == 4 and da.trainer["per_device_train_batch_size"] == 4
    assert (da.settings["reward_weight"], da.settings["direction_weight"], da.settings["rho"],
            da.settings["push_cap"]) == (1.0, 1.0, 0.8, 0.05)
    only = build_config(OnPolicyConfig, {"method": "da-opsd-loss-only"}).resolved()
    assert only.trainer["num_generations"] == 1 and "reward_weight" not in only.settings
    assert only.settings["rho"] == 0.2  # dasd's first reading, kept with the variant
    assert METHODS["da-opsd-loss-only"].settings().reward_weight == 0.0
    # a reward weight of 0 is left out of the settings, so older outputs stay valid
    assert "reward_weight" not in OnPolicyConfig(method="opsd").settings
    assert build_config(OnPolicyConfig, {"method": "opsd", "reward_weight": 0.5,
                                         "num_generations": 2, "per_device_train_batch_size": 2}
                        ).settings["reward_weight"] == 0.5


@pytest.mark.parametrize("values, message", [
    ({"method": "da-opsd", "num_generations": 1}, "num_generations must be >= 2"),
    ({"method": "opsd", "reward_weight": 1.0}, "num_generations must be >= 2"),
    ({"method": "da-opsd", "reward_weight": 0.0}, "method da-opsd-loss-only"),
    ({"method": "da-opsd", "push_cap": 0.0}, "push_cap must be > 0"),
    ({"method": "da-opsd", "direction_weight": -1.0}, "direction_weight must be >= 0"),
    ({"method": "opsd", "reward_weight": -1.0}, "reward_weight must be >= 0"),
    ({"method": "opsd", "trainer": {"distillation_weight": 0.5}}, "dasd sets distillation_weight"),
])
def test_bad_reward_settings_are_one_line_errors(values, message):
    with pytest.raises(DasdError, match=message) as err:
        build_config(OnPolicyConfig, values)
    assert "\n" not in str(err.value)
