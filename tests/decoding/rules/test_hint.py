"""Hint-decoding: the mixing formula by hand, the rule's state, and the engine end to end."""

import json
import math

import pytest
import torch
from transformers import TopPLogitsWarper

from dasd.config import build_config
from dasd.decoding.engine import decode_pairs
from dasd.decoding.generate import GenerateConfig, generate
from dasd.decoding.rules import build_rule
from dasd.decoding.rules.common import (
    BASE_SELECTED,
    CONSISTENT,
    HARD,
    RESERVED,
    label_emitted,
)
from dasd.decoding.rules.hint import (
    hint_lambda,
    mix_logprobs,
    nucleus_sample,
    row_seed,
)
from dasd.errors import DasdError
from tests.conftest import make_model
from tests.decoding.test_engine import EOS, PAD, VOCAB, random_prompts

LN2 = math.log(2)


def logprobs(*rows: list[float]) -> torch.Tensor:
    probs = torch.tensor(rows, dtype=torch.float64)
    return torch.log(probs / probs.sum(-1, keepdim=True))


# ref: entropy 1.75 ln 2 nats, log V = ln 4 = 2 ln 2, so H / log V = 0.875
REF = [0.5, 0.25, 0.125, 0.125]
BASE = [0.125, 0.125, 0.25, 0.5]


@pytest.mark.parametrize("probs, beta, expected", [
    (REF, 1.0, 0.875), (REF, 0.5, 0.4375), (REF, 3.0, 1.0), (REF, 0.0, 0.0),
    ([0.25] * 4, 0.5, 0.5),             # uniform: H = log V
    ([1.0, 0.0, 0.0, 0.0], 3.0, 0.0),   # certain: H = 0 (0 log 0 counts as 0)
])
def test_lambda_is_clamped_normalised_reference_entropy(probs, beta, expected):
    assert hint_lambda(logprobs(probs), beta).item() == pytest.approx(expected, abs=1e-12)


def test_mixed_logits_by_hand():
    # in log2 units ref = [-1, -2, -3, -3], base = [-3, -3, -2, -1]
    ref, base = logprobs(REF, REF), logprobs(BASE, BASE)
    mixed = mix_logprobs(ref, base, torch.tensor([0.4375, 0.875]))
    # 0.5625 * ref + 0.4375 * base, and 0.125 * ref + 0.875 * base
    expected = torch.tensor([[-1.875, -2.4375, -2.5625, -2.125],
                             [-2.75, -2.875, -2.125, -1.25]], dtype=torch.float64) * LN2
    assert torch.allclose(mixed, expected, atol=1e-12)
    assert mixed.argmax(-1).tolist() == [0, 3]  # low lambda follows ref, high lambda base


def test_mix_end_points_are_exact_even_with_impossible_tokens():
    ref, base = logprobs([0.5, 0.5, 0.0]), logprobs([0.0, 0.2, 0.8])
    assert torch.equal(mix_logprobs(ref, base, torch.tensor([0.0])), ref)
    assert torch.equal(mix_logprobs(ref, base, torch.tensor([1.0])), base)


@pytest.mark.parametrize("candidates", [(2,), (1, 2), (64,)])  # (1, 2): twice too narrow
@pytest.mark.parametrize("u, token", [(0.5, 0), (0.69, 1), (0.93, 1), (0.94, 2), (0.999, 2)])
def test_nucleus_then_temperature_by_hand(u, token, candidates):
    # top_p 0.9 keeps {0, 1, 2} (the 0.05 tail is cut); T 0.5 squares the survivors:
    # 0.25, 0.09, 0.0225 -> cdf 0.68966, 0.93793, 1
    logits = logprobs([0.15, 0.3, 0.5, 0.05])[:, [2, 1, 0, 3]]  # unsorted in memory
    assert nucleus_sample(logits, 0.5, 0.9, torch.tensor([u]), candidates).item() == token


@pytest.mark.parametrize("candidates", [(3,), (2, 6), (64,)])
def test_sampled_distribution_equals_transformers_top_p_then_temperature(candidates):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 50, generator=g, dtype=torch.float64) * 2
    expected = torch.softmax(TopPLogitsWarper(0.8)(None, logits) / 0.7, dim=-1)
    n = 20000
    grid = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # evenly spread uniforms
    for row in range(4):
        tokens = nucleus_sample(logits[row].expand(n, 50), 0.7, 0.8, grid, candidates)
        freq = torch.bincount(tokens, minlength=50).double() / n
        assert torch.allclose(freq, expected[row], atol=2 / n)


def test_temperature_zero_is_argmax_and_top_p_one_keeps_the_tail():
    logits = logprobs([0.3, 0.5, 0.15, 0.05])
    assert nucleus_sample(logits, 0.0, 0.5, None).item() == 1
    assert nucleus_sample(logits, 1.0, 1.0, torch.tensor([0.96])).item() == 3  # cdf .95 -> 1


