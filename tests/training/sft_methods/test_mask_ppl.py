"""Mask-PPL (perplexity masks under the frozen base model) and reference rows (SFT on gold)."""

import json
import math

import pytest
import torch

from dasd.config import DecodeStageConfig, build_config
from dasd.decoding.generate import GenerateConfig, generate
from dasd.errors import DasdError
from dasd.records import read_jsonl, sidecar
from dasd.stats import high_ppl_mask
from dasd.training import TrainConfig, train
from dasd.training.data import build_dataset
from dasd.training.references import reference_rows, write_reference_rows
from dasd.training.sft_methods import add_mask_ppl, mask_ppl_file, ppl_mask, teacher_forced_logprobs
from tests.conftest import make_model, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def generated(tmp_path, model, tokenizer, method: str, limit: int = 6) -> list[dict]:
    out = tmp_path / f"{method}.jsonl"
    generate(GenerateConfig(task="arith", method=method, limit=limit, batch_size=4,
                            max_new_tokens=16, out=str(out)), model=model, tokenizer=tokenizer)
    return read_jsonl(out)


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def train_config(data: str, out, **overrides) -> TrainConfig:
    values = dict(data=data, out=str(out), learning_rate=1e-3, warmup_steps=0.0, lora_r=4,
                  lora_alpha=8, lora_dropout=0.0, per_device_train_batch_size=4, max_steps=1)
    return build_config(TrainConfig, {**values, **overrides})


# ppl_mask: the threshold, by hand -------------------------------------------------------

@pytest.mark.parametrize("p, kept", [
    (0.4, 1),        # ppl exactly 2.5: kept (the rule is ppl > 2.5 -> dropped)
    (0.39, 0),       # ppl 2.564
    (0.41, 1),       # ppl 2.439
    (1.0, 1),        # ppl 1
    (1e-300, 0),
])
def test_ppl_mask_boundary_by_hand(p, kept):
    assert ppl_mask([math.log(p)]) == [kept]
    assert ppl_mask(torch.tensor([math.log(p)], dtype=torch.float64)) == [kept]


def test_ppl_mask_other_thresholds_infinities_and_nan():
    logps = [math.log(0.5), math.log(0.2), -math.inf, 0.0, math.nan]
    assert ppl_mask(logps) == [1, 0, 0, 1, 0]
    assert ppl_mask(logps, threshold=5.0) == [1, 1, 0, 1, 0]    # 1/0.2 = 5 is kept
    assert ppl_mask(logps, threshold=1.9) == [0, 0, 0, 1, 0]    # 1/0.5 = 2 > 1.9
    assert ppl_mask([]) == []
    with pytest.raises(DasdError, match="threshold must be > 1"):
        ppl_mask(logps, threshold=1.0)


def test_ppl_mask_agrees_with_the_high_ppl_statistic():
    """The analysis' high-PPL ratio and the mask must draw the same line."""
    p = [0.4, 0.39999999, 0.40000001, 0.0, 1.0, 0.05, 0.9]
    logps = [math.log(x) if x > 0 else -math.inf for x in p]
    assert ppl_mask(logps) == [0 if high else 1 for high in high_ppl_mask(p)]


# teacher_forced_logprobs ----------------------------------------------------------------

