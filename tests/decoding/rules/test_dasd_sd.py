"""Selection rules against hand-built distributions."""

import math

import pytest
import torch

from dasd.decoding.rules import build_rule
from dasd.decoding.rules.common import (
    BASE_SELECTED,
    CONSISTENT,
    GUARDED,
    HARD,
    RESERVED,
    ranked_top_k,
)
from dasd.errors import DasdError


def logprobs(*rows: list[float]) -> torch.Tensor:
    probs = torch.tensor(rows, dtype=torch.float64)
    return torch.log(probs / probs.sum(-1, keepdim=True))


def select(ref, base, **settings):
    out = build_rule("dasd", **settings).select(logprobs(ref), logprobs(base))
    return int(out.tokens[0]), int(out.categories[0])


def test_first_candidate_passes_and_agrees_is_consistent():
    assert select([0.6, 0.3, 0.1, 0.0], [0.5, 0.3, 0.2, 0.0]) == (0, CONSISTENT)


def test_first_candidate_passes_but_base_prefers_other_is_reserved():
    # ref top-1 is token 1 (p_base 0.3 >= 0.2) while base top-1 is token 0
    assert select([0.1, 0.6, 0.3, 0.0], [0.5, 0.3, 0.2, 0.0]) == (1, RESERVED)


def test_later_candidate_passes():
    # ref order: 2, 1, 0, 3
    token, category = select([0.2, 0.3, 0.5, 0.0], [0.1, 0.25, 0.05, 0.6])
    assert (token, category) == (1, RESERVED)  # token 2 fails, token 1 passes (0.25 >= 0.2)


def test_candidate_outside_top_k_is_never_chosen():
    # only token 3 passes for the base, but it is the reference's 4th choice; K=3
    ref, base = [0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]
    assert select(ref, base, top_k=3) == (0, HARD)
    assert select(ref, base, top_k=4) == (3, RESERVED)


def test_none_passes_ref_fallback_emits_reference_top1():
    assert select([0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7], top_k=3) == (0, HARD)


def test_none_passes_base_fallback_emits_base_top1():
    out = select([0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7], top_k=3, fallback="base")
    assert out == (3, BASE_SELECTED)


def test_consistent_even_when_shared_top1_is_below_tau():
    # with tau 0.5 no base probability passes, but both top-1s are token 0: consistent
    ref, base = [0.7, 0.1, 0.1, 0.1, 0.0], [0.3, 0.2, 0.2, 0.2, 0.1]
    assert select(ref, base, tau=0.5) == (0, CONSISTENT)
    assert select(ref, base, tau=0.5, fallback="base") == (0, CONSISTENT)


def test_threshold_is_inclusive():
    assert select([0.1, 0.9], [0.5, 0.5], tau=0.5) == (1, RESERVED)


def test_ties_are_broken_by_lower_token_id():
    # tokens 1 and 3 tie for the reference top-1: token 1 is the first candidate
    assert select([0.1, 0.4, 0.1, 0.4], [0.1, 0.45, 0.0, 0.45]) == (1, CONSISTENT)
    assert ranked_top_k(logprobs([0.1, 0.4, 0.1, 0.4]), 4).tolist() == [[1, 3, 0, 2]]


def test_top_k_larger_than_vocabulary():
    assert select([0.5, 0.3, 0.2], [0.05, 0.05, 0.9], top_k=100) == (2, RESERVED)


def test_batch_rows_are_independent():
    rule = build_rule("dasd", top_k=3)
    ref = logprobs([0.6, 0.3, 0.1, 0.0], [0.5, 0.3, 0.2, 0.0])
    base = logprobs([0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7])
    out = rule.select(ref, base)
    assert out.tokens.tolist() == [0, 0] and out.categories.tolist() == [CONSISTENT, HARD]


def test_sd_and_base_rules_are_greedy_and_labelled():
    ref, base = logprobs([0.1, 0.6, 0.3, 0.0]), logprobs([0.5, 0.1, 0.2, 0.2])
    sd = build_rule("sd").select(ref, base)
    assert (int(sd.tokens[0]), int(sd.categories[0])) == (1, HARD)  # p_base 0.1 < 0.2
    base_out = build_rule("base").select(ref, base)
    assert (int(base_out.tokens[0]), int(base_out.categories[0])) == (0, BASE_SELECTED)


