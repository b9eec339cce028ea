"""Evaluation: scoring through the task checker, resume, batching, adapters."""

from pathlib import Path

import pytest
import torch

from dasd.decoding.plain import generate_batch, generate_greedy
from dasd.errors import DasdError
from dasd.evaluation.evaluate import (
    EvalConfig,
    evaluate,
    pass_at_k,
    summarize_eval,
)
from dasd.records import read_jsonl
from dasd.tasks import get_task
from tests.conftest import make_model, make_tokenizer


class ScriptedModel:
    """A stand-in for a causal LM whose `generate` writes a chosen reply for each prompt.

    It finds which example a prompt belongs to by its question text, so it is correct or
    wrong on purpose; replies go through the real decode + `task.check` path.
    """

    device = torch.device("cpu")

    def __init__(self, tokenizer, examples, reply):
        self.tokenizer, self.examples, self.reply = tokenizer, examples, reply
        self.calls = 0

    def generate(self, input_ids, attention_mask, generation_config):
        self.calls += 1
        replies = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = self.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
            example = next(e for e in self.examples if e.question in text)
            text, stop = self.reply(example)
            tokens = self.tokenizer.encode(text, add_special_tokens=False)
            replies.append(tokens + ([self.tokenizer.eos_token_id] if stop else []))
        width = max(map(len, replies))
        pad = generation_config.pad_token_id
        padded = [r + [pad] * (width - len(r)) for r in replies]
        return torch.cat([input_ids, torch.tensor(padded, dtype=torch.long)], dim=1)


def scripted_run(tmp_path, reply, limit=10, batch_size=4, name="run"):
    tokenizer = make_tokenizer()
    examples = get_task("arith").load("test", limit=limit)
    model = ScriptedModel(tokenizer, examples, reply)
    config = EvalConfig(task="arith", split="test", limit=limit, batch_size=batch_size,
                        out=str(tmp_path / f"{name}.jsonl"))
    return evaluate(config, model, tokenizer), read_jsonl(config.out), model


def test_known_answers_score_100_percent(tmp_path):
    summary, rows, model = scripted_run(tmp_path, lambda e: (f"The answer is {e.answer}.", True))
    assert summary["accuracy"] == 1.0 and summary["n"] == 10 and summary["correct"] == 10
    assert model.calls == 3  # batches of 4, 4, 2
    assert all(r["correct"] and r["answer_how"] == "final-answer" for r in rows)
    assert [r["extracted_answer"] for r in rows] == [r["gold_answer"] for r in rows]
    assert {r["finish_reason"] for r in rows} == {"eos"}
    assert summary["length_capped"] == 0


def test_wrong_answers_score_0_percent(tmp_path):
    summary, rows, _ = scripted_run(
        tmp_path, lambda e: (f"Let me think: {e.answer}. The answer is {int(e.answer) + 1}.",
                             True))
    assert summary["accuracy"] == 0.0 and summary["correct"] == 0
    assert all(not r["correct"] for r in rows)
    assert [r["extracted_answer"] for r in rows] == [str(int(r["gold_answer"]) + 1) for r in rows]


def test_per_level_accounting_and_length_caps(tmp_path):
    # Right (and stopped) on odd levels; wrong and never stopped on even ones.
    def reply(example):
        odd = example.level % 2 == 1
        return f"The answer is {example.answer if odd else -1}.", odd

    summary, rows, _ = scripted_run(tmp_path, reply, limit=15)
    assert summary["n"] == 15 and summary["correct"] == 9
    assert summary["accuracy"] == pytest.approx(9 / 15)
    assert list(summary["per_level"]) == ["1", "2", "3", "4", "5"]
    for level, stats in summary["per_level"].items():
        odd = int(level) % 2 == 1
        assert stats == {"n": 3, "correct": 3 if odd else 0, "accuracy": 1.0 if odd else 0.0}
    assert summary["length_capped"] == 6
    assert all((r["finish_reason"] == "eos") == r["correct"] for r in rows)
    eos_rows = [r for r in rows if r["finish_reason"] == "eos"]
    assert all(r["n_tokens"] == len(f"The answer is {r['gold_answer']}.") + 1 for r in eos_rows)
    saved = Path(tmp_path / "run.summary.json")
    assert saved.is_file() and (tmp_path / "run.config.yaml").is_file()


class Interrupted(Exception):
    pass


class InterruptAfter:
    """Wraps a model; its generate fails after `calls` successful calls (a killed run)."""

    def __init__(self, model, calls):
        self.model, self.calls = model, calls

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, **kwargs):
        if self.calls == 0:
            raise Interrupted
        self.calls -= 1
        return self.model.generate(**kwargs)