def manual_logprobs(model, prompt: list[int], completion: list[int]) -> list[float]:
    """One unpadded forward; position t's logits predict token t + 1."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
    start = len(prompt) - 1
    return [logprobs[start + k, token].item() for k, token in enumerate(completion)]


def test_teacher_forced_batched_equals_one_by_one_equals_manual():
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=3)
    generator = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(3, 250, (n,), generator=generator).tolist()

    prompts = [ids(n) for n in (5, 1, 12, 7, 3, 9)]
    completions = [ids(n) for n in (4, 6, 0, 11, 1, 2)]
    manual = [manual_logprobs(model, p, c) for p, c in zip(prompts, completions, strict=True)]
    one_by_one = teacher_forced_logprobs(model, prompts, completions, batch_size=1)
    batched = teacher_forced_logprobs(model, prompts, completions, batch_size=4)
    together = teacher_forced_logprobs(model, prompts, completions, batch_size=64)
    for expected, *got in zip(manual, one_by_one, batched, together, strict=True):
        for values in got:
            assert len(values) == len(expected)
            assert values == pytest.approx(expected, abs=1e-9)
    assert batched[2] == []
    with pytest.raises(DasdError, match="no prompt_ids"):
        teacher_forced_logprobs(model, [[]], [[5]])


# Mask-PPL on generated rows: recorded p_base == recomputed p_base -------------------------

@pytest.mark.parametrize("method", ["base", "sd"])
def test_recorded_p_base_matches_recomputation_under_the_base_context(tmp_path, tiny_model,
                                                                      tokenizer, method):
    rows = generated(tmp_path, tiny_model, tokenizer, method)
    recomputed = teacher_forced_logprobs(tiny_model, [r["prompt_ids"] for r in rows],
                                         [r["completion_ids"] for r in rows], batch_size=4)
    for row, logps in zip(rows, recomputed, strict=True):
        # Not 1e-9: the engine takes log_softmax of logits cast to float32 (error ~ eps32 x
        # |logit|, logits here are ~30), then generate stores p to 6 significant digits.
        assert [math.exp(lp) for lp in logps] == pytest.approx(row["tokens"]["p_base"],
                                                               rel=1e-5, abs=1e-30)

    # The tiny model's distributions are flat (p ~ 0.05-0.2): at 2.5 every token would go.
    threshold = 10.0
    recorded = add_mask_ppl(rows, threshold=threshold, source="recorded")
    again = add_mask_ppl(rows, tiny_model, threshold=threshold, source="recompute")
    bits = 0
    for row, a, b, logps in zip(rows, recorded, again, recomputed, strict=True):
        assert a["mask_ppl"]["source"] == "recorded" and b["mask_ppl"]["source"] == "recompute"
        clear = [abs(lp + math.log(threshold)) > 1e-4 for lp in logps]  # off the boundary
        assert [m for m, c in zip(a["loss_mask"], clear, strict=True) if c] == \
               [m for m, c in zip(b["loss_mask"], clear, strict=True) if c]
        assert len(a["loss_mask"]) == len(row["completion_ids"])
        bits += sum(a["loss_mask"])
    total = sum(len(r["completion_ids"]) for r in rows)
    assert 0 < bits < total, "the masks should keep some tokens and drop others"
    assert add_mask_ppl(rows)[0]["mask_ppl"]["source"] == "recorded"  # auto


def test_auto_recomputes_rows_without_p_base_and_needs_a_model(tiny_model, tokenizer):
    rows = reference_rows(DecodeStageConfig(task="arith", limit=2), tokenizer)
    with pytest.raises(DasdError, match="pass the frozen base model"):
        add_mask_ppl(rows)
    with pytest.raises(DasdError, match="lack tokens.p_base"):
        add_mask_ppl(rows, tiny_model, source="recorded")
    with pytest.raises(DasdError, match="source must be one of"):
        add_mask_ppl(rows, tiny_model, source="cached")
    masked = add_mask_ppl(rows, tiny_model, threshold=1e300)
    assert [r["loss_mask"] for r in masked] == [[1] * len(r["completion_ids"]) for r in rows]
    assert masked[0]["mask_ppl"] == {"threshold": 1e300, "source": "recompute", "dropped": 0}
    assert "loss_mask" not in rows[0], "the input rows are left as they were"


# Reference rows (SFT on gold) -------------------------------------------------------------

def test_reference_rows_share_generate_prompts_and_end_in_eos(tmp_path, tiny_model, tokenizer):
    config = DecodeStageConfig(task="arith", limit=4)
    rows = reference_rows(config, tokenizer)
    generated_rows = {r["id"]: r for r in generated(tmp_path, tiny_model, tokenizer, "base", 4)}
    for row in rows:
        twin = generated_rows[row["id"]]
        assert (row["prompt"], row["prompt_ids"]) == (twin["prompt"], twin["prompt_ids"])
        assert row["completion"] == twin["reference"] == row["reference"]
        assert row["completion_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(row["completion_ids"][:-1]) == row["reference"]
        assert (row["method"], row["finish_reason"], row["correct"]) == ("reference", "eos", True)
        assert row["gold_answer"] == twin["gold_answer"]


def test_reference_rows_train_and_mask_ppl_recomputes_them(tmp_path, tokenizer):
    model = make_model(len(tokenizer), eos_id=tokenizer.eos_token_id).float()
    config = DecodeStageConfig(task="arith", limit=4)
    data = tmp_path / "reference.jsonl"
    summary = write_reference_rows(config, data, tokenizer)
    assert summary["samples"] == 4 and json.loads(sidecar(data, "summary.json").read_text())
    with pytest.raises(DasdError, match="exists"):
        write_reference_rows(config, data, tokenizer)

    result = train(train_config(str(data), tmp_path / "adapter"), model=model,
                   tokenizer=tokenizer)  # only_correct by default: references are correct
    assert result["steps"] == 1 and result["rows"]["used"] == 4

    masked = tmp_path / "reference_mask_ppl.jsonl"
    with pytest.raises(DasdError, match="give the frozen base model"):
        mask_ppl_file(data, masked)
    stats = mask_ppl_file(data, masked, model=model, threshold=1e300)
    assert (stats["source"], stats["rows"], stats["tokens_dropped"]) == ("recompute", 4, 0)
    assert stats["tokens"] == sum(len(r["completion_ids"]) for r in read_jsonl(data))
    for row in add_mask_ppl(read_jsonl(data), model, threshold=10.0):
        expected = manual_logprobs(model, row["prompt_ids"], row["completion_ids"])
        assert row["loss_mask"] == ppl_mask(expected, threshold=10.0)


def test_loss_mask_reaches_the_trainer_and_all_dropped_rows_are_skipped(tmp_path, tiny_model,
                                                                        tokenizer):
    rows = generated(tmp_path, tiny_model, tokenizer, "sd")
    hopeless = {**rows[0], "id": "hopeless",
                "tokens": {**rows[0]["tokens"], "p_base": [0.01] * len(rows[0]["completion_ids"])}}
    source = write_rows(tmp_path / "rows.jsonl", [*rows, hopeless])
    out = tmp_path / "masked.jsonl"
    stats = mask_ppl_file(source, out, threshold=10.0)  # the tiny model is flat: p ~ 0.1
    assert stats["source"] == "recorded" and stats["model"] is None
    assert stats["tokens_kept"] + stats["tokens_dropped"] == stats["tokens"]
    assert stats["kept_percent"] + stats["dropped_percent"] == pytest.approx(100.0)
    masked = read_jsonl(out)
    assert [r["id"] for r in masked] == [r["id"] for r in [*rows, hopeless]]
    assert masked[-1]["loss_mask"] == [0] * len(hopeless["completion_ids"])  # kept, all zero
    assert stats["rows_all_dropped"] == sum(not any(r["loss_mask"]) for r in masked) >= 1
    assert json.loads(sidecar(out, "summary.json").read_text()) == stats
    with pytest.raises(DasdError, match="exists"):
        mask_ppl_file(source, out)

    dataset, data_stats = build_dataset([str(out)], only_correct=False)
    used = [r for r in masked if any(r["loss_mask"])]
    assert data_stats.skipped["no_loss_tokens"] == len(masked) - len(used)
    assert dataset["completion_mask"] == [[0] * len(r["prompt_ids"]) + r["loss_mask"]
                                          for r in used]
    assert data_stats.loss_tokens == sum(sum(r["loss_mask"]) for r in used)

    model = make_model(len(tokenizer), eos_id=tokenizer.eos_token_id).float()
    result = train(train_config(str(out), tmp_path / "adapter", only_correct=False),
                   model=model, tokenizer=tokenizer)
    assert result["rows"]["skipped"]["no_loss_tokens"] == len(masked) - len(used)
    assert 0 < result["loss_tokens_trained"] <= data_stats.loss_tokens
