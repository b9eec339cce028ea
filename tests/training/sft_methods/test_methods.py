"""Training-side baselines: the self-distillation filters, Mask-PPL in `dasd train`, ProFit."""

import dataclasses
import math

import pytest
import torch

from dasd.config import build_config
from dasd.errors import DasdError
from dasd.training import TrainConfig, train
from dasd.training.data import build_dataset
from dasd.training.filters import RowFilter, apply_filter, mentions_reference
from dasd.training.references import replace_with_reference
from dasd.training.sft import build_trainer
from dasd.training.sft_methods.profit import profit_loss
from tests.training.test_sft import encode, fast_config, make_row, make_tokenizer, tiny, write_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text, banned", [
    ("As the Reference Answer says, 4.", True),
    ("following the reference solution: 4", True),
    ("Your turn: 2 + 2 = 4", True),
    ("  Your turn now", True),
    ("Now it's your turn. 4", True),
    ("Here is my response: 4", True),
    ("2 + 2 = 4. The answer is 4.", False),
    ("I refer to my notes; it is your turn later", False),
])
def test_mentions_reference_uses_the_sdft_ban_list(text, banned):
    assert mentions_reference(text) is banned


def test_filter_reasons_in_order_and_the_two_policies():
    rows = [("f", {"id": "ok", "correct": True, "completion": "4"}),
            ("f", {"id": "wrong", "correct": False, "completion": "5"}),
            ("f", {"id": "capped", "correct": True, "finish_reason": "length", "completion": "4"}),
            ("f", {"id": "mention", "correct": True, "completion": "The reference answer: 4"})]
    strict = RowFilter(drop_length_capped=True, reject_mentions=True)
    assert [strict.reason(r) for _, r in rows] == [None, "not_correct", "length_capped",
                                                    "mentions_reference"]
    assert [RowFilter().reason(r) for _, r in rows] == [None, "not_correct", None, None]

    kept, rejected, replaced = apply_filter(rows, strict)
    assert [r["id"] for _, r in kept] == ["ok"] and not replaced
    assert rejected == {"not_correct": 1, "length_capped": 1, "mentions_reference": 1}

    swap = RowFilter(drop_length_capped=True, reject_mentions=True, rejected="reference")
    kept, rejected, replaced = apply_filter(rows, swap, lambda r: {**r, "swapped": True})
    assert [r["id"] for _, r in kept] == ["ok", "wrong", "capped", "mention"]  # order kept
    assert [r.get("swapped", False) for _, r in kept] == [False, True, True, True]
    assert not rejected and sum(replaced.values()) == 3
    with pytest.raises(DasdError, match="rejected must be one of drop, reference"):
        RowFilter(rejected="keep")


def test_rejected_rows_train_on_their_reference_tokens_plus_eos(tmp_path):
    tokenizer = make_tokenizer()
    good, bad = make_row(tokenizer, 0), make_row(tokenizer, 1, completion="zz", correct=False)
    bad.update(reference="2 + 2 = 4", gold_answer="4", method="sd",
               tokens={"p_base": [0.5, 0.5, 0.5]}, loss_mask=[1, 0, 1])
    data = write_rows(tmp_path / "rows.jsonl", [good, bad])

    swapped = replace_with_reference(bad, tokenizer)
    assert swapped["completion_ids"] == encode(tokenizer, "2 + 2 = 4") + [tokenizer.eos_token_id]
    assert swapped["correct"] is True and swapped["replaced_method"] == "sd"
    assert "tokens" not in swapped and "loss_mask" not in swapped
    assert swapped["prompt_ids"] == bad["prompt_ids"]

    dataset, stats = build_dataset(
        [data], row_filter=RowFilter(rejected="reference"),
        to_reference=lambda row: replace_with_reference(row, tokenizer))
    assert stats.used == 2 and stats.replaced == {"not_correct": 1}
    assert "1 not correct (only_correct=true) replaced by their reference" in stats.explain()
    assert dataset[1]["input_ids"] == bad["prompt_ids"] + swapped["completion_ids"]
    with pytest.raises(DasdError, match="no reference text"):
        replace_with_reference({**bad, "reference": ""}, tokenizer)