def test_resume_after_interruption_writes_the_same_file(tmp_path, tiny_model, tokenizer):
    def config(name, **kw):
        return EvalConfig(task="arith", limit=7, batch_size=3, max_new_tokens=12,
                          out=str(tmp_path / f"{name}.jsonl"), **kw)

    whole = evaluate(config("whole"), tiny_model, tokenizer)
    with pytest.raises(Interrupted):
        evaluate(config("resumed"), InterruptAfter(tiny_model, calls=1), tokenizer)
    partial = tmp_path / "resumed.jsonl"
    assert len(read_jsonl(partial)) == 3
    with partial.open("a") as fh:  # a crash mid-write leaves half a line
        fh.write('{"id": "arith-test-000')
    counting = InterruptAfter(tiny_model, calls=100)
    resumed = evaluate(config("resumed"), counting, tokenizer)
    assert counting.calls == 100 - 2  # only the two missing batches were decoded
    assert partial.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert resumed["n"] == whole["n"] == 7
    assert resumed["per_level"] == whole["per_level"]
    assert {r["finish_reason"] for r in read_jsonl(partial)} == {"eos", "length"}


def test_changed_settings_are_refused_unless_overwrite(tmp_path, tiny_model, tokenizer):
    out = str(tmp_path / "e.jsonl")
    evaluate(EvalConfig(limit=2, max_new_tokens=4, out=out), tiny_model, tokenizer)
    with pytest.raises(DasdError, match="max_new_tokens"):
        evaluate(EvalConfig(limit=2, max_new_tokens=5, out=out), tiny_model, tokenizer)
    summary = evaluate(EvalConfig(limit=2, max_new_tokens=5, out=out, overwrite=True),
                       tiny_model, tokenizer)
    assert summary["n"] == 2 and max(r["n_tokens"] for r in read_jsonl(out)) <= 5
    # limit and batch size may change: more problems are added to the same file.
    assert evaluate(EvalConfig(limit=4, max_new_tokens=5, batch_size=1, out=out),
                    tiny_model, tokenizer)["n"] == 4


def random_prompts(seed, n, vocab, low=2, high=20):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g).tolist()
    return [torch.randint(3, vocab - 3, (k,), generator=g).tolist() for k in lengths]


def test_batched_left_padded_generation_equals_one_by_one(tiny_model, tokenizer):
    prompts = random_prompts(0, 6, len(tokenizer))
    eos = [tokenizer.eos_token_id]
    together = generate_greedy(tiny_model, tokenizer, prompts, 16, eos)
    alone = [generate_greedy(tiny_model, tokenizer, [p], 16, eos)[0] for p in prompts]
    assert together == alone
    assert {reason for _, reason in together} == {"eos", "length"}, "need both endings"
    for ids, reason in together:
        assert (ids[-1] in eos) == (reason == "eos") and not set(ids[:-1]) & set(eos)
        assert reason == "eos" or len(ids) == 16


def test_model_generation_defaults_do_not_leak(tiny_model, tokenizer):
    prompts, eos = random_prompts(1, 3, len(tokenizer)), [tokenizer.eos_token_id]
    greedy = generate_greedy(tiny_model, tokenizer, prompts, 12, eos)
    tiny_model.generation_config.do_sample = True
    tiny_model.generation_config.temperature = 5.0
    tiny_model.generation_config.repetition_penalty = 3.0
    assert generate_greedy(tiny_model, tokenizer, prompts, 12, eos) == greedy


def test_seeded_sampling_is_reproducible(tiny_model, tokenizer):
    prompts, eos = random_prompts(2, 2, len(tokenizer)), [tokenizer.eos_token_id]

    def sample(seed):
        return generate_batch(tiny_model, tokenizer, prompts, 10, eos, do_sample=True,
                              temperature=3.0, num_return_sequences=3, seed=seed)

    first = sample(0)
    assert len(first) == 6 and first == sample(0)
    assert first != sample(1)


def save_tiny_model(tmp_path):
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=4, eos_id=tokenizer.eos_token_id, eos_bias=0.3)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model, model_dir


