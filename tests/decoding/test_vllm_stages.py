"""`dasd generate --engine vllm` and `dasd eval --backend vllm` on the fake `LLM`.

The fake answers like vLLM from a tiny transformers model (tests/test_backend_vllm.py), so
the rows written through vLLM can be compared with those of the transformers paths; a
stand-in `vllm` module lets the command line load it the way it loads vLLM. One test at
the end runs real vLLM, where vLLM and a GPU are present.
"""

import json
import sys
import types
from types import SimpleNamespace

import pytest
import torch

import dasd.decoding.vllm_model as vllm_model
from dasd.cli import main
from dasd.config import build_config
from dasd.decoding.generate import GenerateConfig, generate
from dasd.decoding.vllm_model import (
    VLLMModel,
    adapter_rank,
    answer_ids,
    max_lora_rank,
)
from dasd.errors import DasdError
from dasd.evaluation.evaluate import EvalConfig, evaluate
from dasd.records import read_jsonl
from tests.conftest import make_model, make_tokenizer
from tests.decoding.test_vllm_backend import FakeLLM, sampling_params


def lora_request(**kwargs):
    return SimpleNamespace(**kwargs)


def served(model) -> VLLMModel:
    return VLLMModel(FakeLLM(model), model.config, model.generation_config,
                     sampling_params=sampling_params, lora_request=lora_request)


def generate_rows(tmp_path, model, tokenizer, name, **overrides):
    settings = {"task": "arith", "limit": 5, "batch_size": 2, "max_new_tokens": 12,
                "out": str(tmp_path / f"{name}.jsonl"), **overrides}
    summary = generate(build_config(GenerateConfig, settings), model=model,
                       tokenizer=tokenizer)
    return summary, read_jsonl(settings["out"])


@pytest.mark.parametrize("method", ["dasd", "sd", "base"])
def test_generate_on_vllm_writes_the_step_engines_rows(tmp_path, tiny_model, tokenizer,
                                                      method, one_thread):
    _, expected = generate_rows(tmp_path, tiny_model, tokenizer, "step", method=method)
    summary, got = generate_rows(tmp_path, served(tiny_model), tokenizer, "vllm",
                                 method=method, engine="vllm")
    assert summary["samples"] == len(expected) == 5
    # whole-distribution statistics (base entropy, ranks past K) are vLLM's top-n only
    same = ("completion", "completion_ids", "finish_reason", "correct", "prompt_ids",
            "ref_prompt_ids", "extracted_answer")
    for g, e in zip(got, expected, strict=True):
        assert {k: g[k] for k in same} == {k: e[k] for k in same}
        assert g["tokens"]["category"] == e["tokens"]["category"]
        assert g["tokens"]["p_base"] == pytest.approx(e["tokens"]["p_base"], rel=1e-4)


def test_engine_vllm_refuses_a_sampling_rule():
    with pytest.raises(DasdError, match="draft-verify engine"):
        build_config(GenerateConfig, {"method": "hint", "engine": "vllm"})


def eval_rows(tmp_path, model, tokenizer, name, **overrides):
    settings = {"task": "arith", "split": "test", "limit": 5, "batch_size": 2,
                "max_new_tokens": 10, "out": str(tmp_path / f"{name}.jsonl"), **overrides}
    config = EvalConfig(**settings)
    return evaluate(config, model, tokenizer), read_jsonl(config.out)


def test_eval_on_vllm_greedy_equals_transformers(tmp_path, tiny_model, tokenizer, one_thread):
    summary, rows = eval_rows(tmp_path, served(tiny_model), tokenizer, "vllm", backend="vllm")
    expected_summary, expected = eval_rows(tmp_path, tiny_model, tokenizer, "hf")
    assert rows == expected and summary["accuracy"] == expected_summary["accuracy"]