def test_sampling_frequencies_match_the_tempered_nucleus():
    g = torch.Generator().manual_seed(0)
    uniforms = torch.rand(20000, generator=g, dtype=torch.float64)
    logits = logprobs([0.5, 0.3, 0.15, 0.05]).expand(20000, 4)
    counts = torch.bincount(nucleus_sample(logits, 0.5, 0.9, uniforms), minlength=4)
    assert (counts / 20000).tolist() == pytest.approx([0.68966, 0.24828, 0.06207, 0.0],
                                                      abs=0.01)


def test_emitted_token_categories():
    ref = logprobs(*[[0.6, 0.3, 0.1, 0.0]] * 4)
    base = logprobs([0.5, 0.3, 0.15, 0.05], [0.1, 0.6, 0.25, 0.05],
                    [0.1, 0.6, 0.25, 0.05], [0.1, 0.6, 0.25, 0.05])
    tokens = torch.tensor([0, 1, 2, 3])
    # both top-1s; base top-1 only; p_base 0.25 >= 0.2; p_base 0.05 < 0.2
    assert label_emitted(tokens, ref, base, 0.2).tolist() == [
        CONSISTENT, BASE_SELECTED, RESERVED, HARD]


def stepper(rule, steps, decode=None):
    """Feed one row through `rule` with the given (ref, base) distributions per step."""
    rule.start(["row"], decode)
    return [rule.select(logprobs(r), logprobs(b)).tokens.item() for r, b in steps]


def test_first_token_comes_from_the_reference():
    rule = build_rule("hint", beta=3.0, temperature=0.0, marker="")
    # lambda = clamp(3 * 0.875) = 1 on every step but the first
    assert stepper(rule, [(REF, BASE)] * 3) == [0, 3, 3]


PIECES = {0: "a", 1: "\\box", 2: "ed{", 3: "7", 4: "}"}


def test_after_the_marker_only_the_base_model_decodes():
    rule = build_rule("hint", beta=0.0, temperature=0.0)  # otherwise pure reference
    ref_says = [[0.1, 0.9, 0, 0, 0], [0.1, 0, 0.9, 0, 0], [0.9, 0, 0, 0.1, 0]]
    base_says = [0.1, 0.1, 0.1, 0.6, 0.1]
    steps = [(r, base_says) for r in ref_says] + [(ref_says[2], base_says)]
    decode = lambda ids: "".join(PIECES[i] for i in ids)  # noqa: E731
    # "\box" + "ed{" completes the marker across two tokens; then base top-1 (3) twice
    assert stepper(rule, steps, decode) == [1, 2, 3, 3]
    assert stepper(build_rule("hint", beta=0.0, temperature=0.0, marker=""), steps) == [1, 2, 0, 0]


def test_marker_needs_a_decode_function():
    with pytest.raises(DasdError, match="needs a decode function"):
        build_rule("hint").start(["row"], None)


