"""Draft-and-verify gives the step engine's traces, and its round logic on hand-made tensors."""

import json
import math
from pathlib import Path

import pytest
import torch

from dasd.decoding.backend import Draft, RowRound, verify_round
from dasd.decoding.draft_verify import ChunkSize, decode_pairs_draft_verify
from dasd.decoding.engine import decode_pairs
from dasd.decoding.rules import build_rule
from dasd.decoding.rules.common import CONSISTENT, GUARDED, HARD, RESERVED, Selection
from dasd.errors import DasdError
from tests.conftest import make_model

EOS, PAD = 1, 0


def random_prompts(seed: int, n: int, low: int, high: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (length,), generator=g).tolist() for length in lengths]


def assert_same_traces(got, expected):
    for g, e in zip(got, expected, strict=True):
        assert g.token_ids == e.token_ids
        assert g.categories == e.categories
        assert g.finish_reason == e.finish_reason
        assert g.ref_rank == e.ref_rank
        assert g.base_top3_ref_rank == e.base_top3_ref_rank
        assert g.p_base == pytest.approx(e.p_base, rel=1e-5)
        assert g.p_ref == pytest.approx(e.p_ref, rel=1e-5)
        assert g.base_entropy == pytest.approx(e.base_entropy, rel=1e-5, abs=1e-6)


# (vocab, layers, eos_bias, batch, max_new_tokens, sharpness, eos_ids): small and large
# vocabularies, peaked heads (sharpness) so that DASD often picks another candidate than the
# reference top-1, several stop ids so that rows stop at different steps inside chunks,
# lengths that are not multiples of the chunk sizes.
MULTI_EOS = [EOS, 5, 6, 7]
MODELS = [(64, 2, 0.0, 5, 24, 30, MULTI_EOS), (48, 1, 0.3, 6, 30, 30, MULTI_EOS),
          (97, 2, 0.2, 1, 19, 40, [EOS]), (64, 1, 0.4, 4, 13, 40, MULTI_EOS),
          (80, 2, 0.3, 3, 26, 50, [EOS]), (64, 2, 0.25, 1, 40, 30, [EOS]),
          (64, 2, 0.2, 4, 30, 30, MULTI_EOS), (64, 2, 0.5, 3, 20, 12, [EOS])]


def case(seed: int):
    vocab, layers, eos_bias, batch, max_new, sharpness, eos_ids = MODELS[seed]
    model = make_model(vocab, seed=seed, eos_id=EOS, eos_bias=eos_bias, layers=layers,
                       sharpness=sharpness)
    refs = random_prompts(seed, batch, 4, 30, vocab)
    bases = random_prompts(seed + 100, batch, 1, 12, vocab)
    return model, refs, bases, eos_ids, max_new


RULES = [("dasd", {}), ("dasd", {"fallback": "base"}), ("dasd", {"top_k": 2, "tau": 0.4}),
         ("dasd", {"top_k": 9, "tau": 0.1}), ("dasd", {"guard": 0.5}),
         ("dasd", {"guard": 0.3, "fallback": "base"}), ("sd", {}), ("base", {})]


@pytest.mark.parametrize("seed", range(len(MODELS)))
@pytest.mark.parametrize("method, settings", RULES)
def test_draft_verify_equals_step_engine(seed, method, settings, one_thread):
    model, refs, bases, eos_ids, max_new = case(seed)
    rule = build_rule(method, **settings)
    expected = decode_pairs(model, refs, bases, rule, eos_ids, max_new, PAD)
    for chunk in (1, 2, 7, None):
        got = decode_pairs_draft_verify(model, refs, bases, rule, eos_ids, max_new, PAD,
                                        chunk_size=chunk)
        assert_same_traces(got, expected)