def test_eval_on_vllm_sampled_avg_at_n_is_seeded_per_problem(tmp_path, tiny_model, tokenizer,
                                                            one_thread):
    sampled = {"backend": "vllm", "samples": 3, "temperature": 1.5, "sample_seed": 7}
    model = served(tiny_model)
    summary, rows = eval_rows(tmp_path, model, tokenizer, "a", **sampled)
    assert summary["samples"] == 3 and "avg@k" in summary and "pass@k" in summary
    assert all(len(row["samples"]) == 3 for row in rows)
    assert sorted(p.seed for p in model.llm.params) == [7, 8, 9, 10, 11]  # seed + problem
    assert all(p.n == 3 and p.top_k == -1 and p.repetition_penalty == 1.0
               for p in model.llm.params)
    _, again = eval_rows(tmp_path, served(tiny_model), tokenizer, "b", batch_size=3, **sampled)
    assert again == rows  # the batches do not change a problem's answers
    _, other = eval_rows(tmp_path, served(tiny_model), tokenizer, "c",
                         **{**sampled, "sample_seed": 8})
    assert [r["samples"] for r in other] != [r["samples"] for r in rows]


def test_answer_ids_end_like_the_transformers_path():
    def completion(ids, finish, stop=None):
        return SimpleNamespace(token_ids=ids, finish_reason=finish, stop_reason=stop)

    assert answer_ids(completion([5, 6, 2], "stop", 2), [2]) == ([5, 6, 2], "eos")
    assert answer_ids(completion([5, 6], "stop", 2), [2]) == ([5, 6, 2], "eos")
    assert answer_ids(completion([5, 6], "stop", None), [2, 3]) == ([5, 6, 2], "eos")
    assert answer_ids(completion([5, 6], "length"), [2]) == ([5, 6], "length")


def test_max_lora_rank_is_the_adapters_rank_rounded_up_to_vllms(tmp_path):
    assert [max_lora_rank(r) for r in (1, 8, 9, 16, 64, 300, 512)] == \
        [8, 8, 16, 16, 64, 320, 512]
    with pytest.raises(DasdError, match="over vLLM's largest"):
        max_lora_rank(1024)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    assert adapter_rank(tmp_path) == 4
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(DasdError, match="names no LoRA rank"):
        adapter_rank(tmp_path)


# ---- the command line, with a stand-in `vllm` module --------------------------------