def test_profit_loss_by_hand():
    p = torch.tensor([[0.5, 0.05, 0.2], [0.9, 0.09, 0.3]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, kept = profit_loss(p.log(), mask, threshold=0.1)
    # kept: 0.5, 0.2 | 0.9 (0.3 is not a response token); normaliser: all 5 response tokens
    expected = -(math.log(0.5) + math.log(0.2) + math.log(0.9)) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6) and int(kept) == 3
    loss, _ = profit_loss(p.log(), mask, threshold=0.1, num_tokens=10)  # accumulation count
    assert loss.item() == pytest.approx(expected * 5 / 10, rel=1e-6)

    logp = p.log().requires_grad_()
    profit_loss(logp, mask, 0.1)[0].backward()
    # dropped and non-response tokens get no gradient; kept ones get -1/5
    assert logp.grad.flatten().tolist() == pytest.approx([-0.2, 0, -0.2, -0.2, 0, 0])
    masked_inf = torch.tensor([[-math.inf, math.log(0.5)]])
    loss, kept = profit_loss(masked_inf, torch.tensor([[0, 1]]), 0.1)
    assert math.isfinite(loss.item()) and int(kept) == 1


def _first_batch_loss(config, tokenizer, dataset):
    torch.manual_seed(0)
    trainer = build_trainer(config, tiny(tokenizer), tokenizer, dataset,
                            token_loss=_token_loss(config))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        logits = trainer.model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits
    return loss, logits, batch["labels"]


def _token_loss(config):
    token_loss = getattr(config.method_settings(), "token_loss", None)
    return token_loss() if token_loss else None


def test_profit_trainer_loss_matches_the_formula_and_nll_at_threshold_zero(tmp_path):
    tokenizer = make_tokenizer()
    data = write_rows(tmp_path / "rows.jsonl", [make_row(tokenizer, i) for i in range(4)])
    dataset, _ = build_dataset([data])
    base = fast_config(data, tmp_path / "out", lora_dropout=0.0)
    nll, logits, labels = _first_batch_loss(base, tokenizer, dataset)

    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    targets = labels[:, 1:]
    mask = targets != -100
    gold = logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    assert nll == pytest.approx(-(gold[mask]).sum().item() / mask.sum().item(), rel=1e-4)

    # the tiny model's p are near 1/V: a threshold between two middle ones, not on one
    probs = sorted(set(gold[mask].exp().tolist()))
    threshold = (probs[len(probs) // 2 - 1] + probs[len(probs) // 2]) / 2
    profit = dataclasses.replace(base, method="profit", settings={"threshold": threshold})
    loss, _, _ = _first_batch_loss(profit, tokenizer, dataset)
    keep = mask & (gold.exp() >= threshold)
    assert 0 < keep.sum() < mask.sum(), "the test needs some tokens on each side"
    assert loss == pytest.approx(-(gold[keep]).sum().item() / mask.sum().item(), rel=1e-4)
    tiny_threshold = dataclasses.replace(base, method="profit", settings={"threshold": 1e-12})
    assert _first_batch_loss(tiny_threshold, tokenizer, dataset)[0] == pytest.approx(nll, rel=1e-4)


def test_train_with_mask_ppl_profit_and_reference_fallback(tmp_path):
    tokenizer = make_tokenizer()
    rows = [make_row(tokenizer, i) for i in range(4)]
    wrong = make_row(tokenizer, 9, completion="zz", correct=False)
    wrong.update(reference="ab ab", gold_answer="ab")
    data = write_rows(tmp_path / "rows.jsonl", [*rows, wrong])

    # the untrained tiny model's perplexities are near V: a threshold of V splits them
    summary = train(fast_config(data, tmp_path / "a", method="mask-ppl", rejected="reference",
                                threshold=len(tokenizer), max_steps=1),
                    model=tiny(tokenizer), tokenizer=tokenizer)
    stats = summary["rows"]
    assert stats["used"] == 5 and stats["replaced_by_reference"] == {"not_correct": 1}
    all_tokens = sum(len(r["completion_ids"]) for r in rows) + len(
        encode(tokenizer, "ab ab")) + 1
    assert 0 < stats["loss_tokens_per_epoch"] < all_tokens - 5

    summary = train(fast_config(data, tmp_path / "b", method="profit", max_steps=2),
                    model=tiny(tokenizer), tokenizer=tokenizer)
    assert summary["rows"]["used"] == 4 and summary["steps"] == 2


@pytest.mark.parametrize("overrides, message", [
    ({"rejected": "keep"}, "'rejected' must be one of drop, reference"),
    ({"method": "mask_ppl"}, "unknown SFT method 'mask_ppl'.*did you mean 'mask-ppl'"),
    ({"method": "mask-ppl", "threshold": 0.5}, "mask-ppl threshold must be > 1"),
    ({"method": "mask-ppl", "source": "guess"}, "'source' must be one of auto"),
    ({"method": "profit", "threshold": 1.5},
     r"ProFit threshold must be a probability in \(0, 1\)"),
    ({"method": "sft", "threshold": 0.5}, "method 'sft' has no setting 'threshold'"),
    ({"mask": "mask_ppl"}, "older dasd: Mask-PPL is a method now"),
    ({"profit_threshold": 0.2}, "older dasd: write `threshold`"),
])
def test_bad_method_settings_are_refused(overrides, message):
    with pytest.raises(DasdError, match=message):
        build_config(TrainConfig, {"data": "x.jsonl", **overrides})
