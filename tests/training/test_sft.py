"""LoRA SFT on generated rows: data filtering, exact labels, loss masking, save and reload."""

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoModelForCausalLM

from dasd.config import build_config
from dasd.errors import DasdError
from dasd.training import TrainConfig, load_trained, train
from dasd.training.data import build_dataset
from dasd.training.sft import build_trainer
from tests.conftest import make_model, make_tokenizer

PATTERN = "ab" * 6  # a completion the tiny model can learn in a few dozen steps


pytestmark = pytest.mark.usefixtures("one_thread")


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_row(tokenizer, i: int, completion: str = PATTERN, correct: bool = True,
             finish_reason: str = "eos", loss_mask: list[int] | None = None) -> dict:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": f"say it {i}"}],
                                           tokenize=False, add_generation_prompt=True)
    completion_ids = encode(tokenizer, completion) + [tokenizer.eos_token_id]
    row = {"id": f"r{i}", "level": 1, "prompt": prompt, "prompt_ids": encode(tokenizer, prompt),
           "completion": completion, "completion_ids": completion_ids,
           "finish_reason": finish_reason, "correct": correct}
    if loss_mask is not None:
        row["loss_mask"] = loss_mask
    return row


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def tiny(tokenizer, seed: int = 0):
    return make_model(len(tokenizer), seed=seed, eos_id=tokenizer.eos_token_id).float()


def fast_config(data, out, **overrides) -> TrainConfig:
    """Flat keys as in YAML: TRL's arguments (learning_rate, max_steps, ...) included."""
    values = dict(data=data, out=str(out), learning_rate=1e-2, warmup_steps=0.0, lora_r=8,
                  lora_alpha=16, lora_dropout=0.0, per_device_train_batch_size=4, max_steps=4)
    return build_config(TrainConfig, {**values, **overrides})


def completion_loss(model, rows) -> float:
    """Mean cross-entropy over every completion token, one row at a time (no padding)."""
    losses = []
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["prompt_ids"] + row["completion_ids"]])
            logits = model(input_ids=ids).logits[0, :-1]
            start = len(row["prompt_ids"]) - 1
            losses.append(F.cross_entropy(logits[start:], ids[0, start + 1:], reduction="none"))
    return torch.cat(losses).mean().item()