@pytest.mark.parametrize("settings, message", [
    ({"beta": -1.0}, "beta must be >= 0"),
    ({"beta": math.inf}, "beta must be >= 0"),
    ({"temperature": -0.1}, "temperature must be >= 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
])
def test_impossible_settings_are_refused(settings, message):
    with pytest.raises(DasdError, match=message):
        build_rule("hint", **settings)


def test_row_seed_is_stable_and_separates_keys():
    assert row_seed(0, "a") == row_seed(0, "a")
    assert len({row_seed(0, "a"), row_seed(1, "a"), row_seed(0, "b")}) == 3


def decode(model, refs, bases, rule, **kwargs):
    return decode_pairs(model, refs, bases, rule, [EOS], 24, PAD, **kwargs)


@pytest.mark.parametrize("seed", range(3))
def test_beta_zero_greedy_equals_sd(seed, one_thread):
    model = make_model(VOCAB, seed=seed, eos_id=EOS, eos_bias=0.3 * seed)
    refs, bases = random_prompts(seed, 5, 4, 30), random_prompts(seed + 100, 5, 1, 12)
    sd = decode(model, refs, bases, build_rule("sd"))
    hint = decode(model, refs, bases, build_rule("hint", beta=0.0, temperature=0.0, marker=""))
    assert [t.token_ids for t in hint] == [t.token_ids for t in sd]
    assert [t.categories for t in hint] == [t.categories for t in sd]


def test_beta_zero_sampling_ignores_the_base_context(one_thread):
    model = make_model(VOCAB, seed=4, eos_id=EOS, eos_bias=0.3, sharpness=3.0)
    refs = random_prompts(1, 4, 4, 30)
    rule = build_rule("hint", beta=0.0, temperature=1.0, top_p=0.95, marker="")
    keys = ["a", "b", "c", "d"]
    one = decode(model, refs, random_prompts(2, 4, 1, 12), rule, keys=keys)
    other = decode(model, refs, random_prompts(3, 4, 1, 12), rule, keys=keys)
    assert [t.token_ids for t in one] == [t.token_ids for t in other]
    greedy = decode(model, refs, random_prompts(2, 4, 1, 12), build_rule("sd"))
    assert [t.token_ids for t in one] != [t.token_ids for t in greedy]  # it does sample


def test_beta_mixes_in_the_base_model(one_thread):
    model = make_model(VOCAB, seed=4, eos_id=EOS, sharpness=3.0)
    refs, bases = random_prompts(1, 4, 4, 30), random_prompts(2, 4, 1, 12)
    hint = decode(model, refs, bases, build_rule("hint", beta=3.0, temperature=0.0, marker=""))
    sd = decode(model, refs, bases, build_rule("sd"))
    assert [t.token_ids[0] for t in hint] == [t.token_ids[0] for t in sd]  # first from ref
    assert [t.token_ids for t in hint] != [t.token_ids for t in sd]


def test_sampling_is_seeded(one_thread):
    model = make_model(VOCAB, seed=6, eos_id=EOS, sharpness=3.0)
    refs, bases = random_prompts(5, 4, 4, 30), random_prompts(6, 4, 1, 12)

    def tokens(seed):
        rule = build_rule("hint", temperature=1.0, marker="", seed=seed)
        return [t.token_ids for t in decode(model, refs, bases, rule)]

    assert tokens(0) == tokens(0)
    assert tokens(0) != tokens(1)


def test_batch_of_one_equals_batch_of_n_while_rows_finish(one_thread):
    model = make_model(VOCAB, seed=3, eos_id=EOS, eos_bias=0.9, sharpness=3.0)
    refs, bases = random_prompts(7, 6, 4, 30), random_prompts(8, 6, 1, 12)
    rule = build_rule("hint", temperature=1.0, marker="")
    keys = [f"ex-{i}" for i in range(6)]
    together = decode(model, refs, bases, rule, keys=keys)
    assert len({len(t.token_ids) for t in together}) > 1, "rows must finish at different steps"
    alone = [decode(model, [r], [b], rule, keys=[k])[0]
             for r, b, k in zip(refs, bases, keys, strict=True)]
    assert [t.token_ids for t in together] == [t.token_ids for t in alone]
    by_prompt = [decode(model, [r], [b], rule)[0] for r, b in zip(refs, bases, strict=True)]
    assert [t.token_ids for t in decode(model, refs, bases, rule)] == [
        t.token_ids for t in by_prompt]  # default keys are the prompts themselves


def test_greedy_after_marker_is_the_base_models_argmax(one_thread):
    model = make_model(VOCAB, seed=2, eos_id=EOS, sharpness=3.0)
    ref, base = random_prompts(9, 1, 10, 11)[0], random_prompts(10, 1, 5, 6)[0]
    sd = decode(model, [ref], [base], build_rule("sd"))[0].token_ids
    k = 3  # make the 4th sd token the marker
    names = lambda ids: "".join(f"<{i}>" for i in ids)  # noqa: E731
    rule = build_rule("hint", beta=0.0, temperature=0.0, marker=names([sd[k]]))
    out = decode(model, [ref], [base], rule, decode=names)[0].token_ids
    first = sd.index(sd[k])
    assert out[: first + 1] == sd[: first + 1] and out != sd
    assert len(out) > first + 2, "the test needs tokens after the marker"
    for j in range(first + 1, len(out)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[*base, *out[:j]]])).logits[0, -1]
        assert out[j] == int(logits.argmax())


def run(tmp_path, tiny_model, tokenizer, **overrides):
    settings = {"task": "arith", "limit": 4, "batch_size": 2, "max_new_tokens": 10,
                "method": "hint", "out": str(tmp_path / "hint.jsonl"), **overrides}
    return generate(build_config(GenerateConfig, settings), model=tiny_model,
                    tokenizer=tokenizer)


def test_generate_with_hint_end_to_end(tmp_path, tiny_model, tokenizer, one_thread):
    summary = run(tmp_path, tiny_model, tokenizer)
    rows = [json.loads(line) for line in (tmp_path / "hint.jsonl").read_text().splitlines()]
    assert summary["samples"] == 4 and len(rows) == 4
    assert rows[0]["settings"] == {"beta": 3.0, "temperature": 0.3, "top_p": 0.95,
                                   "marker": "\\boxed{", "seed": 0, "tau": 0.2}
    for row in rows:
        assert row["method"] == "hint"
        assert all(len(v) == len(row["completion_ids"]) for v in row["tokens"].values())
    again = run(tmp_path / "again", tiny_model, tokenizer, batch_size=4)
    assert again["samples"] == 4
    assert (tmp_path / "again" / "hint.jsonl").read_text() == (tmp_path / "hint.jsonl").read_text()
    with pytest.raises(DasdError, match=r"other settings \(settings.beta=3.0->1.0\)"):
        run(tmp_path, tiny_model, tokenizer, beta=1.0)