def test_the_equivalence_cases_cover_eos_length_and_rejections(one_thread):
    """The cases above must contain what they claim: rows that stop at EOS inside a chunk
    of 7, rows cut by a length limit inside one, and DASD steps whose token is not the
    reference top-1 (rejected drafts)."""
    finishes, off_draft = set(), 0
    for seed in range(len(MODELS)):
        model, refs, bases, eos_ids, max_new = case(seed)
        for trace in decode_pairs(model, refs, bases, build_rule("dasd"), eos_ids, max_new, PAD):
            finishes.add((trace.finish_reason, len(trace.token_ids) % 7 != 0))
            off_draft += sum(rank > 1 for rank in trace.ref_rank)
    assert {("eos", True), ("length", True)} <= finishes
    assert off_draft >= 20
    guarded = 0
    for seed in range(len(MODELS)):
        model, refs, bases, eos_ids, max_new = case(seed)
        for trace in decode_pairs(model, refs, bases, build_rule("dasd", guard=0.5), eos_ids,
                                  max_new, PAD):
            guarded += trace.categories.count(GUARDED)
    assert guarded >= 10, "the guard cases must contain guarded steps"


def test_batch_of_one_equals_batch_of_many_and_counts_every_token(one_thread):
    model = make_model(64, seed=5, eos_id=EOS, eos_bias=0.5)
    refs, bases = random_prompts(1, 6, 4, 30, 64), random_prompts(2, 6, 1, 12, 64)
    rule, counted = build_rule("dasd"), []
    together = decode_pairs_draft_verify(model, refs, bases, rule, [EOS, 7], 20, PAD,
                                         on_step=counted.append)
    alone = [decode_pairs_draft_verify(model, [r], [b], rule, [EOS, 7], 20, PAD)[0]
             for r, b in zip(refs, bases, strict=True)]
    assert [t.token_ids for t in together] == [t.token_ids for t in alone]
    assert sum(counted) == sum(len(t.token_ids) for t in together)


def test_no_tokens_and_no_examples():
    model = make_model(32, seed=0, eos_id=EOS)
    rule = build_rule("dasd")
    assert decode_pairs_draft_verify(model, [], [], rule, [EOS], 10, PAD) == []
    trace = decode_pairs_draft_verify(model, [[5, 6]], [[7]], rule, [EOS], 0, PAD)[0]
    assert trace.token_ids == [] and trace.finish_reason == "length"


def test_rules_without_the_guarantee_are_refused():
    class SamplingRule:  # no supports_draft_verify
        def select(self, ref_logprobs, base_logprobs):
            return Selection(ref_logprobs.argmax(-1), ref_logprobs.argmax(-1))

    model = make_model(32, seed=0, eos_id=EOS)
    with pytest.raises(DasdError, match="engine 'step'"):
        decode_pairs_draft_verify(model, [[5]], [[6]], SamplingRule(), [EOS], 4, PAD)
    with pytest.raises(DasdError, match="engine 'step'"):
        decode_pairs_draft_verify(model, [[5]], [[6]], build_rule("dasd-sample"), [EOS], 4, PAD)


def test_chunk_size_follows_the_acceptance_rate():
    # cost per emitted token (L + 1) / (1 + q + ... + q^(L-1)), by hand at q = 0.9:
    # L=3: 4 / 2.71 = 1.476, L=4: 5 / 3.439 = 1.454, L=5: 6 / 4.095 = 1.465
    chunk = ChunkSize()
    assert chunk.size == 4
    for _ in range(40):                                # every draft accepted: q -> 1
        chunk.update([RowRound([5] * chunk.size, [0] * chunk.size)] * 3)
    assert chunk.size == 16
    for _ in range(40):                                # every first draft rejected: q -> 0
        chunk.update([RowRound([5], [1], rejected=True)] * 2)
    assert chunk.size == 1
    fixed = ChunkSize(3)
    fixed.update([RowRound([5], [1], rejected=True)])
    assert fixed.size == 3
    with pytest.raises(DasdError, match="chunk_size"):
        ChunkSize(0)


