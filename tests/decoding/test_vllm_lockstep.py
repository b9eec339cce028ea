"""DASD in lockstep inside one vLLM engine (`dasd.decoding.vllm_lockstep`), without vLLM:
the pairing bookkeeping driven by hand-made BatchUpdates, the forcing step on CPU tensors,
and lockstep decoding on a fake persistent batch, token-exact against `decode_pairs` for
every rule, with desyncs injected and recovered."""

from __future__ import annotations

import pytest
import torch

from dasd.decoding.engine import decode_pairs
from dasd.decoding.rules import build_rule
from dasd.decoding.vllm_lockstep import (
    BASE,
    REF,
    LockstepCore,
    PairBook,
    PairParams,
    PairRules,
    assemble,
    decode_pairs_lockstep,
    force,
)
from tests.conftest import make_model
from tests.decoding.fake_vllm_batch import BatchUpdate, FakePersistentBatch
from tests.decoding.fake_vllm_batch import MoveDirectionality as Move
from tests.decoding.test_draft_verify import assert_same_traces, random_prompts

EOS, PAD = 1, 0


def member(pair: int, role: str, max_tokens: int = 8) -> PairParams:
    return PairParams(max_tokens, {"dasd_pair": {"pair": pair, "role": role}})


def update(removed=(), added=(), moved=(), size=0) -> BatchUpdate:
    return BatchUpdate(size, list(removed), list(added), list(moved))


def test_the_book_follows_adds_removes_moves_and_swaps():
    book, out = PairBook(), {name: [] for name in ("r0", "b0", "r1", "b1")}
    book.update(update(added=[(0, member(0, REF), [], out["r0"]),
                              (1, member(0, BASE), [], out["b0"]),
                              (2, member(1, REF), [], out["r1"]),
                              (3, member(1, BASE), [], out["b1"])]))
    assert book.in_step() == [(0, 0, 1), (1, 2, 3)]
    book.update(update(moved=[(0, 3, Move.SWAP)]))  # a reordering backend swaps two slots
    assert book.in_step() == [(1, 2, 0), (0, 3, 1)]
    book.update(None)  # no change this step
    assert book.in_step() == [(1, 2, 0), (0, 3, 1)]
    out["r1"].append(5)  # one side ran ahead: out of step
    assert book.in_step() == [(0, 3, 1)]
    out["b1"].append(5)
    book.update(update(removed=[3]))  # pair 0's reference preempted and not replaced
    assert book.in_step() == [(1, 2, 0)]
    # the tail slot condenses into the hole; a slot reused by a request without pairing
    book.update(update(removed=[2], added=[(2, PairParams(4, {}), [], [])],
                       moved=[(1, 3, Move.UNIDIRECTIONAL)]))
    assert book.slots.keys() == {0, 3} and book.in_step() == []
    # pair 0's reference comes back (re-admitted with its output so far) into slot 1
    book.update(update(added=[(1, member(0, REF), [], out["r0"])]))
    assert book.in_step() == [(0, 1, 3)]


