"""Sampled DASD (`dasd-sample`) and several samples per problem (`generate --samples n`)."""

import json
from collections import Counter

import pytest

from dasd.config import build_config
from dasd.decoding.engine import decode_pairs
from dasd.decoding.generate import GenerateConfig
from dasd.decoding.rules import build_rule
from dasd.decoding.rules.common import GUARDED, RESERVED
from dasd.errors import DasdError
from dasd.stats import kept_problems, sample_id, split_sample_id
from tests.decoding.rules.test_dasd_sd import logprobs
from tests.decoding.test_draft_verify import case
from tests.decoding.test_generate import run as generate_run

PAD = 0


def draw(ref, base, n, **settings):
    rule = build_rule("dasd-sample", **settings)
    rule.start([f"k{i}" for i in range(n)])
    ref_lp, base_lp = logprobs(*[ref] * n), logprobs(*[base] * n)
    out = rule.select(ref_lp, base_lp)
    return out.tokens.tolist(), out.categories.tolist()


def test_samples_the_passing_candidates_in_proportion_to_p_ref():
    # ref order 1, 2, 0, 3; tokens 2 and 0 pass tau, token 1 (the top-1) does not
    ref, base = [0.2, 0.5, 0.3, 0.0], [0.5, 0.1, 0.4, 0.0]
    tokens, categories = draw(ref, base, 4000, temperature=1.0)
    counts = Counter(tokens)
    assert set(counts) == {0, 2} and set(categories) == {RESERVED}
    assert counts[2] / len(tokens) == pytest.approx(0.3 / 0.5, abs=0.03)
    tokens, _ = draw(ref, base, 4000, temperature=0.5)  # p_ref^2: 0.09 vs 0.04
    assert Counter(tokens)[2] / len(tokens) == pytest.approx(0.09 / 0.13, abs=0.03)


def test_the_guarded_top1_joins_the_pool():
    ref, base = [0.2, 0.7, 0.1, 0.0], [0.5, 0.1, 0.4, 0.0]  # top-1 token 1 fails tau
    tokens, categories = draw(ref, base, 4000, temperature=1.0, guard=0.6)
    counts = Counter(tokens)
    assert counts[1] / len(tokens) == pytest.approx(0.7, abs=0.03)
    assert counts[0] / len(tokens) == pytest.approx(0.2, abs=0.03)
    assert {t: c for t, c in zip(tokens, categories, strict=True)}[1] == GUARDED


def test_empty_pool_takes_the_fallback():
    ref, base = [0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7]
    assert set(draw(ref, base, 50, top_k=3)[0]) == {0}
    assert set(draw(ref, base, 50, top_k=3, fallback="base")[0]) == {3}


@pytest.mark.parametrize("seed", range(3))
def test_temperature_zero_is_dasd(seed, one_thread):
    model, refs, bases, eos_ids, max_new = case(seed)
    for settings in ({}, {"guard": 0.5}):
        greedy = decode_pairs(model, refs, bases, build_rule("dasd", **settings), eos_ids,
                              max_new, PAD)
        sampled = decode_pairs(model, refs, bases,
                               build_rule("dasd-sample", temperature=0.0, **settings),
                               eos_ids, max_new, PAD)
        assert [(t.token_ids, t.categories) for t in sampled] == [
            (t.token_ids, t.categories) for t in greedy]


def test_sampling_is_seeded_per_key_and_batch_independent(one_thread):
    model, refs, bases, eos_ids, max_new = case(0)
    rule = build_rule("dasd-sample", temperature=2.0, tau=0.05)
    keys = [f"p{i}" for i in range(len(refs))]

    def decode(r, b, k, seed=0):
        rule.seed = seed
        return [t.token_ids for t in decode_pairs(model, r, b, rule, eos_ids, max_new, PAD,
                                                  keys=k)]

    together = decode(refs, bases, keys)
    alone = [decode([r], [b], [k])[0] for r, b, k in zip(refs, bases, keys, strict=True)]
    assert together == alone == decode(refs, bases, keys)
    assert together != decode(refs, bases, [f"{k}#s2" for k in keys])
    assert together != decode(refs, bases, keys, seed=1)
    greedy = [t.token_ids for t in decode_pairs(model, refs, bases, build_rule("dasd", tau=0.05),
                                                eos_ids, max_new, PAD)]
    assert together != greedy


