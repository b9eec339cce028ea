"""`dasd export`: generated rows -> a dataset `datasets` loads and TRL's SFTTrainer trains
on; the card; adapters with their base model's hub id; the Hub only when asked (never
reached here: offline, or a stand-in API)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

import dasd.export.hub as hub
from dasd.cli import main
from dasd.config import build_config
from dasd.decoding.generate import GenerateConfig, generate
from dasd.errors import DasdError
from dasd.export import ExportConfig, export
from dasd.records import read_jsonl
from dasd.training.adapters import BASE_MODEL_NOTE, base_model_record, record_base_model
from tests.conftest import make_model, make_tokenizer


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=3, eos_id=tokenizer.eos_token_id, eos_bias=0.4)
    return model, tokenizer


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny):
    """A run folder as `dasd run` leaves it: config.yaml, results.md and two methods'
    generated rows with their sidecars (tiny model, 6 arith problems each)."""
    model, tokenizer = tiny
    root = tmp_path_factory.mktemp("run")
    (root / "config.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "model": "smollm2-135m", "task": "arith",
        "problems": {"test": {"n": 6, "ids": ["a", "b"]}}}))
    (root / "results.md").write_text("| method | accuracy |\n|---|---|\n| dasd | 0.5 |\n")
    for method in ("dasd", "sd"):
        generate(build_config(GenerateConfig, {
            "task": "arith", "limit": 6, "batch_size": 3, "max_new_tokens": 12,
            "method": method, "chat_template_kwargs": {"note": "x"},
            "out": str(root / "generate" / f"{method}.jsonl")}), model=model,
            tokenizer=tokenizer)
    return root


def load(out, file_format="parquet"):
    from datasets import load_dataset, load_from_disk

    if file_format == "disk":
        return load_from_disk(str(out))
    cache = Path(out).parent / "datasets-cache"  # not the user's ~/.cache
    return load_dataset(str(out), split="train", cache_dir=str(cache))


def exported(tmp_path, source, **settings):
    config = build_config(ExportConfig, {"path": str(source), "out": str(tmp_path / "out"),
                                         "only_correct": False, **settings})
    return export(config), config.out


@pytest.mark.parametrize("file_format", ["parquet", "jsonl", "disk"])
def test_standard_rows_load_back_in_every_format(tmp_path, run_folder, file_format):
    summary, out = exported(tmp_path, run_folder, format=file_format)
    rows = {m: read_jsonl(run_folder / "generate" / f"{m}.jsonl") for m in ("dasd", "sd")}
    dataset = load(out, file_format)
    assert summary["rows"] == len(dataset) == 12 and summary["per_method"] == {"dasd": 6,
                                                                               "sd": 6}
    expected = [(m, r["id"], r["prompt"], r["completion"], r["correct"])
                for m in ("dasd", "sd") for r in rows[m]]
    assert [(r["method"], r["id"], r["prompt"], r["completion"], r["correct"])
            for r in dataset] == expected


def test_filters_by_method_correctness_and_finish_reason(tmp_path, run_folder):
    rows = read_jsonl(run_folder / "generate" / "dasd.jsonl")
    rows[0]["correct"] = True  # the tiny model is never right: make one row correct
    (tmp_path / "one.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary, out = exported(tmp_path, tmp_path / "one.jsonl", only_correct=True)
    assert summary["rows"] == 1 and summary["dropped"] == {"not correct": 5}
    summary, _ = exported(tmp_path, run_folder, methods=["sd"], finish_reason=["length"],
                          overwrite=True)
    sd_capped = sum(r["finish_reason"] == "length"
                    for r in read_jsonl(run_folder / "generate" / "sd.jsonl"))
    assert summary["rows"] == sd_capped and summary["per_method"] == {"sd": sd_capped}
    with pytest.raises(DasdError, match="has no rows of nope: its methods are dasd, sd"):
        exported(tmp_path, run_folder, methods=["nope"], overwrite=True)
    with pytest.raises(DasdError, match="no rows left to export from 6 read"):
        exported(tmp_path, tmp_path / "one.jsonl", only_correct=True, finish_reason=["eos"],
                 methods=["sd"], overwrite=True)


def test_conversational_prompts_render_to_the_generated_prompt(tmp_path, run_folder, tiny):
    _, tokenizer = tiny
    _, out = exported(tmp_path, run_folder, style="conversational", methods=["dasd"])
    dataset = load(out)
    rows = read_jsonl(run_folder / "generate" / "dasd.jsonl")
    for example, row in zip(dataset, rows, strict=True):
        assert example["completion"] == [{"role": "assistant", "content": row["completion"]}]
        assert example["chat_template_kwargs"] == {"note": "x"}
        rendered = tokenizer.apply_chat_template(example["prompt"], tokenize=False,
                                                 add_generation_prompt=True)
        assert rendered == row["prompt"]


def test_ids_are_the_generated_tokens(tmp_path, run_folder):
    _, out = exported(tmp_path, run_folder, style="ids", format="disk")
    dataset = load(out, "disk")
    rows = read_jsonl(run_folder / "generate" / "dasd.jsonl") + \
        read_jsonl(run_folder / "generate" / "sd.jsonl")
    for example, row in zip(dataset, rows, strict=True):
        assert example["input_ids"] == row["prompt_ids"] + row["completion_ids"]
        assert example["completion_mask"] == [0] * len(row["prompt_ids"]) + \
            [1] * len(row["completion_ids"])


@pytest.mark.parametrize("style", ["standard", "conversational", "ids"])
def test_sft_trainer_trains_one_step_on_the_export(tmp_path, run_folder, tiny, style,
                                                   one_thread):
    """The export as a colleague would use it: `load_dataset`, then TRL's SFTTrainer."""
    from trl import SFTConfig, SFTTrainer

    _, tokenizer = tiny
    _, out = exported(tmp_path, run_folder, style=style)
    dataset = load(out)
    model = make_model(len(tokenizer), seed=5, eos_id=tokenizer.eos_token_id).float()
    before = [p.detach().clone() for p in model.parameters()]
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1,
                     per_device_train_batch_size=4, learning_rate=1e-2, report_to="none",
                     use_cpu=True, bf16=False, save_strategy="no", logging_steps=1,
                     activation_checkpointing=False, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert trainer.state.global_step == 1 and losses and torch.isfinite(torch.tensor(losses)).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_card_lists_settings_summary_and_the_models_hub_id(tmp_path, run_folder):
    _, out = exported(tmp_path, run_folder)
    card = (tmp_path / "out" / "README.md").read_text()
    head = yaml.safe_load(card.split("---")[1])
    assert "dasd" in head["tags"] and "configs" not in head  # see card.py: found by name
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in card and "Q4_1" in card
    assert "| dasd | 6 |" in card and "| sd | 6 |" in card  # generate's summaries
    assert "## Results of the run" in card and "| dasd | 0.5 |" in card
    assert "name: tiny" in card and "ids:" not in card  # settings, without id lists
    assert "12 of 12 read" in card