def test_training_lowers_loss_and_saved_adapter_reloads(tmp_path):
    tokenizer = make_tokenizer()
    model = tiny(tokenizer)
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    rows = [make_row(tokenizer, i) for i in range(16)]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    before = completion_loss(model, rows)

    config = fast_config(data, tmp_path / "adapter", max_steps=24, model=str(base_dir))
    summary = train(config, model=model, tokenizer=tokenizer)
    model.eval()
    after = completion_loss(model, rows)
    assert after < 0.5 * before, (before, after)
    assert summary["steps"] == 24
    assert summary["train_loss_last"] < summary["train_loss_first"]
    # 24 steps x 4 rows = 6 epochs of 16 rows; every completion token carries a label.
    assert summary["loss_tokens_trained"] == 6 * sum(len(r["completion_ids"]) for r in rows)
    assert summary["tokens_trained"] == 6 * sum(len(r["prompt_ids"] + r["completion_ids"])
                                                for r in rows)

    reloaded, _ = load_trained(str(base_dir), tmp_path / "adapter")
    ids = torch.tensor([rows[0]["prompt_ids"] + rows[0]["completion_ids"]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model(input_ids=ids).logits,
                              atol=1e-5)
        base_again = AutoModelForCausalLM.from_pretrained(base_dir)
        assert not torch.allclose(base_again(input_ids=ids).logits, model(input_ids=ids).logits,
                                  atol=1e-3), "the adapter must change the model"


def test_labels_are_the_exact_ids_with_prompt_and_masked_tokens_excluded(tmp_path):
    tokenizer = make_tokenizer()
    n = len(encode(tokenizer, PATTERN)) + 1
    masks = [[1] * n, [0, 1] * (n // 2) + [1] * (n % 2), [1] * (n - 3) + [0, 0, 0], None]
    rows = [make_row(tokenizer, i, loss_mask=m) for i, m in enumerate(masks)]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    config = fast_config(data, tmp_path / "out")
    dataset, stats = build_dataset(config.data, max_length=config.max_length)
    trainer = build_trainer(config, tiny(tokenizer), tokenizer, dataset)

    prepared = trainer.train_dataset
    for row, example in zip(rows, prepared, strict=True):
        mask = row.get("loss_mask") or [1] * n
        ids = row["prompt_ids"] + row["completion_ids"]
        assert example["input_ids"] == ids
        assert example["labels"] == ([-100] * len(row["prompt_ids"])
                                     + [t if m else -100
                                        for t, m in zip(row["completion_ids"], mask, strict=True)])
    assert stats.loss_tokens == sum(sum(r.get("loss_mask") or [1] * n) for r in rows)

    # The loss the trainer optimises = mean CE over the unmasked completion tokens only.
    model = trainer.model.eval()
    batch = trainer.data_collator([prepared[i] for i in range(len(rows))])
    trainer_loss = trainer.compute_loss(model, dict(batch)).item()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
    kept, everything = [], []
    for b, row in enumerate(rows):
        mask = row.get("loss_mask") or [1] * n
        p = len(row["prompt_ids"])
        for k, (token, bit) in enumerate(zip(row["completion_ids"], mask, strict=True)):
            ce = F.cross_entropy(logits[b, p + k - 1], torch.tensor(token)).item()
            everything.append(ce)
            if bit:
                kept.append(ce)
    assert trainer_loss == pytest.approx(sum(kept) / len(kept), rel=1e-5)
    assert abs(trainer_loss - sum(everything) / len(everything)) > 1e-3, "mask had no effect"


def test_truncation_keeps_the_start_and_drops_rows_without_loss_tokens(tmp_path):
    tokenizer = make_tokenizer()
    row = make_row(tokenizer, 0)
    p = len(row["prompt_ids"])
    all_masked = make_row(tokenizer, 1, loss_mask=[0] * len(row["completion_ids"]))
    data = write_rows(tmp_path / "rows.jsonl", [row, all_masked])
    dataset, stats = build_dataset([data], max_length=p + 3)
    assert dataset["input_ids"] == [(row["prompt_ids"] + row["completion_ids"])[:p + 3]]
    assert dataset["completion_mask"] == [[0] * p + [1, 1, 1]]
    assert (stats.used, stats.truncated, dict(stats.skipped)) == (1, 1, {"no_loss_tokens": 1})
    with pytest.raises(DasdError, match="no loss tokens"):
        build_dataset([data], max_length=p)


def test_only_correct_and_length_filters(tmp_path):
    tokenizer = make_tokenizer()
    rows = [make_row(tokenizer, 0), make_row(tokenizer, 1, correct=False),
            make_row(tokenizer, 2, finish_reason="length"),
            make_row(tokenizer, 3, correct=False, finish_reason="length")]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    _, stats = build_dataset([data])
    assert (stats.read, stats.used, dict(stats.skipped)) == (4, 2, {"not_correct": 2})
    _, stats = build_dataset([data], drop_length_capped=True)
    assert (stats.used, dict(stats.skipped)) == (1, {"not_correct": 2, "length_capped": 1})
    _, stats = build_dataset([data, data], only_correct=False)
    assert (stats.read, stats.used) == (8, 8)


def test_no_usable_rows_is_a_one_line_error_before_any_model_loads(tmp_path):
    tokenizer = make_tokenizer()
    rows = [make_row(tokenizer, i, correct=False) for i in range(3)]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    config = TrainConfig(data=data, out=str(tmp_path / "out"), model="no/such-model")
    with pytest.raises(DasdError, match=r"3 read, 3 not correct \(only_correct=true\)") as err:
        train(config)
    assert "\n" not in str(err.value)


def test_bad_mask_and_rows_without_ids_are_refused(tmp_path):
    tokenizer = make_tokenizer()
    bad = write_rows(tmp_path / "bad.jsonl", [make_row(tokenizer, 0, loss_mask=[1, 0])])
    with pytest.raises(DasdError, match="loss_mask must hold one 0/1 per completion token"):
        build_dataset([bad])
    row = make_row(tokenizer, 0)
    del row["completion_ids"]
    missing = write_rows(tmp_path / "missing.jsonl", [row])
    with pytest.raises(DasdError, match="lacks completion_ids"):
        build_dataset([missing])


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": -1e-5}, "learning_rate must be > 0"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"warmup_steps": -0.1}, "warmup_steps >= 0"),
    ({"warmup_ratio": 0.2}, "older dasd: write TRL's `warmup_steps`"),
    ({"lr_scheduler_type": "bogus"}, "TRL's SFTConfig refused these arguments: bogus"),
    ({"save_stepz": 5}, "did you mean 'save_steps'"),
    ({"max_steps": 0}, "max_steps must be >= 1, or -1"),
    ({"num_train_epochs": 0.0}, "num_train_epochs must be > 0"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1"),
    ({"lora_r": 0}, "lora_r must be >= 1"),
    ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
    ({"max_length": 0}, "max_length must be >= 1"),
    ({"dtype": "fp8"}, "dtype must be one of"),
    ({"lora_target_modules": " , "}, "lora_target_modules is empty"),
])
def test_bad_config_values_are_refused(overrides, message):
    with pytest.raises(DasdError, match=message):
        build_config(TrainConfig, {"data": "rows.jsonl", **overrides})


def test_missing_inputs_and_existing_adapter_are_refused(tmp_path):
    with pytest.raises(DasdError, match="data file not found"):
        train(TrainConfig(data=str(tmp_path / "nope.jsonl")))
    with pytest.raises(DasdError, match="data is required"):
        train(TrainConfig())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "adapter_model.safetensors").write_bytes(b"")
    data = write_rows(tmp_path / "rows.jsonl", [make_row(make_tokenizer(), 0)])
    with pytest.raises(DasdError, match="--overwrite"):
        train(TrainConfig(data=data, out=str(tmp_path / "out")))


def test_defaults_follow_the_paper_and_out_follows_the_data():
    config = TrainConfig(data="runs/gsm8k/generate/dasd.jsonl")
    assert (config.trainer["learning_rate"], config.trainer["warmup_steps"],
            config.lora_target_modules) == (2e-5, 0.2, "all-linear")
    assert (config.lora_r, config.lora_alpha, config.only_correct) == (16, 32, True)
    assert config.data == ["runs/gsm8k/generate/dasd.jsonl"]
    assert config.out == "runs/gsm8k/train/dasd"
    assert TrainConfig(data="runs/arith/sd.jsonl").out == "runs/arith/train/sd"
    assert TrainConfig(lora_target_modules="q_proj, v_proj").target_modules() == [
        "q_proj", "v_proj"]


def test_cpu_trainer_settings_and_a_fresh_lora_config_per_trainer(tmp_path):
    tokenizer = make_tokenizer()
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(4)])
    config = fast_config(data, tmp_path / "out", device="cpu")
    dataset, _ = build_dataset(config.data)
    first = build_trainer(config, tiny(tokenizer), tokenizer, dataset)
    second = build_trainer(config, tiny(tokenizer, seed=1), tokenizer, dataset)
    for trainer in (first, second):
        assert not trainer.args.bf16 and not trainer.args.fp16
        assert not trainer.args.gradient_checkpointing
        assert trainer.args.report_to == [] or trainer.args.report_to == ["none"]
        targets = trainer.model.peft_config["default"].target_modules  # all linear but lm_head
        assert {name.rsplit(".", 1)[-1] for name in targets} == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert first.model.peft_config["default"] is not second.model.peft_config["default"]


