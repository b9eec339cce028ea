"""Model specs: local directories, GGUF files, hub ids, and their errors."""

import pytest
import torch

from dasd.errors import DasdError
from dasd.models import load_model, pick_dtype, resolve_model
from tests.conftest import make_model, make_tokenizer


@pytest.fixture
def model_dir(tmp_path):
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), eos_id=tokenizer.eos_token_id).float()
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_local_directory_loads_in_eval_mode_with_left_padding(model_dir):
    model, tokenizer = load_model(str(model_dir), dtype="float32", device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None


def test_hub_ids_pass_through_unchanged():
    assert resolve_model("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"


def test_unreachable_hub_model_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DasdError, match="could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


@pytest.mark.parametrize("spec, message", [
    ("smollm3", "unknown model 'smollm3'"),
    ("missing.gguf", "model file not found: missing.gguf"),
])
def test_bad_specs_name_the_fix(spec, message):
    with pytest.raises(DasdError, match=message):
        resolve_model(spec)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(DasdError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_dtype_defaults_follow_the_device():
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(DasdError, match="unknown dtype"):
        pick_dtype("fp33", torch.device("cpu"))