def test_an_existing_folder_is_replaced_only_when_it_is_an_export(tmp_path, run_folder):
    exported(tmp_path, run_folder)
    with pytest.raises(DasdError, match="holds an earlier export: pass --overwrite"):
        exported(tmp_path, run_folder)
    exported(tmp_path, run_folder, overwrite=True, format="jsonl")
    assert (tmp_path / "out" / "data" / "train.jsonl").is_file()
    assert not (tmp_path / "out" / "data" / "train-00000-of-00001.parquet").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DasdError, match="holds files dasd did not export"):
        export(build_config(ExportConfig, {"path": str(run_folder), "only_correct": False,
                                           "out": str(tmp_path / "mine"), "overwrite": True}))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_push_offline_is_one_line_and_keeps_the_export(tmp_path, run_folder, capsys):
    code = main(["export", str(run_folder), "--out", str(tmp_path / "out"), "--only-correct",
                 "false", "--push-to-hub", "someone/tiny-dasd"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "HF_HUB_OFFLINE" in err and "is complete" in err
    assert (tmp_path / "out" / "README.md").is_file()


def test_push_uploads_the_folder_when_online(tmp_path, run_folder, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo, **kwargs):
            calls.append(("create", repo, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs["repo_id"], kwargs))

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(hub, "hub_api", FakeApi)
    summary, out = exported(tmp_path, run_folder, push_to_hub="someone/tiny-dasd",
                            private=True)
    assert summary["hub_url"] == "https://huggingface.co/datasets/someone/tiny-dasd"
    (_, repo, create), (_, _, upload) = calls
    assert repo == "someone/tiny-dasd" and create["repo_type"] == "dataset" and create["private"]
    assert upload["folder_path"] == out and upload["repo_type"] == "dataset"


def test_a_bad_repo_id_is_refused_before_anything_runs():
    with pytest.raises(DasdError, match="user/name"):
        ExportConfig(path="x", out="y", push_to_hub="no-slash")


def test_adapters_record_the_embedded_models_hub_id(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"r": 8, "base_model_name_or_path": "/root/.cache/dasd/models/SmolLM2-x"}))
    record = record_base_model(tmp_path, "smollm2-135m")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config["r"] == 8
    note = json.loads((tmp_path / BASE_MODEL_NOTE).read_text())
    assert note == record and note["quantisation"] == "Q4_1" and "dequantised" in note["weights"]
    assert base_model_record("Qwen/Qwen3-4B")["hub_id"] == "Qwen/Qwen3-4B"
    assert base_model_record(str(tmp_path))["hub_id"] is None  # a local folder: unknown
    assert base_model_record("x/model.Q8_0.gguf")["quantisation"] == "Q8_0"