def test_model_loaded_from_a_directory_trains_saves_and_merges(tmp_path):
    tokenizer = make_tokenizer()
    base_dir = tmp_path / "base"
    tiny(tokenizer).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(6)])
    out = tmp_path / "out"
    summary = train(fast_config(data, out, model=str(base_dir), max_steps=2, merge=True,
                                logging_steps=1))

    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                 "config.yaml", "train_log.jsonl", "train_summary.json", "merged/config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "train_summary.json").read_text()) == summary
    assert summary["rows"]["used"] == 6 and summary["merged"] == str(out / "merged")
    assert 0 < summary["trainable_params"] < summary["total_params"]
    log_rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_rows if "loss" in r] == [1, 2]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"] == str(base_dir) and resolved["trainer"]["max_steps"] == 2

    with_adapter, _ = load_trained(str(base_dir), out)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        assert torch.allclose(with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits,
                              atol=1e-5)


def test_trl_arguments_pass_through_under_their_own_names(tmp_path):
    tokenizer = make_tokenizer()
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(4)])
    config = fast_config(data, tmp_path / "out", device="cpu", lr_scheduler_type="cosine",
                         weight_decay="0.01", save_strategy="no", report_to="none")
    dataset, _ = build_dataset(config.data)
    args = build_trainer(config, tiny(tokenizer), tokenizer, dataset).args
    assert (args.lr_scheduler_type, args.weight_decay, args.save_strategy) == (
        "cosine", 0.01, "no")