def test_adapter_is_loaded_and_changes_outputs(tmp_path):
    from peft import LoraConfig, get_peft_model

    model, model_dir = save_tiny_model(tmp_path)
    lora = LoraConfig(r=4, lora_alpha=32, init_lora_weights=False,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    get_peft_model(model, lora).save_pretrained(tmp_path / "dasd")

    def run(adapter):
        name = Path(adapter).name if adapter else "base"
        config = EvalConfig(model=str(model_dir), adapter=adapter, limit=4, max_new_tokens=10,
                            device="cpu", out=str(tmp_path / f"{name}.jsonl"))
        return evaluate(config), read_jsonl(config.out)

    base_summary, base_rows = run(None)
    lora_summary, lora_rows = run(str(tmp_path / "dasd"))
    assert base_summary["adapter"] is None and lora_summary["adapter"] == str(tmp_path / "dasd")
    assert [r["id"] for r in base_rows] == [r["id"] for r in lora_rows]
    assert [r["response"] for r in base_rows] != [r["response"] for r in lora_rows]


def test_default_output_is_named_after_the_adapter():
    assert EvalConfig().out == "runs/arith/eval-base.jsonl"
    assert EvalConfig(task="gsm8k", adapter="runs/x/train/dasd/").out == \
        "runs/gsm8k/eval-dasd.jsonl"


@pytest.mark.parametrize("make_dir, message", [(False, "not found"),
                                               (True, "no adapter_config.json")])
def test_bad_adapter_path_is_a_one_line_error(tmp_path, make_dir, message):
    adapter = tmp_path / "adapter"
    if make_dir:
        adapter.mkdir()
    config = EvalConfig(model="no/such-model", adapter=str(adapter), out=str(tmp_path / "e.jsonl"))
    with pytest.raises(DasdError, match=message) as err:
        evaluate(config)  # refused before any model is loaded
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("values, message", [({"batch_size": 0}, "batch_size"),
                                             ({"max_new_tokens": 0}, "max_new_tokens"),
                                             ({"limit": 0}, "limit"),
                                             ({"adapter": " "}, "adapter")])
def test_bad_settings_are_refused(values, message):
    with pytest.raises(DasdError, match=message):
        EvalConfig(**values)


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 1, 0.25),              # pass@1 = c / n
    (4, 1, 2, 1 - 3 / 6),         # 1 - C(3,2)/C(4,2)
    (5, 2, 3, 1 - 1 / 10),        # 1 - C(3,3)/C(5,3)
    (4, 0, 4, 0.0), (4, 1, 4, 1.0), (4, 4, 2, 1.0),  # n == k: any correct answer passes
])
def test_pass_at_k_unbiased_estimator_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


class SampledScriptedModel(ScriptedModel):
    """Returns `num_return_sequences` replies per prompt, prompt-major, like `generate`;
    `reply(example, j)` writes the j-th."""

    def generate(self, input_ids, attention_mask, generation_config):
        n = generation_config.num_return_sequences
        assert generation_config.do_sample
        replies = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = self.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
            example = next(e for e in self.examples if e.question in text)
            for j in range(n):
                tokens = self.tokenizer.encode(self.reply(example, j), add_special_tokens=False)
                replies.append(tokens + [self.tokenizer.eos_token_id])
        width = max(map(len, replies))
        pad = generation_config.pad_token_id
        padded = [r + [pad] * (width - len(r)) for r in replies]
        return torch.cat([input_ids.repeat_interleave(n, dim=0),
                          torch.tensor(padded, dtype=torch.long)], dim=1)


def test_sampled_eval_reports_avg_and_pass_at_k_per_level(tmp_path):
    # A level-L problem gets its first L - 1 of 4 samples right (c = 0, 1, 2, 3, 4).
    def reply(example, j):
        return f"The answer is {example.answer if j < example.level - 1 else -1}."

    tokenizer = make_tokenizer()
    examples = get_task("arith").load("test", limit=10)  # levels 1..5, twice
    model = SampledScriptedModel(tokenizer, examples, reply)
    config = EvalConfig(task="arith", split="test", limit=10, batch_size=3, samples=4,
                        temperature=1.0, pass_k=2, out=str(tmp_path / "s.jsonl"))
    summary = evaluate(config, model, tokenizer)
    # pass@2 with n = 4: c=0 -> 0; c=1 -> 1 - C(3,2)/C(4,2) = 0.5; c=2 -> 1 - 1/6; c>=3 -> 1
    by_hand = {"1": (0.0, 0.0), "2": (0.25, 0.5), "3": (0.5, 5 / 6), "4": (0.75, 1.0),
               "5": (1.0, 1.0)}
    for level, (avg, passed) in by_hand.items():
        stats = summary["per_level"][level]
        assert stats["n"] == 2 and stats["correct"] == 2 * 4 * avg
        assert stats["avg@k"] == pytest.approx(avg) and stats["accuracy"] == pytest.approx(avg)
        assert stats["pass@k"] == pytest.approx(passed)
    assert summary["avg@k"] == pytest.approx(0.5)
    assert summary["pass@k"] == pytest.approx((0 + 0.5 + 5 / 6 + 1 + 1) / 5)
    assert summary["samples"] == 4 and summary["pass_k"] == 2
    # Maj@4: the wrong samples all answer -1, so the vote is right from 2 of 4 right on (a
    # 2-2 tie goes to the first sample's answer, right at level 3)
    assert [summary["per_level"][lvl]["maj@k"] for lvl in "12345"] == [0, 0, 1, 1, 1]
    assert summary["maj@k"] == pytest.approx(0.6)

    rows = read_jsonl(config.out)
    assert all(len(r["samples"]) == 4 for r in rows)
    assert [r["n_correct"] for r in rows] == [0, 1, 2, 3, 4] * 2


