"""Continuous batching in the step engine: the same traces as the engine it replaced."""

import pytest
import torch
from transformers import DynamicCache, Gemma2Config, Gemma2ForCausalLM

from dasd.decoding.engine import (
    FINISH_EOS,
    TokenTrace,
    _Rows,
    decode_batches,
    decode_pairs,
    left_pad,
    record_step,
    step_statistics,
)
from dasd.decoding.naive import naive_decode
from dasd.decoding.rules import build_rule
from tests.conftest import float32_approx, make_model

VOCAB, EOS, PAD = 64, 1, 0
STOPS = [EOS, 5, 6]  # more stop tokens: examples end at many different steps


def prompts(seed: int, n: int, low: int, high: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g).tolist()
    return [torch.randint(3, VOCAB, (length,), generator=g).tolist() for length in lengths]


@torch.inference_mode()
def previous_engine(model, refs, bases, rule, eos_ids, max_new_tokens, pad_id, keys=None,
                    decode=None) -> list[TokenTrace]:
    """`decode_pairs` before continuous batching (commit 4a242d8), kept as the oracle: one
    static batch, reference and base rows left-padded to one width and prefilled together,
    finished examples dropped, transformers' own cache."""
    n = len(refs)
    traces = [TokenTrace() for _ in range(n)]
    input_ids, attention_mask = left_pad([*refs, *bases], pad_id, torch.device("cpu"))
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache, active = DynamicCache(config=model.config), torch.arange(n)
    if hasattr(rule, "start"):
        rule.start(keys or [(tuple(r), tuple(b)) for r, b in zip(refs, bases, strict=True)],
                   decode)
    for step in range(max_new_tokens):
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids, cache=cache, use_cache=True).logits[:, -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        ref_lp, base_lp = logprobs[: len(active)], logprobs[len(active):]
        selection = rule.select(ref_lp, base_lp)
        stats = step_statistics(ref_lp, base_lp, selection.tokens).tolist()
        for i, example in enumerate(active.tolist()):
            record_step(traces[example], int(selection.tokens[i]),
                        int(selection.categories[i]), stats[i])
        done = torch.isin(selection.tokens, torch.tensor(eos_ids))
        for example in active[done].tolist():
            traces[example].finish_reason = FINISH_EOS
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        keep = (~done).nonzero().squeeze(-1)
        cache.batch_select_indices(torch.cat([keep, keep + len(active)]))
        if hasattr(rule, "keep") and len(keep) < len(active):
            rule.keep(keep)
        rows = torch.cat([keep, keep + len(active)])
        attention_mask, position_ids = attention_mask[rows], position_ids[rows]
        active = active[keep]
        input_ids = torch.cat([selection.tokens[keep]] * 2)[:, None]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(rows), 1))], -1)
        position_ids = position_ids[:, -1:] + 1
    return traces