def test_a_trained_adapter_exports_as_a_model_folder(tmp_path, tiny, monkeypatch):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    adapter = tmp_path / "run" / "train" / "dasd"
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    get_peft_model(make_model(len(tokenizer), seed=3), lora).save_pretrained(adapter)
    record_base_model(adapter, "smollm2-135m")
    (adapter / "config.yaml").write_text(yaml.safe_dump({"model": "smollm2-135m",
                                                         "method": "sft"}))
    (adapter / "train_summary.json").write_text(json.dumps(
        {"steps": 4, "train_loss_first": 1.5, "train_loss_last": 0.5}))
    (adapter / "checkpoint-2").mkdir()
    (tmp_path / "run" / "eval").mkdir()
    (tmp_path / "run" / "eval" / "dasd.summary.json").write_text(json.dumps(
        {"accuracy": 0.25, "n": 8, "task": "arith", "split": "test"}))
    summary, out = exported(tmp_path, adapter)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", BASE_MODEL_NOTE,
            "README.md"} <= files and "checkpoint-2" not in files
    card = (tmp_path / "out" / "README.md").read_text()
    head = yaml.safe_load(card.split("---")[1])
    assert head["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert head["library_name"] == "peft" and "Q4_1" in card
    assert "accuracy 0.250 on 8 problems" in card and "loss 1.5000 -> 0.5000" in card
    assert summary["adapter"]


def test_export_command_writes_and_prints(tmp_path, run_folder, capsys):
    assert main(["export", str(run_folder), "--out", str(tmp_path / "o"), "--style", "ids",
                 "--only-correct", "false", "--methods", "sd"]) == 0
    assert "6 of 6 rows (sd 6)" in capsys.readouterr().out
    assert len(load(tmp_path / "o")["input_ids"]) == 6


def test_adapter_note_for_a_hub_model_keeps_its_id(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    record_base_model(tmp_path, "Qwen/Qwen3-1.7B")
    assert json.loads((tmp_path / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == "Qwen/Qwen3-1.7B"


def test_missing_source_is_one_line(tmp_path, capsys):
    code = main(["export", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "not found" in err and not (tmp_path / "o").exists()


def test_dasd_train_records_the_base_model_in_the_adapter(tmp_path, one_thread):
    """`dasd train` on the embedded model's name (the model itself passed in, tiny): the
    saved adapter names the hub id and says the weights came from the Q4_1 GGUF."""
    from dasd.training import train
    from tests.training.test_sft import fast_config, make_row, tiny, write_rows

    tokenizer = make_tokenizer()
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(4)])
    config = fast_config(data, tmp_path / "adapter", max_steps=1, model="smollm2-135m")
    train(config, model=tiny(tokenizer), tokenizer=tokenizer)
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    note = json.loads((tmp_path / "adapter" / BASE_MODEL_NOTE).read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert note["model"] == "smollm2-135m" and note["quantisation"] == "Q4_1"