@pytest.mark.parametrize("answers, right, expected", [
    (["7", "8", "9", "7"], "7", True),      # 2 votes against 1 and 1
    (["8", "7", "9", "8"], "7", False),     # the wrong 8 wins 2-1-1
    (["8", "7", "7", "8"], "7", False),     # 2-2: the first sample's answer, 8
    ([None, None, "7", None], "7", True),   # no answer, no vote
    ([None, None], "7", False),             # nobody answered
])
def test_majority_vote_by_hand(answers, right, expected):
    from dasd.evaluation.evaluate import majority_correct

    samples = [{"extracted_answer": a, "correct": a == right} for a in answers]
    assert majority_correct(samples) is expected


def sampled(tmp_path, model, tokenizer, name, **kw):
    config = EvalConfig(task="arith", limit=3, batch_size=2, max_new_tokens=10,
                        out=str(tmp_path / f"{name}.jsonl"), **kw)
    summary = evaluate(config, model, tokenizer)
    return summary, read_jsonl(config.out)


def test_seeded_sampled_eval_is_reproducible(tmp_path, tiny_model, tokenizer):
    settings = dict(samples=3, temperature=2.0)
    _, first = sampled(tmp_path, tiny_model, tokenizer, "a", **settings)
    _, again = sampled(tmp_path, tiny_model, tokenizer, "b", **settings)
    _, other = sampled(tmp_path, tiny_model, tokenizer, "c", sample_seed=1, **settings)

    def answers(rows):
        return [[s["response"] for s in r["samples"]] for r in rows]

    assert answers(first) == answers(again)
    assert answers(first) != answers(other)
    assert any(len(set(a)) > 1 for a in answers(first)), "samples should differ at T=2"


def test_one_sample_at_temperature_zero_is_greedy(tmp_path, tiny_model, tokenizer):
    summary, rows = sampled(tmp_path, tiny_model, tokenizer, "g", samples=1, temperature=0.0)
    assert "avg@k" not in summary and "samples" not in rows[0]
    # top-k 1 sampling is argmax decoding: the one sample equals the greedy answer.
    summary_k1, rows_k1 = sampled(tmp_path, tiny_model, tokenizer, "k1", samples=1,
                                  temperature=1.0, top_k=1)
    assert [r["response"] for r in rows_k1] == [r["response"] for r in rows]
    assert summary_k1["avg@k"] == summary["accuracy"]


@pytest.mark.parametrize("values, message", [({"samples": 0}, "samples"),
                                             ({"samples": 4}, "temperature 0 is greedy"),
                                             ({"samples": 4, "temperature": 1, "pass_k": 5},
                                              "pass_k"),
                                             ({"temperature": 1, "top_p": 0}, "top_p"),
                                             ({"temperature": -1}, "temperature")])
def test_bad_sampling_settings_are_refused(values, message):
    with pytest.raises(DasdError, match=message):
        EvalConfig(**values)


def test_summary_counts_checker_outcomes_of_answers_and_samples():
    greedy = [{"level": 1, "correct": True, "outcome": "passed", "n_tokens": 3,
               "finish_reason": "eos"},
              {"level": 1, "correct": False, "outcome": "timeout", "n_tokens": 3,
               "finish_reason": "eos"}]
    assert summarize_eval(greedy)["outcomes"] == {"passed": 1, "timeout": 1}
    sampled = [{**greedy[0], "n_correct": 1, "samples": [
        {"correct": True, "outcome": "passed"}, {"correct": False, "outcome": "memory"}]}]
    assert summarize_eval(sampled)["outcomes"] == {"memory": 1, "passed": 1}
    plain = [{"level": 1, "correct": True, "n_tokens": 3, "finish_reason": "eos"}]
    assert "outcomes" not in summarize_eval(plain)  # math answers have no outcome


def test_a_new_pass_k_rescores_the_same_samples(tmp_path, tiny_model, tokenizer):
    out = str(tmp_path / "s.jsonl")
    settings = {"limit": 2, "max_new_tokens": 4, "samples": 2, "temperature": 1.0, "out": out}
    evaluate(EvalConfig(**settings, pass_k=1), tiny_model, tokenizer)
    before = read_jsonl(out)
    summary = evaluate(EvalConfig(**settings, pass_k=2), tiny_model, tokenizer)
    assert summary["pass_k"] == 2 and read_jsonl(out) == before  # no decoding again