class StopAt:
    """A trainer callback that kills training (KeyboardInterrupt) after `step`."""

    def __init__(self, step: int) -> None:
        from transformers import TrainerCallback

        stop_step = step

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == stop_step:
                    raise KeyboardInterrupt

        self.callback = Callback()


def test_killed_training_resumes_from_its_checkpoint_to_the_same_adapter(tmp_path,
                                                                         monkeypatch):
    from safetensors.torch import load_file

    import dasd.training.sft as sft

    tokenizer = make_tokenizer()
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(8)])

    def config(out):
        return fast_config(data, tmp_path / out, device="cpu", max_steps=4, save_steps=2,
                           per_device_train_batch_size=2, lora_dropout=0.0)

    train(config("whole"), tiny(tokenizer), tokenizer)
    real_build = sft.build_trainer

    def build_and_kill(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        trainer.add_callback(StopAt(3).callback)
        return trainer

    monkeypatch.setattr(sft, "build_trainer", build_and_kill)
    with pytest.raises(KeyboardInterrupt):
        train(config("cut"), tiny(tokenizer), tokenizer)
    monkeypatch.setattr(sft, "build_trainer", real_build)
    assert (tmp_path / "cut" / "checkpoint-2").is_dir()
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()
    summary = train(config("cut"), tiny(tokenizer), tokenizer)  # the same command again
    assert summary["steps"] == 4
    whole = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "cut" / "adapter_model.safetensors")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.allclose(whole[name], resumed[name], atol=1e-6), name
    with pytest.raises(DasdError, match="other settings .*trainer.learning_rate"):
        (tmp_path / "cut" / "adapter_model.safetensors").unlink()
        train(fast_config(data, tmp_path / "cut", device="cpu", max_steps=4, save_steps=2,
                          learning_rate=5e-3), tiny(tokenizer), tokenizer)


def test_several_samples_per_problem_keep_the_first_correct_or_all():
    from dasd.training.filters import RowFilter, apply_filter

    def sample(problem, k, correct):
        return {"id": problem if k == 1 else f"{problem}#s{k}", "correct": correct}

    rows = [("f", sample(p, k, ok)) for k, p, ok in [
        (1, "a", False), (1, "b", True), (1, "c", False),
        (2, "a", True), (2, "b", True), (2, "c", False),
        (3, "a", True), (3, "b", False), (3, "c", False)]]
    ids = lambda kept: [row["id"] for _, row in kept]  # noqa: E731

    kept, rejected, replaced = apply_filter(rows, RowFilter())
    assert ids(kept) == ["b", "a#s2"] and not replaced
    assert rejected == {"not_correct": 5, "extra_sample": 2}
    kept, rejected, _ = apply_filter(rows, RowFilter(per_problem="all"))
    assert ids(kept) == ["b", "a#s2", "b#s2", "a#s3"] and rejected == {"not_correct": 5}
    to_reference = lambda row: {**row, "completion": "the reference"}  # noqa: E731
    kept, rejected, replaced = apply_filter(rows, RowFilter(rejected="reference"), to_reference)
    assert ids(kept) == ["b", "c", "a#s2"] and kept[1][1]["completion"] == "the reference"
    assert replaced == {"not_correct": 1}
    assert rejected == {"not_correct": 2, "extra_sample": 4}
    # one sample per problem: every row is its own problem, as before
    single = [("f", sample(p, 1, ok)) for p, ok in [("a", True), ("b", False), ("c", True)]]
    assert ids(apply_filter(single, RowFilter())[0]) == ["a", "c"]
    with pytest.raises(DasdError, match="per_problem must be one of first, all"):
        RowFilter(per_problem="best")


def test_report_to_tensorboard_writes_event_files(tmp_path):
    tokenizer = make_tokenizer()
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(4)])
    train(fast_config(data, tmp_path / "out", device="cpu", max_steps=1,
                      report_to="tensorboard"), tiny(tokenizer), tokenizer)
    assert list(tmp_path.rglob("events.out.tfevents.*")), "no TensorBoard event file"
