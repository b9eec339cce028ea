"""The batched, cached two-context engine against plain references."""

import pytest
import torch

from dasd.decoding.engine import decode_pairs
from dasd.decoding.naive import naive_decode
from dasd.decoding.rules import build_rule
from tests.conftest import float32_approx, make_model

VOCAB, EOS, PAD = 64, 1, 0


def random_prompts(seed: int, n: int, low: int, high: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g).tolist()
    return [torch.randint(3, VOCAB, (length,), generator=g).tolist() for length in lengths]


RULES = [("dasd", {}), ("dasd", {"fallback": "base"}), ("dasd", {"top_k": 2, "tau": 0.4}),
         ("dasd", {"guard": 0.6}), ("sd", {}), ("base", {})]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method, settings", RULES)
def test_batched_engine_equals_uncached_example_by_example(seed, method, settings):
    model = make_model(VOCAB, seed=seed, eos_id=EOS, eos_bias=0.3 * seed)
    refs, bases = random_prompts(seed, 5, 4, 30), random_prompts(seed + 100, 5, 1, 12)
    rule = build_rule(method, **settings)
    traces = decode_pairs(model, refs, bases, rule, [EOS], max_new_tokens=24, pad_id=PAD)
    for ref, base, trace in zip(refs, bases, traces, strict=True):
        expected = naive_decode(model, ref, base, rule, [EOS], max_new_tokens=24)
        assert trace.token_ids == expected.token_ids
        assert trace.categories == expected.categories
        assert trace.ref_rank == expected.ref_rank
        assert trace.base_top3_ref_rank == expected.base_top3_ref_rank
        assert trace.finish_reason == expected.finish_reason
        assert trace.p_base == float32_approx(expected.p_base)
        assert trace.p_ref == float32_approx(expected.p_ref)


def test_rows_finish_at_different_steps_and_are_dropped():
    model = make_model(VOCAB, seed=3, eos_id=EOS, eos_bias=0.9)
    refs, bases = random_prompts(7, 8, 4, 30), random_prompts(8, 8, 1, 12)
    traces = decode_pairs(model, refs, bases, build_rule("dasd"), [EOS, 5, 6], 40, PAD)
    lengths = {len(t.token_ids) for t in traces}
    assert len(lengths) > 1, "the test needs examples that stop at different steps"
    for t in traces:
        stopped_on_eos = t.token_ids[-1] in (EOS, 5, 6)
        assert t.finish_reason == ("eos" if stopped_on_eos else "length")
        assert all(tok not in (EOS, 5, 6) for tok in t.token_ids[:-1])


def test_batch_size_does_not_change_tokens():
    model = make_model(VOCAB, seed=5, eos_id=EOS, eos_bias=0.5)
    refs, bases = random_prompts(1, 6, 4, 30), random_prompts(2, 6, 1, 12)
    rule = build_rule("dasd")
    together = decode_pairs(model, refs, bases, rule, [EOS], 20, PAD)
    alone = [decode_pairs(model, [r], [b], rule, [EOS], 20, PAD)[0]
             for r, b in zip(refs, bases, strict=True)]
    assert [t.token_ids for t in together] == [t.token_ids for t in alone]


@pytest.mark.parametrize("method, side", [("sd", "ref"), ("base", "base")])
def test_greedy_rules_equal_hf_generate(method, side):
    model = make_model(VOCAB, seed=11, eos_id=EOS, eos_bias=0.6)
    refs, bases = random_prompts(3, 4, 4, 30), random_prompts(4, 4, 1, 12)
    traces = decode_pairs(model, refs, bases, build_rule(method), [EOS], 25, PAD)
    for ref, base, trace in zip(refs, bases, traces, strict=True):
        prompt = torch.tensor([ref if side == "ref" else base])
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=25, eos_token_id=EOS, pad_token_id=PAD)
        expected = out[0, prompt.shape[1]:].tolist()
        if EOS in expected:
            expected = expected[: expected.index(EOS) + 1]
        assert trace.token_ids == expected


def test_statistics_describe_the_chosen_token():
    model = make_model(VOCAB, seed=2, eos_id=EOS)
    trace = decode_pairs(model, [[5, 6, 7, 8]], [[9, 10]], build_rule("sd"), [EOS], 10, PAD)[0]
    assert trace.ref_rank == [1] * len(trace.token_ids)  # sd always emits the reference top-1
    assert all(0 < p <= 1 for p in trace.p_base + trace.p_ref)
    assert all(h >= 0 for h in trace.base_entropy)
    assert all(len(r) == 3 and min(r) >= 1 for r in trace.base_top3_ref_rank)


def test_rank_in_breaks_exact_ties_toward_the_lower_id():
    from dasd.decoding.engine import rank_in
    logprobs = torch.log(torch.tensor([[0.1, 0.3, 0.1, 0.3, 0.2],
                                       [0.5, 0.2, 0.15, 0.1, 0.05]]))
    tokens = torch.tensor([[3, 1, 2, 4], [0, 4, 2, 1]])
    order = torch.sort(logprobs, dim=-1, descending=True, stable=True).indices
    expected = torch.stack([(order[r][None, :] == tokens[r][:, None]).int().argmax(-1) + 1
                            for r in range(2)])
    assert rank_in(logprobs, tokens).tolist() == expected.tolist() == [[2, 1, 5, 3],
                                                                       [1, 5, 3, 2]]


@pytest.mark.parametrize("seed", range(4))
def test_guard_zero_decodes_sds_tokens_and_guard_one_the_papers(seed, one_thread):
    from tests.decoding.test_draft_verify import case  # models on which DASD departs from sd

    model, refs, bases, eos_ids, max_new = case(seed)

    def decode(method, **settings):
        rule = build_rule(method, **settings)
        return [(t.token_ids, t.categories)
                for t in decode_pairs(model, refs, bases, rule, eos_ids, max_new, PAD)]

    sd, paper = decode("sd"), decode("dasd")
    assert [t for t, _ in decode("dasd", guard=0.0)] == [t for t, _ in sd]
    assert decode("dasd", guard=1.0) == paper
    assert [t for t, _ in paper] != [t for t, _ in sd]