def logprobs(*rows: list[float]) -> torch.Tensor:
    """Normalised log-probabilities from rows of probabilities."""
    return torch.tensor(rows, dtype=torch.float32).log()


def test_round_accepts_up_to_the_first_disagreement_and_emits_the_rules_token():
    # 4 tokens, 3 drafted positions; the draft is the reference top-1 at each position.
    ref = torch.stack([logprobs([0.1, 0.6, 0.25, 0.05], [0.1, 0.5, 0.3, 0.1],
                                [0.7, 0.1, 0.1, 0.1])])
    base = torch.stack([logprobs([0.1, 0.5, 0.3, 0.1],     # p_base(1) = 0.5: keep draft 1
                                 [0.1, 0.1, 0.7, 0.1],     # p_base(1) = 0.1 < 0.2: take 2
                                 [0.7, 0.1, 0.1, 0.1])])   # never reached
    draft = Draft(torch.tensor([[1, 1, 0]]), ref, torch.tensor([3]))
    (row,) = verify_round(build_rule("dasd"), draft, base, room=[10], eos_ids=[3])
    assert row.tokens == [1, 2] and row.rejected
    assert row.categories == [CONSISTENT, RESERVED]
    assert [s[0] for s in row.stats] == pytest.approx([0.5, 0.7])     # p_base
    assert [s[1] for s in row.stats] == pytest.approx([0.6, 0.3])     # p_ref
    assert [int(s[2]) for s in row.stats] == [1, 2]                    # ref rank

    (sd_row,) = verify_round(build_rule("sd"), draft, base, room=[10], eos_ids=[3])
    assert sd_row.tokens == [1, 1, 0] and not sd_row.rejected          # sd never disagrees
    assert sd_row.categories == [CONSISTENT, HARD, CONSISTENT]
    (capped,) = verify_round(build_rule("sd"), draft, base, room=[2], eos_ids=[3])
    assert capped.tokens == [1, 1]                                     # length limit
    (stopped,) = verify_round(build_rule("sd"), draft, base, room=[10], eos_ids=[1])
    assert stopped.tokens == [1]                                       # EOS ends the row


def test_round_handles_rows_of_different_lengths():
    uniform = logprobs(*[[0.25] * 4] * 2)
    ref = torch.stack([logprobs([0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]),
                       logprobs([0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7])])
    base = torch.stack([ref[0], uniform])
    draft = Draft(torch.tensor([[2, 3], [2, 3]]), ref, lengths=torch.tensor([2, 1]))
    first, second = verify_round(build_rule("dasd"), draft, base, room=[5, 5], eos_ids=[0])
    assert first.tokens == [2, 3]
    assert second.tokens == [2]                                # only one drafted position
    assert second.stats[0][3] == pytest.approx(math.log(4))   # uniform base entropy


def test_generate_with_the_draft_verify_engine_writes_the_step_engines_rows(tmp_path):
    from dasd.decoding.generate import GenerateConfig, generate
    from tests.conftest import make_tokenizer

    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=3, eos_id=tokenizer.eos_token_id)
    rows = {}
    for engine in ("step", "draft-verify"):
        config = GenerateConfig(model="unused", task="arith", limit=3, max_new_tokens=12,
                                batch_size=2, engine=engine, out=str(tmp_path / f"{engine}.jsonl"))
        generate(config, model=model, tokenizer=tokenizer)
        rows[engine] = [json.loads(line) for line in Path(config.out).read_text().splitlines()]
    assert [r["completion_ids"] for r in rows["step"]] == [
        r["completion_ids"] for r in rows["draft-verify"]]
    assert [r["tokens"]["category"] for r in rows["step"]] == [
        r["tokens"]["category"] for r in rows["draft-verify"]]
    with pytest.raises(DasdError, match="HintRule cannot use the draft-verify engine"):
        GenerateConfig(method="hint", engine="draft-verify")