@pytest.fixture
def saved_model(tmp_path):
    """A tiny model, its tokenizer and a LoRA adapter (r 4) on disk, float64."""
    from peft import LoraConfig, get_peft_model

    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=4, eos_id=tokenizer.eos_token_id, eos_bias=0.3)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    lora = LoraConfig(r=4, lora_alpha=32, init_lora_weights=False,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    get_peft_model(make_model(len(tokenizer), seed=4, eos_id=tokenizer.eos_token_id,
                              eos_bias=0.3), lora).save_pretrained(tmp_path / "adapter")
    return tmp_path / "model", tmp_path / "adapter"


@pytest.fixture
def fake_vllm(monkeypatch):
    """`import vllm` gives a module whose `LLM` is the fake, loading the model from its
    path; returns (keyword arguments, fake) of every `LLM` built."""
    from transformers import AutoModelForCausalLM

    built = []

    def llm(model, **kwargs):
        dtype = getattr(torch, kwargs["dtype"])
        fake = FakeLLM(AutoModelForCausalLM.from_pretrained(model, dtype=dtype).eval())
        built.append((kwargs, fake))
        return fake

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = llm, sampling_params
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = lora_request
    for name, value in (("vllm", module), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, value)
    monkeypatch.setattr(vllm_model, "_LOADED", [])
    return built


def cli(*argv):
    assert main(list(map(str, argv))) == 0


def test_eval_backend_vllm_from_the_command_line_with_an_adapter(tmp_path, saved_model,
                                                                fake_vllm, one_thread):
    model_dir, adapter = saved_model
    common = ["--model", model_dir, "--adapter", adapter, "--limit", 4, "--max-new-tokens", 10,
              "--dtype", "float64", "--device", "cpu"]
    cli("eval", *common, "--backend", "vllm", "--vllm.gpu-memory-utilization", 0.4,
        "--out", tmp_path / "vllm.jsonl")
    cli("eval", *common, "--out", tmp_path / "hf.jsonl")
    assert read_jsonl(tmp_path / "vllm.jsonl") == read_jsonl(tmp_path / "hf.jsonl")
    ((kwargs, llm),) = fake_vllm
    assert {r.lora_path for r in llm.lora_requests} == {str(adapter)}
    assert kwargs["enable_lora"] is True and kwargs["max_lora_rank"] == 8  # r 4, rounded up
    assert kwargs["gpu_memory_utilization"] == 0.4 and kwargs["enable_prefix_caching"]


def test_generate_engine_vllm_from_the_command_line(tmp_path, saved_model, fake_vllm,
                                                    one_thread):
    model_dir, _ = saved_model
    common = ["generate", "--model", model_dir, "--limit", 3, "--max-new-tokens", 10,
              "--dtype", "float64", "--device", "cpu", "--top-k", 9, "--tau", 0.04]
    cli(*common, "--engine", "vllm", "--out", tmp_path / "vllm.jsonl")
    cli(*common, "--out", tmp_path / "step.jsonl")
    got, expected = read_jsonl(tmp_path / "vllm.jsonl"), read_jsonl(tmp_path / "step.jsonl")
    assert [r["completion_ids"] for r in got] == [r["completion_ids"] for r in expected]
    ((kwargs, llm),) = fake_vllm
    # tau 0.04: base scoring asks for the top floor(1/tau) = 25, over vLLM's default 20
    assert kwargs["max_logprobs"] == 25 and "enable_lora" not in kwargs
    asked = {(getattr(p, "logprobs", None), getattr(p, "prompt_logprobs", None))
             for p in llm.params}
    assert asked == {(9, None), (None, 25)}


@pytest.mark.parametrize("argv", [
    ["generate", "--engine", "vllm"],
    ["eval", "--backend", "vllm"],
    ["train", "--method", "opsd", "--use-vllm", "true", "--vllm-mode", "colocate"],
])
def test_without_vllm_each_command_is_one_line_naming_the_install(tmp_path, capsys,
                                                                  monkeypatch, argv):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    monkeypatch.chdir(tmp_path)
    code = main([*argv, "--limit", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "pip install vllm" in err and "environment of its own" in err
    assert not list(tmp_path.iterdir())  # nothing written


# ---- real vLLM ------------------------------------------------------------------------

def _real_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def _lockstep_supported() -> bool:
    import vllm

    from dasd.decoding.vllm_lockstep_engine import check_vllm_version
    from dasd.errors import DasdError

    try:
        check_vllm_version(vllm.__version__)
    except DasdError:
        return False
    return True


@pytest.mark.skipif(not _real_vllm(), reason="needs vLLM and a GPU")
def test_real_vllm_generates_and_evaluates(tmp_path, one_thread):
    """A tiny Llama (head size 64, which vLLM's kernels take) in float32 on real vLLM:
    DASD through the draft-and-verify rounds, and in lockstep where this vLLM has the v1
    logits processors, gives the step engine's tokens on most problems (GPU kernels may
    break near-ties differently), and greedy eval runs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(12)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    common = {"model": str(tmp_path / "model"), "dtype": "float32", "task": "arith",
              "limit": 8, "max_new_tokens": 24, "vllm": {"gpu_memory_utilization": 0.3}}
    vllm_summary = generate(build_config(GenerateConfig, {
        **common, "engine": "vllm", "out": str(tmp_path / "vllm.jsonl")}))
    generate(build_config(GenerateConfig, {**common, "out": str(tmp_path / "step.jsonl")}))
    got, expected = read_jsonl(tmp_path / "vllm.jsonl"), read_jsonl(tmp_path / "step.jsonl")
    same = sum(g["completion_ids"] == e["completion_ids"]
               for g, e in zip(got, expected, strict=True))
    assert vllm_summary["samples"] == 8 and same >= 6, same
    if _lockstep_supported():  # both contexts as two requests kept in step by the processor
        generate(build_config(GenerateConfig, {
            **common, "engine": "vllm", "vllm": {**common["vllm"], "path": "lockstep"},
            "out": str(tmp_path / "lockstep.jsonl")}))
        lockstep = read_jsonl(tmp_path / "lockstep.jsonl")
        same = sum(g["completion_ids"] == e["completion_ids"]
                   for g, e in zip(lockstep, expected, strict=True))
        assert same >= 6, same
    summary = evaluate(EvalConfig(**{k: v for k, v in common.items() if k != "vllm"},
                                  split="test", backend="vllm",
                                  out=str(tmp_path / "eval.jsonl")))
    assert summary["n"] == 8
