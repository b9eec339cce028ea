"""Thinking models: each context's chat-template arguments, one rule for the thinking block a
template leaves at the end of a prompt (generation, on-policy training, training rows,
answer checking), on a Qwen3-shaped tiny model with Qwen3's real chat template."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from dasd.config import build_config
from dasd.decoding.generate import GenerateConfig, generate
from dasd.errors import DasdError
from dasd.tasks import Example, get_task
from dasd.tasks.prompts import render_prompts
from dasd.tasks.thinking import answer_part, opens_thinking, thinking_prefix
from tests.conftest import make_qwen3_model, make_qwen3_tokenizer, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

EMPTY, OPEN = "<think>\n\n</think>\n\n", "<think>\n"
HEADER = "<|im_start|>assistant\n"
EXAMPLE = Example("x-1", "What is 2+2?", "2 + 2 = 4.\nThe answer is 4.", "4")
TEACHER_ON = {"base_chat_template_kwargs": {"enable_thinking": False},
              "reference_chat_template_kwargs": {"enable_thinking": True}}


def contexts(tokenizer=None, **settings) -> tuple[str, str]:
    return render_prompts(tokenizer or make_qwen3_tokenizer(), get_task("arith").prompts,
                          EXAMPLE, SimpleNamespace(**settings))


def test_each_context_renders_with_its_own_arguments():
    base, reference = contexts(**TEACHER_ON, thinking_block="own")
    assert base.endswith(HEADER + EMPTY) and reference.endswith(HEADER)
    base, reference = contexts(chat_template_kwargs={"enable_thinking": False},
                               reference_chat_template_kwargs={"enable_thinking": True},
                               thinking_block="own")
    assert base.endswith(HEADER + EMPTY) and reference.endswith(HEADER)  # over the shared one
    base, reference = contexts(chat_template_kwargs={"enable_thinking": False})
    assert base.endswith(EMPTY) and reference.endswith(EMPTY)


@pytest.mark.parametrize(("block", "ending"), [("shared", HEADER + EMPTY), ("own", HEADER),
                                               ("open", HEADER + OPEN)])
def test_the_reference_prompt_ends_as_thinking_block_says(block, ending):
    base, reference = contexts(**TEACHER_ON, thinking_block=block)
    assert base.endswith(HEADER + EMPTY) and reference.endswith(ending)
    assert "Reference solution" in reference and "Reference solution" not in base


def test_a_template_that_opens_thinking_is_shared_as_an_open_block():
    tokenizer = make_qwen3_tokenizer()
    tokenizer.chat_template += "{%- if add_generation_prompt and force %}<think>\n{% endif %}"
    base, reference = contexts(tokenizer, base_chat_template_kwargs={"force": True})
    assert base.endswith(HEADER + OPEN) and reference.endswith(HEADER + OPEN)
    assert opens_thinking(base) and not opens_thinking(contexts(tokenizer)[0])


def test_a_model_without_thinking_is_unchanged():
    tokenizer = make_tokenizer()
    plain = render_prompts(tokenizer, get_task("arith").prompts, EXAMPLE)
    for block in ("shared", "own"):
        assert contexts(tokenizer, thinking_block=block) == plain
    with pytest.raises(DasdError, match="thinking_block open needs a tokenizer with a <think>"):
        contexts(tokenizer, thinking_block="open")


def test_thinking_prefix_and_the_answer_part():
    assert thinking_prefix("x" + HEADER + EMPTY) == EMPTY
    assert thinking_prefix("x" + HEADER + OPEN) == OPEN
    assert thinking_prefix("x" + HEADER) == "" and thinking_prefix("<think>a</think>b") == ""
    assert answer_part("<think>The answer is 3.</think>\nThe answer is 4.") == "\nThe answer is 4."
    assert answer_part("so 3 then</think>The answer is 4.", open_block=True) == "The answer is 4."
    assert answer_part("The answer is 3. still thinking", open_block=True) == ""
    assert answer_part("The answer is 4.") == "The answer is 4."


def test_answers_are_read_after_the_thinking():
    from dasd.tasks.base import decode_and_check

    tokenizer = make_qwen3_tokenizer()
    text = ["<think>\nThe answer is 3.\n</think>\n\nThe answer is 4.", "The answer is 3. hm",
            "</think>The answer is 4."]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in text]
    task = get_task("arith")
    _, checks = decode_and_check(task, tokenizer, ids[:1], [EXAMPLE])
    assert checks[0].correct and checks[0].extracted == "4"
    _, checks = decode_and_check(task, tokenizer, ids[1:], [EXAMPLE] * 2, open_block=True)
    assert [c.correct for c in checks] == [False, True]


@pytest.mark.parametrize("block", ["shared", "own", "open"])
def test_generation_with_the_teacher_thinking_and_the_student_not(tmp_path, block):
    """DASD on a Qwen3-shaped model: the base prompt carries the empty block, the training
    row is that prompt plus the response, and the reference prompt ends as `block` says."""
    tokenizer = make_qwen3_tokenizer()
    model = make_qwen3_model(len(tokenizer), tokenizer.eos_token_id)
    config = build_config(GenerateConfig, {
        "model": "unused", "task": "arith", "limit": 3, "max_new_tokens": 8, "method": "dasd",
        "out": str(tmp_path / "dasd.jsonl"), "thinking_block": block, **TEACHER_ON})
    generate(config, model, tokenizer)
    rows = [json.loads(line) for line in (tmp_path / "dasd.jsonl").read_text().splitlines()]
    ending = {"shared": EMPTY, "own": "", "open": OPEN}[block]
    for row in rows:
        assert row["prompt"].endswith(HEADER + EMPTY)
        assert row["ref_prompt"].endswith(HEADER + ending)
        assert tokenizer.decode(row["prompt_ids"]) == row["prompt"]
        assert tokenizer.decode(row["ref_prompt_ids"]) == row["ref_prompt"]
        think = tokenizer.convert_tokens_to_ids("<think>")
        assert (think in row["ref_prompt_ids"][-6:]) == (block != "own")
    saved = yaml.safe_load((tmp_path / "dasd.config.yaml").read_text())
    assert saved["reference_chat_template_kwargs"] == {"enable_thinking": True}
    assert saved.get("thinking_block", "shared") == block


def test_the_default_settings_leave_resolved_configs_unchanged():
    """New settings at their defaults stay out of records, so older outputs still resume."""
    from dasd.config import outcome

    recorded = outcome(build_config(GenerateConfig, {"model": "m"}), "stage")
    assert not {"base_chat_template_kwargs", "reference_chat_template_kwargs",
                "thinking_block"} & set(json.loads(json.dumps(recorded, default=str)))


def test_bad_thinking_settings_are_one_line():
    with pytest.raises(DasdError, match="thinking_block"):
        build_config(GenerateConfig, {"thinking_block": "both"})
    with pytest.raises(DasdError, match="reference_chat_template_kwargs"):
        build_config(GenerateConfig, {"reference_chat_template_kwargs": "enable_thinking"})


@pytest.mark.parametrize("block", ["shared", "open"])
def test_onpolicy_training_with_the_teacher_thinking_and_the_student_not(tmp_path, block):
    """OPSD on a Qwen3-shaped model: the student rolls out after the empty block, the teacher
    scores the same tokens after the reference prompt ending as `block` says."""
    from dasd.training.onpolicy.trainer import build_dataset, build_trainer, train_onpolicy
    from tests.training.onpolicy.test_trainer import fast

    tokenizer = make_qwen3_tokenizer()
    config = fast(tmp_path / block, max_steps=2, thinking_block=block, **TEACHER_ON)
    dataset = build_dataset(config, tokenizer)
    ending = {"shared": EMPTY, "open": OPEN}[block]
    assert all(row["prompt"].endswith(HEADER + EMPTY) for row in dataset)
    assert all(row["privileged_context"].endswith(HEADER + ending) for row in dataset)
    model = make_qwen3_model(len(tokenizer), tokenizer.eos_token_id)
    trainer = build_trainer(config, model, tokenizer, dataset)
    batch = trainer._prepare_training_batch([dataset[0], dataset[1]])
    completion = batch["completion_ids"][0][batch["completion_mask"][0].bool()].tolist()
    teacher = batch["teacher_input_ids"][0][batch["teacher_attention_mask"][0].bool()]
    assert tokenizer.decode(teacher.tolist()) == (dataset[0]["privileged_context"]
                                                  + tokenizer.decode(completion))
    summary = train_onpolicy(config, make_qwen3_model(len(tokenizer), tokenizer.eos_token_id),
                             tokenizer)
    assert summary["steps"] == 2
    saved = yaml.safe_load((tmp_path / block / "config.yaml").read_text())
    assert saved["base_chat_template_kwargs"] == {"enable_thinking": False}