def test_bad_settings_are_refused():
    with pytest.raises(DasdError, match="temperature must be >= 0"):
        build_rule("dasd-sample", temperature=-1.0)
    with pytest.raises(DasdError, match="guard must be"):
        build_rule("dasd-sample", guard=2.0)
    with pytest.raises(DasdError, match="needs start"):
        build_rule("dasd-sample").select(logprobs([0.5, 0.5]), logprobs([0.5, 0.5]))


# --- several samples per problem --------------------------------------------------------------

def test_sample_ids_round_trip():
    assert sample_id("gsm8k-train-3", 1) == "gsm8k-train-3"
    assert split_sample_id(sample_id("gsm8k-train-3", 4)) == ("gsm8k-train-3", 4)
    assert split_sample_id("x#sy") == ("x#sy", 1) and split_sample_id("x#s1") == ("x#s1", 1)
    rows = [{"id": "a", "correct": False}, {"id": "b", "correct": False},
            {"id": "a#s2", "correct": True}, {"id": "b#s2", "correct": False}]
    assert kept_problems(rows) == (1, 2)


def run(tmp_path, tiny_model, tokenizer, name="out.jsonl", **overrides):
    return generate_run(tmp_path, tiny_model, tokenizer, name,
                        **{"limit": 3, "batch_size": 2, "max_new_tokens": 8, **overrides})


def lines(path):
    return path.read_text().splitlines()


def test_samples_write_n_rows_per_problem_and_extend_a_single_sample_file(
        tmp_path, tiny_model, tokenizer, one_thread):
    settings = {"method": "dasd-sample", "temperature": 1.5, "tau": 0.02}
    run(tmp_path, tiny_model, tokenizer, "one.jsonl", **settings)
    summary = run(tmp_path, tiny_model, tokenizer, "three.jsonl", samples=3, **settings)
    rows = [json.loads(line) for line in lines(tmp_path / "three.jsonl")]
    ids = [f"arith-train-{i:05d}" for i in range(3)]
    assert [r["id"] for r in rows] == ids + [f"{i}#s{k}" for k in (2, 3) for i in ids]
    assert lines(tmp_path / "three.jsonl")[:3] == lines(tmp_path / "one.jsonl")
    assert len({tuple(r["completion_ids"]) for r in rows}) > 3  # the samples differ
    assert (summary["samples"], summary["sampled_problems"]) == (9, 3)
    # a larger `samples` resumes the single-sample file, as a larger limit would
    run(tmp_path, tiny_model, tokenizer, "one.jsonl", samples=3, **settings)
    assert lines(tmp_path / "one.jsonl") == lines(tmp_path / "three.jsonl")


def test_default_rows_and_fingerprints_do_not_mention_the_new_settings(
        tmp_path, tiny_model, tokenizer):
    from dasd.config import outcome

    config = build_config(GenerateConfig, {"task": "arith", "limit": 2})
    assert "samples" not in outcome(config) and "samples" not in outcome(config, "stage")
    assert config.settings == {"top_k": 6, "tau": 0.2, "fallback": "ref"}
    assert outcome(build_config(GenerateConfig, {"samples": 2}), "stage")["samples"] == 2
    with pytest.raises(DasdError, match="samples must be an integer >= 1"):
        build_config(GenerateConfig, {"samples": 0})


def test_kept_at_n_is_at_least_the_single_sample_rate():
    rows = [{"id": sample_id(f"p{i}", k), "correct": (i + k) % 3 == 0}
            for k in (1, 2, 3, 4) for i in range(6)]
    solved, problems = kept_problems(rows)
    single = sum(r["correct"] for r in rows[:6])
    assert (problems, solved, single) == (6, 6, 2)