def assert_same(got: list[TokenTrace], expected: list[TokenTrace]) -> None:
    assert [t.token_ids for t in got] == [t.token_ids for t in expected]
    assert [t.categories for t in got] == [t.categories for t in expected]
    assert [t.finish_reason for t in got] == [t.finish_reason for t in expected]
    assert [t.ref_rank for t in got] == [t.ref_rank for t in expected]
    assert [t.base_top3_ref_rank for t in got] == [t.base_top3_ref_rank for t in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.p_base == float32_approx(b.p_base)
        assert a.p_ref == float32_approx(b.p_ref)
        assert a.base_entropy == float32_approx(b.base_entropy)


def names(ids: list[int]) -> str:
    return "".join(f"<{i}>" for i in ids)


RULES = [("dasd", {}), ("dasd", {"fallback": "base", "top_k": 2, "tau": 0.4}), ("sd", {}),
         ("base", {}), ("hint", {"temperature": 1.0, "marker": "<9>"}),
         ("hint", {"beta": 1.0, "temperature": 0.7, "top_p": 0.8, "marker": ""})]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method, settings", RULES)
def test_continuous_batches_give_the_previous_engines_traces(seed, method, settings, one_thread):
    model = make_model(VOCAB, seed=seed, eos_id=EOS, eos_bias=0.4 + 0.2 * seed,
                       sharpness=3.0 if method == "hint" else 12.0)
    refs, bases = prompts(seed, 7, 4, 30), prompts(seed + 100, 7, 1, 12)
    keys = [f"ex-{i}" for i in range(7)]

    def run(engine, **kwargs):
        return engine(model, refs, bases, build_rule(method, **settings), STOPS, 20, PAD,
                      keys=keys, decode=names, **kwargs)

    expected = run(previous_engine)
    assert len({len(t.token_ids) for t in expected}) > 2, "the test needs varied lengths"
    for batch_size in (1, 2, 3, None):
        assert_same(run(decode_pairs, batch_size=batch_size), expected)
    assert_same(run(decode_pairs, batch_size=3, continuous=False), expected)


@pytest.mark.parametrize("method", ["dasd", "sd", "base"])
def test_continuous_batches_equal_uncached_decoding(method):
    model = make_model(VOCAB, seed=7, eos_id=EOS, eos_bias=0.8)
    refs, bases = prompts(1, 6, 1, 40), prompts(2, 6, 1, 6)
    refs[0], bases[0], bases[1] = refs[0][:1], bases[0][:1], bases[1][:1]  # nothing to prefill
    rule = build_rule(method)
    got = decode_pairs(model, refs, bases, rule, STOPS, 16, PAD, batch_size=2)
    assert_same(got, [naive_decode(model, r, b, rule, STOPS, 16)
                      for r, b in zip(refs, bases, strict=True)])


def test_a_freed_slot_takes_the_next_example_at_the_next_step():
    model = make_model(VOCAB, seed=1)
    refs, bases = prompts(3, 6, 2, 20), prompts(4, 6, 1, 9)
    budgets = [1, 5, 1, 1, 1, 5]  # no stop token: each example takes exactly its budget
    rows = {True: [], False: []}
    for continuous, seen in rows.items():
        traces = decode_pairs(model, refs, bases, build_rule("dasd"), [], budgets, PAD,
                              on_step=seen.append, batch_size=2, continuous=continuous)
        assert [len(t.token_ids) for t in traces] == budgets
        assert {t.finish_reason for t in traces} == {"length"}
    assert rows[True] == [2, 2, 2, 2, 2, 1, 1, 1, 1]  # examples 2, 3, 4, 5 refill a slot
    assert rows[False] == [2, 1, 1, 1, 1, 2, 2, 1, 1, 1, 1]  # batches (0,1) (2,3) (4,5)


def test_rows_stay_consistent_while_examples_come_and_go(monkeypatch):
    """Every step: the mask is as wide as the cache, no row's tokens are cut off, and no
    column is kept that no row reaches."""
    step = _Rows.step
    widths = []

    def checked(rows):
        width = rows.cache.get_seq_length()
        assert rows.mask.shape == (len(rows.pending), width) and not rows.free
        assert width == int(rows.positions.max())
        assert (rows.mask.sum(-1) == rows.positions).all()
        widths.append(width)
        return step(rows)

    monkeypatch.setattr(_Rows, "step", checked)
    model = make_model(VOCAB, seed=2, eos_id=EOS, eos_bias=0.6)
    refs = prompts(5, 9, 2, 12) + [list(range(3, 60))]  # a long prompt enters late
    bases = prompts(6, 10, 1, 5)
    traces = decode_pairs(model, refs, bases, build_rule("dasd"), STOPS, 30, PAD, batch_size=3)
    expected = decode_pairs(model, refs, bases, build_rule("dasd"), STOPS, 30, PAD)
    assert [t.token_ids for t in traces] == [t.token_ids for t in expected]
    assert max(widths) >= 56 and min(widths) < 30  # widened for it, trimmed when it left


def test_base_prompts_are_prefilled_at_their_own_width(monkeypatch):
    model = make_model(VOCAB, seed=3)
    widths = []
    forward = type(model).forward

    def spy(self, *args, input_ids=None, **kwargs):
        widths.append(tuple(input_ids.shape))
        return forward(self, *args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    refs, bases = [[7] * 40, [8] * 30], [[9] * 3, [10] * 5]
    decode_pairs(model, refs, bases, build_rule("sd"), [], 3, PAD)
    # prefill: references (all but their last token), bases alike; then one token per row
    assert widths == [(2, 39), (2, 4), (4, 1), (4, 1), (4, 1)]


def test_sliding_window_model_decodes_exactly():
    config = Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=8, sliding_window=4, max_position_embeddings=128,
                          eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).double().eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    refs, bases = prompts(7, 5, 2, 14), prompts(8, 5, 1, 6)
    rule = build_rule("dasd")
    got = decode_pairs(model, refs, bases, rule, [EOS], 12, PAD, batch_size=2)
    assert_same(got, [naive_decode(model, r, b, rule, [EOS], 12)
                      for r, b in zip(refs, bases, strict=True)])


def test_batches_come_back_in_input_order_once_complete():
    model = make_model(VOCAB, seed=4)
    refs, bases = prompts(9, 7, 2, 20), prompts(10, 7, 1, 9)
    budgets = [9, 1, 1, 2, 1, 1, 3]
    rule = build_rule("dasd")
    expected = decode_pairs(model, refs, bases, rule, [], budgets, PAD)
    steps = []
    stream = decode_batches(decode_pairs, [3, 3, 1], model, refs, bases, rule, [], budgets,
                            PAD, on_step=steps.append)
    batches = list(stream)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [t.token_ids for b in batches for t in b] == [t.token_ids for t in expected]
    assert len(steps) == 9  # the long first example ran while the others streamed past

    calls = []

    def other(model, refs, *args, **kwargs):
        calls.append(len(refs))
        return decode_pairs(model, refs, *args, **kwargs)

    batches = list(decode_batches(other, [3, 3, 1], model, refs, bases, rule, [], 4, PAD))
    assert calls == [3, 3, 1] and [len(b) for b in batches] == [3, 3, 1]


def test_bad_arguments_are_refused():
    model = make_model(VOCAB, seed=0)
    rule = build_rule("dasd")
    with pytest.raises(ValueError, match="2 max_new_tokens for 1 examples"):
        decode_pairs(model, [[5]], [[6]], rule, [EOS], [3, 4], PAD)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        decode_pairs(model, [[5]], [[6]], rule, [EOS], 3, PAD, batch_size=0)
    with pytest.raises(ValueError, match="at least one token"):
        decode_pairs(model, [[5]], [[]], rule, [EOS], 3, PAD)
    assert decode_pairs(model, [], [], rule, [EOS], 3, PAD) == []
    empty = decode_pairs(model, [[5], [6]], [[7], [8]], rule, [EOS], [0, 2], PAD)
    assert [len(t.token_ids) for t in empty] == [0, 2]