def test_force_leaves_one_token_per_row():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -torch.inf, 0.0], [9.0, 9.0, 9.0]])
    force(logits, torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert logits[0].tolist() == [1.0, -torch.inf, -torch.inf]
    assert logits[1].tolist() == [-torch.inf, 0.0, -torch.inf]  # a masked token still wins
    assert logits[2].tolist() == [9.0, 9.0, 9.0]


def test_the_core_forces_both_rows_of_a_pair_to_the_rule_token():
    rule, records = build_rule("dasd", tau=0.3), []
    core = LockstepCore(PairRules(rule, ["k"]), lambda pair, record: records.append(record))
    core.update_state(update(added=[(1, member(0, REF), [], []), (0, member(0, BASE), [], []),
                                    (2, PairParams(4, {}), [], [])]))
    ref = torch.tensor([2.0, 1.9, 0.0, -1.0])
    base = torch.tensor([0.0, 3.0, 0.0, -1.0])
    other = torch.tensor([5.0, 0.0, 0.0, 0.0])
    forced = core.apply(torch.stack([base, ref, other]))
    chosen = rule.select(torch.log_softmax(ref, -1)[None], torch.log_softmax(base, -1)[None])
    token = int(chosen.tokens)
    assert token == 1  # the reference top-1 fails tau in the base context; top-2 passes
    assert forced[0].argmax() == forced[1].argmax() == token
    assert torch.isinf(forced[:2]).sum() == 6 and torch.equal(forced[2], other)
    assert [(r.step, r.token, r.category) for r in records] == [(0, 1, int(chosen.categories))]


def test_a_trace_is_assembled_only_from_consistent_attempts():
    from dasd.decoding.vllm_lockstep import StepRecord

    records = [StepRecord(0, 4, 0, [0.5, 0.6, 1, 0.1, 1, 2, 3]),
               StepRecord(1, EOS, 0, [0.5, 0.6, 1, 0.1, 1, 2, 3])]
    trace = assemble(records, [4, EOS], [4, EOS], [EOS])
    assert trace.token_ids == [4, EOS] and trace.finish_reason == "eos"
    assert assemble(records, [4, EOS], [4, 2], [EOS]) is None  # the two sides differ
    assert assemble(records[:1], [4, EOS], [4, EOS], [EOS]) is None  # a token not selected
    assert assemble(records[::-1], [4, EOS], [4, EOS], [EOS]) is None


RULES = [("dasd", {}), ("dasd", {"guard": 0.5}), ("dasd", {"fallback": "base", "tau": 0.4}),
         ("sd", {}), ("base", {}),
         ("hint", {"beta": 3.0, "temperature": 1.0, "marker": ""}),
         ("dasd-sample", {"temperature": 1.0, "guard": 0.9})]
# (token budget, chunked prefill, slots swapped every n steps): all at once; reordered;
# a budget that chunks prefills and splits pairs across steps
SCHEDULES = [(4096, True, None), (4096, True, 2), (40, True, None), (40, False, 3)]


def case(seed: int):
    model = make_model(64, seed=seed, eos_id=EOS, eos_bias=0.3, sharpness=30)
    refs = random_prompts(seed, 5, 4, 30, 64)
    bases = random_prompts(seed + 100, 5, 1, 12, 64)
    return model, refs, bases


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("method, settings", RULES)
def test_lockstep_equals_the_step_engine(method, settings, schedule, one_thread):
    """Every rule, token for token and statistic for statistic; where the scheduler splits
    pairs, the split pairs are found and decoded again alone."""
    model, refs, bases = case(7)  # pairs ending on EOS and on the length limit
    rule, keys = build_rule(method, seed=7, **settings), [f"p{i}" for i in range(len(refs))]
    expected = decode_pairs(model, refs, bases, rule, [EOS], 16, PAD, keys=keys)
    budget, chunked, swaps = schedule
    engine = FakePersistentBatch(model, [EOS], token_budget=budget, chunked=chunked,
                                 swap_every=swaps)
    got, summary = decode_pairs_lockstep(engine, refs, bases, rule, [EOS], 16, keys=keys)
    assert_same_traces(got, expected)
    assert summary.first_try + summary.retried == len(refs) and summary.fallback == 0
    if budget >= 4096:
        assert summary.first_try == len(refs) and engine.calls == 1


def test_a_small_budget_does_split_pairs(one_thread):
    """The split schedules above must contain what they claim: pairs split by a chunked
    prefill, recovered by decoding them again alone."""
    model, refs, bases = case(3)
    engine = FakePersistentBatch(model, [EOS], token_budget=40)
    _, summary = decode_pairs_lockstep(engine, refs, bases, build_rule("dasd"), [EOS], 16)
    assert summary.desyncs >= 1 and summary.retried == summary.desyncs
    assert engine.calls == 1 + summary.retried


def test_an_injected_preemption_is_recovered(one_thread):
    """A request preempted mid-decode (its partner runs ahead unforced): the pair is
    decoded again; a preemption in every call sends the pair to the fallback."""
    model, refs, bases = case(4)
    rule = build_rule("dasd")
    expected = decode_pairs(model, refs, bases, rule, [EOS], 16, PAD)
    engine = FakePersistentBatch(model, [EOS], preempt_at={3: 2})  # pair 1's reference
    got, summary = decode_pairs_lockstep(engine, refs, bases, rule, [EOS], 16)
    assert_same_traces(got, expected)
    assert engine.preemptions == 1 and summary.retried == 1 and summary.desyncs == 1
    base = engine.outputs[0][3]  # pair 1 in the first call
    assert base[-1] == EOS and len(base) <= 6  # it ran ahead and was stopped at once
    assert len(base) < len(got[1].token_ids) or got[1].token_ids[:len(base)] != base

    class AlwaysPreempting(FakePersistentBatch):
        def run(self, requests, core):
            self.preempt_at = {2: 0}
            return super().run(requests, core)

    fell_back = []

    def fallback(pairs):
        fell_back.extend(pairs)
        return decode_pairs(model, [refs[p] for p in pairs], [bases[p] for p in pairs], rule,
                            [EOS], 16, PAD)

    engine = AlwaysPreempting(model, [EOS])
    got, summary = decode_pairs_lockstep(engine, refs, bases, rule, [EOS], 16,
                                         fallback=fallback)
    assert_same_traces(got, expected)
    assert fell_back == [0] and summary.fallback == 1 and summary.first_try == 4
    with pytest.raises(RuntimeError, match="no fallback"):
        decode_pairs_lockstep(AlwaysPreempting(model, [EOS]), refs, bases, rule, [EOS], 16)


def test_kv_pressure_preempts_the_last_admitted_and_still_matches(one_thread):
    model, refs, bases = case(5)
    rule = build_rule("dasd", guard=0.5)
    expected = decode_pairs(model, refs, bases, rule, [EOS], 16, PAD)
    engine = FakePersistentBatch(model, [EOS], kv_tokens=120)
    got, summary = decode_pairs_lockstep(engine, refs, bases, rule, [EOS], 16,
                                         pairs_per_call=3)
    assert_same_traces(got, expected)
    assert engine.preemptions > 0 and summary.fallback == 0


class FakeLLM:
    """`vllm.LLM.generate` over the fake persistent batch, with the lockstep processor as
    vLLM would run it (`RequestProcessor`), outputs shaped like vLLM's (the stop token left
    out of `token_ids`, as `finish_reason` "stop" says)."""

    def __init__(self, model, eos_ids, **batch):
        from dasd.decoding.vllm_lockstep_engine import RequestProcessor

        self.batch = FakePersistentBatch(model, eos_ids, **batch)
        self.processor, self.eos = RequestProcessor(), set(eos_ids)

    def generate(self, prompts, params, use_tqdm=False):
        from types import SimpleNamespace

        outputs = self.batch.run([(p["prompt_token_ids"], q) for p, q in
                                  zip(prompts, params, strict=True)], self.processor)
        results = []
        for ids in outputs:
            stop = bool(ids) and ids[-1] in self.eos
            completion = SimpleNamespace(token_ids=ids[:-1] if stop else ids,
                                         finish_reason="stop" if stop else "length")
            results.append(SimpleNamespace(outputs=[completion]))
        return results


@pytest.mark.parametrize("method, settings", RULES)
def test_the_vllm_engine_path_equals_the_step_engine(method, settings, one_thread):
    """What travels through vLLM: the rule and key in extra_args, the records through a
    file, pair ids unique across calls, the stop token restored."""
    from types import SimpleNamespace

    from dasd.decoding.vllm_lockstep_engine import VLLMLockstepEngine

    model, refs, bases = case(7)
    rule, keys = build_rule(method, seed=3, **settings), [f"p{i}" for i in range(len(refs))]
    expected = decode_pairs(model, refs, bases, rule, [EOS], 16, PAD, keys=keys)
    llm = FakeLLM(model, [EOS], token_budget=48)
    engine = VLLMLockstepEngine(llm, [EOS], lambda **kw: SimpleNamespace(**kw))
    got, summary = decode_pairs_lockstep(engine, refs, bases, rule, [EOS], 16, keys=keys)
    assert_same_traces(got, expected)
    assert summary.fallback == 0 and {t.finish_reason for t in expected} == {"eos", "length"}
    started = [pair for rules in llm.processor.core.rules.by_spec.values()
               for pair in rules._started]
    assert len({pair >> 32 for pair in started}) <= 1  # earlier calls' rules are dropped


def test_unsupported_vllm_versions_are_refused(monkeypatch):
    from dasd.decoding.vllm_lockstep_engine import check_vllm_version, rule_spec
    from dasd.errors import DasdError

    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    check_vllm_version("0.11.2")
    for version in ("0.10.2", "0.34.0"):
        with pytest.raises(DasdError, match="needs vLLM >= 0.11, < 0.34"):
            check_vllm_version(version)
    import os

    check_vllm_version("0.32.1")
    assert os.environ["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    assert rule_spec(build_rule("dasd-sample", seed=2))["method"] == "dasd-sample"
    assert rule_spec(build_rule("dasd", guard=0.5))["settings"]["guard"] == 0.5


def test_generate_on_vllm_picks_lockstep_and_serves_stateful_rules(one_thread):
    """`--engine vllm --vllm.path lockstep`: the stage's decode function goes through the
    lockstep engine (hint, a stateful rule that draft-and-verify refuses, included)."""
    from types import SimpleNamespace

    from dasd.config import build_config
    from dasd.decoding.generate import GenerateConfig
    from dasd.decoding.vllm_model import VLLMModel, decode_pairs_on_vllm
    from dasd.errors import DasdError

    with pytest.raises(DasdError, match="cannot use the draft-verify engine"):
        build_config(GenerateConfig, {"engine": "vllm", "method": "hint"})
    config = build_config(GenerateConfig, {"engine": "vllm", "method": "hint",
                                           "vllm": {"path": "lockstep"}})
    model, refs, bases = case(7)
    keys = [f"p{i}" for i in range(len(refs))]
    rule = build_rule("hint", beta=3.0, temperature=1.0, marker="")
    served = VLLMModel(FakeLLM(model, [EOS]), model.config, lockstep=True,
                       sampling_params=lambda **kw: SimpleNamespace(**kw))
    counted = []
    got = config.decoder()(served, refs, bases, rule, [EOS], 16, PAD, counted.append,
                           keys=keys)
    assert config.decoder().func is decode_pairs_on_vllm
    assert_same_traces(got, decode_pairs(model, refs, bases, rule, [EOS], 16, PAD, keys=keys))
    assert sum(counted) == sum(len(t.token_ids) for t in got)


def test_the_processor_forces_a_draft_on_a_force_request(one_thread):
    """Draft-and-verify's linear scoring: a `force` request emits exactly its tokens,
    beside pairs in lockstep in the same batch."""
    from dasd.decoding.vllm_lockstep_engine import RequestProcessor

    model, refs, bases = case(7)
    draft = [9, 9, 30, 2, 41]
    force_params = PairParams(len(draft), {"dasd_pair": {"pair": -1, "role": "force",
                                                         "tokens": draft}})
    processor = RequestProcessor()
    batch = FakePersistentBatch(model, [EOS], token_budget=64)
    outputs = batch.run([(bases[0], force_params), (refs[1], member(1, REF, 6)),
                         (bases[1], member(1, BASE, 6))],
                        SimpleCore(processor))
    assert outputs[0] == draft and outputs[1] == outputs[2]


class SimpleCore:
    """The processor as the fake batch calls it, with the rule every pair's info names."""

    def __init__(self, processor):
        self.processor = processor

    def update_state(self, batch_update):
        for _, params, _, _ in batch_update.added:
            info = params.extra_args.get("dasd_pair", {})
            if info.get("role") in (REF, BASE):
                info.update(rule={"method": "dasd", "settings": {}}, key=str(info["pair"]),
                            trace="/dev/null")
        self.processor.update_state(batch_update)

    def apply(self, logits):
        return self.processor.apply(logits)


def test_pairs_per_call_fit_the_kv_cache():
    """A call holds as many pairs as the cache holds at full length; unknown: all at once."""
    from types import SimpleNamespace

    from dasd.decoding.vllm_lockstep_engine import pairs_per_call

    cache = SimpleNamespace(num_gpu_blocks=10, block_size=16)  # 160 tokens
    llm = SimpleNamespace(llm_engine=SimpleNamespace(vllm_config=SimpleNamespace(
        cache_config=cache)))
    refs, bases = [[1] * 20, [1] * 30], [[1] * 10, [1] * 5]
    assert pairs_per_call(llm, refs, bases, 10) == 160 // (30 + 5 + 20)
    assert pairs_per_call(llm, refs, bases, 100) == 1  # never less than one
    assert pairs_per_call(object(), refs, bases, 10) is None


def test_the_plan_names_the_vllm_path():
    from dasd.config import build_config
    from dasd.decoding.generate import GenerateConfig
    from dasd.plan import make_plan

    def engine(**values):
        config = build_config(GenerateConfig, {"limit": 2, "model": "none-such", **values})
        return make_plan("generate", config)["stages"][0].get("engine")

    assert engine() is None
    assert engine(engine="vllm") == "vllm (draft-verify)"
    assert engine(engine="vllm", method="hint", vllm={"path": "lockstep"}) == "vllm (lockstep)"