@pytest.mark.parametrize("settings, message", [
    ({"tau": 0.0}, "tau must be in (0, 1]"),
    ({"tau": 1.5}, "tau must be in (0, 1]"),
    ({"tau": math.nan}, "tau must be in (0, 1]"),
    ({"top_k": 0}, "top_k must be an integer >= 1"),
    ({"fallback": "both"}, "'fallback' must be one of ref, base"),
])
def test_impossible_settings_are_refused(settings, message):
    with pytest.raises(DasdError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_rule("dasd", **settings)


def test_unknown_method_suggests_a_name():
    with pytest.raises(DasdError, match="did you mean 'dasd'"):
        build_rule("dsad")


@pytest.mark.parametrize("seed", range(5))
def test_ranked_top_k_equals_a_stable_full_sort_with_many_ties(seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 4, (64, 50), generator=g).double()  # 4 levels: ties everywhere
    for k in (1, 3, 6, 50, 80):
        expected = torch.sort(values, dim=-1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(ranked_top_k(values, k), expected)


# --- the confidence guard -------------------------------------------------------------------

GUARD_CASE = ([0.03, 0.95, 0.02, 0.0], [0.5, 0.1, 0.4, 0.0])  # ref top-1 is token 1 (0.95)


def test_guard_keeps_a_confident_reference_top1_the_base_model_rejects():
    # token 1 fails tau (p_base 0.1) and token 0 passes: the paper's rule emits token 0
    assert select(*GUARD_CASE) == (0, RESERVED)
    assert select(*GUARD_CASE, guard=0.9) == (1, GUARDED)
    assert select(*GUARD_CASE, guard=0.95) == (0, RESERVED)  # strictly greater than gamma


def test_guard_category_only_where_the_paper_would_emit_another_token():
    ref, base = [0.95, 0.03, 0.02, 0.0], [0.1, 0.1, 0.1, 0.7]  # nothing in ref top-3 passes
    assert select(ref, base, top_k=3, guard=0.5) == (0, HARD)  # the ref fallback agrees
    assert select(ref, base, top_k=3, fallback="base") == (3, BASE_SELECTED)
    assert select(ref, base, top_k=3, fallback="base", guard=0.5) == (0, GUARDED)
    # the reference top-1 passes anyway: the guard changes nothing
    assert select([0.1, 0.9], [0.5, 0.5], guard=0.0) == (1, RESERVED)
    assert select([0.9, 0.1], [0.6, 0.4], guard=0.0) == (0, CONSISTENT)


def paper_rule(ref_logprobs, base_logprobs, top_k=6, tau=0.2, fallback="ref"):
    """The paper's rule written out step by step (Section 3.3), with its categories."""
    tokens, categories = [], []
    for ref, base in zip(ref_logprobs, base_logprobs, strict=True):
        order = sorted(range(len(ref)), key=lambda t: (-float(ref[t]), t))[:top_k]
        base_top1 = max(range(len(base)), key=lambda t: (float(base[t]), -t))
        passing = [t for t in order if math.exp(base[t]) >= tau]
        if passing:
            token, category = passing[0], RESERVED
        else:
            token = order[0] if fallback == "ref" else base_top1
            category = HARD if fallback == "ref" else BASE_SELECTED
        tokens.append(token)
        categories.append(CONSISTENT if order[0] == base_top1 else category)
    return tokens, categories


def random_logprobs(seed, rows=64, vocab=12, sharpness=4.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g, dtype=torch.float64) * sharpness
    return torch.log_softmax(logits, -1)


@pytest.mark.parametrize("settings", [{}, {"fallback": "base"}, {"top_k": 2, "tau": 0.4},
                                      {"top_k": 9, "tau": 0.1}])
@pytest.mark.parametrize("seed", range(3))
def test_guard_one_is_the_papers_rule_and_guard_zero_is_sd(settings, seed):
    ref, base = random_logprobs(seed), random_logprobs(seed + 50)
    paper = build_rule("dasd", guard=1.0, **settings).select(ref, base)
    assert (paper.tokens.tolist(), paper.categories.tolist()) == paper_rule(ref, base,
                                                                            **settings)
    assert paper.tokens.tolist() != ref.argmax(-1).tolist(), "the case must depart from sd"
    sd = build_rule("sd").select(ref, base)
    guarded = build_rule("dasd", guard=0.0, **settings).select(ref, base)
    assert guarded.tokens.tolist() == sd.tokens.tolist()
    changed = paper.tokens != guarded.tokens
    assert bool(changed.any()) and (guarded.categories[changed] == GUARDED).all()
    assert (guarded.categories[~changed] == paper.categories[~changed]).all()


@pytest.mark.parametrize("guard", [-0.1, 1.5])
def test_guard_outside_zero_one_is_refused(guard):
    with pytest.raises(DasdError, match=r"guard must be in \[0, 1\]"):
        build_rule("dasd", guard=guard)


def test_new_settings_are_left_out_of_records_at_their_default():
    from dasd.config import settings_dict
    from dasd.decoding.rules import rule_settings

    assert rule_settings(build_rule("dasd")) == {"top_k": 6, "tau": 0.2, "fallback": "ref"}
    assert settings_dict(build_rule("dasd", guard=0.9))["guard"] == 0.9
    assert "guard" not in settings_dict(build_rule("dasd", guard=1.0))
