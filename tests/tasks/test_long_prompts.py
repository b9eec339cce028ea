"""A prompt longer than the model's context (minus the new tokens) is refused before
anything is decoded or written, or, with skip_long_prompts, left out and named."""

import pytest

from dasd.config import build_config
from dasd.decoding.generate import GenerateConfig, generate
from dasd.errors import DasdError
from dasd.evaluation.evaluate import EvalConfig, evaluate
from dasd.tasks import load_split
from dasd.tasks.prompts import encode, render_prompts


def context_between_prompts(model, tokenizer, config, new_tokens, which):
    """Shrink the model's context so that some prompts fit and some do not."""
    _, template, examples = load_split(config)
    lengths = sorted(max(len(encode(tokenizer, p)) for p in
                         render_prompts(tokenizer, template, e)[which]) for e in examples)
    assert lengths[0] < lengths[-1], "the test needs prompts of different lengths"
    model.config.max_position_embeddings = lengths[len(lengths) // 2] + new_tokens
    return sum(n > lengths[len(lengths) // 2] for n in lengths)


def test_generate_refuses_then_skips_long_prompts(tmp_path, tiny_model, tokenizer):
    values = {"task": "arith", "limit": 6, "batch_size": 3, "max_new_tokens": 5,
              "out": str(tmp_path / "g.jsonl")}
    config = build_config(GenerateConfig, values)
    too_long = context_between_prompts(tiny_model, tokenizer, config, 5, slice(0, 2))
    with pytest.raises(DasdError, match=r"over the \d+ the model's context leaves .*"
                                        "--skip-long-prompts"):
        generate(config, model=tiny_model, tokenizer=tokenizer)
    assert not list(tmp_path.iterdir())  # nothing written
    summary = generate(build_config(GenerateConfig, {**values, "skip_long_prompts": True}),
                       model=tiny_model, tokenizer=tokenizer)
    assert len(summary["skipped_long_prompts"]) == too_long
    assert summary["samples"] == 6 - too_long


def test_eval_refuses_then_skips_long_prompts(tmp_path, tiny_model, tokenizer):
    values = {"task": "arith", "split": "test", "limit": 6, "max_new_tokens": 5,
              "out": str(tmp_path / "e.jsonl")}
    config = build_config(EvalConfig, values)
    too_long = context_between_prompts(tiny_model, tokenizer, config, 5, slice(0, 1))
    with pytest.raises(DasdError, match="the prompt of arith-test"):
        evaluate(config, model=tiny_model, tokenizer=tokenizer)
    assert not list(tmp_path.iterdir())
    summary = evaluate(build_config(EvalConfig, {**values, "skip_long_prompts": True}),
                       model=tiny_model, tokenizer=tokenizer)
    assert len(summary["skipped_long_prompts"]) == too_long and summary["n"] == 6 - too_long


def test_on_policy_refuses_teacher_prompts_that_leave_no_room(tmp_path, tiny_model,
                                                              tokenizer):
    from dasd.training.onpolicy.config import OnPolicyConfig
    from dasd.training.onpolicy.trainer import build_dataset

    values = {"limit": 6, "max_completion_length": 5, "out": str(tmp_path / "o")}
    config = build_config(OnPolicyConfig, values).resolved()
    too_long = context_between_prompts(tiny_model, tokenizer, config, 5, slice(1, 2))
    with pytest.raises(DasdError, match="the teacher \\(reference\\) prompt of"):
        build_dataset(config, tokenizer, tiny_model)
    skipping = build_config(OnPolicyConfig, {**values, "skip_long_prompts": True}).resolved()
    assert len(build_dataset(skipping, tokenizer, tiny_model)) == 6 - too_long
