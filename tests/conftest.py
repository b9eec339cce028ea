"""Tiny random models and a byte-level chat tokenizer, built in code (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    """Bytes as tokens (256 ids) plus <|im_start|>, <|im_end|> (EOS) and <pad>."""
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",
                                        pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = chat_template
    tokenizer.padding_side = "left"
    return tokenizer


def make_model(vocab_size: int, seed: int = 0, eos_id: int | None = None, eos_bias: float = 0.0,
               sharpness: float = 12.0, layers: int = 2) -> LlamaForCausalLM:
    """A random Llama in float64 (so cached and uncached paths agree to the last bit).

    `sharpness` scales the output layer so next-token distributions are peaked like a
    trained model's (a flat random head would never pass tau); `eos_bias` makes EOS likely.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         pad_token_id=0, eos_token_id=eos_id if eos_id is not None else 1)
    model = LlamaForCausalLM(config).double().eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
        if eos_id is not None:
            model.lm_head.weight[eos_id] += eos_bias * model.model.norm.weight.sign()
    return model


QWEN3_TEMPLATE = (Path(__file__).parent / "fixtures" / "qwen3.jinja").read_text()


def make_qwen3_tokenizer() -> PreTrainedTokenizerFast:
    """The byte tokenizer with Qwen3's chat template and its thinking tokens (`<think>`,
    `</think>`: added tokens, not special ones, as Qwen3 has them)."""
    tokenizer = make_tokenizer(QWEN3_TEMPLATE)
    tokenizer.add_tokens(["<think>", "</think>"])
    return tokenizer


def make_qwen3_model(vocab_size: int, eos_id: int, seed: int = 0) -> Qwen3ForCausalLM:
    """A random Qwen3 of the real architecture (q/k norms, head_dim apart from the hidden
    size), tiny and in float32, with EOS made likely so rollouts end."""
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, max_position_embeddings=2048, tie_word_embeddings=False,
                         pad_token_id=0, eos_token_id=eos_id)
    model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(12.0)
        model.lm_head.weight[eos_id] += 0.3 * model.model.norm.weight.sign()
    return model


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, and do not stall on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def tiny_model(tokenizer) -> LlamaForCausalLM:
    return make_model(len(tokenizer), eos_id=tokenizer.eos_token_id, eos_bias=0.5)


TASK_MODULES_WITH_HUB = ("base", "math")


def write_jsonl(path, rows: list[dict]):
    """Write `rows` as UTF-8 JSON lines to `path` and return it."""
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any task tries the hub."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was contacted although a local path was given")

    for module in TASK_MODULES_WITH_HUB:
        monkeypatch.setattr(f"dasd.tasks.{module}.load_hub_rows", refuse)


def float32_approx(expected):
    """`expected` at float32 precision. dasd's per-token statistics are float32 (the
    log-softmax runs on float32 logits, and transformers computes RoPE's cos/sin in float32
    whatever the model's dtype), and float32 kernels round differently on AVX2, AVX-512 and
    ARM: two exact computations of the same value agree to a few float32 ulps, not bit for
    bit. A log-probability near -100 carries an absolute error of ~1e-5 (its ulp is 7.6e-6),
    hence the relative bound on the probability."""
    return pytest.approx(expected, rel=1e-5, abs=1e-9)
