"""The vLLM adapter, driven by a fake `LLM` that answers like vLLM from a tiny model.

vLLM itself cannot be installed next to this torch; these tests check the adapter's
requests and its parsing of vLLM-shaped outputs, and that DASD decided from top-K / top-n
log-probabilities alone gives the step engine's tokens.
"""

import sys
from copy import deepcopy
from types import SimpleNamespace

import pytest
import torch

from dasd.decoding.engine import decode_pairs
from dasd.decoding.rules import build_rule, ranked_top_k
from dasd.decoding.vllm_backend import (
    compact,
    decode_pairs_vllm,
    import_vllm,
    logprob_widths,
)
from dasd.errors import DasdError
from tests.conftest import make_model
from tests.decoding.test_draft_verify import PAD, case


def top_entries(logprobs: torch.Tensor, k: int, own: int) -> dict[int, SimpleNamespace]:
    """vLLM's per-position dict: the top-k tokens plus the position's own token."""
    ids = (ranked_top_k(logprobs[None], k)[0].tolist() if k else []) + [own]
    return {i: SimpleNamespace(logprob=float(logprobs[i]), rank=None) for i in ids}


class FakeLLM:
    """`LLM.generate` for token-id prompts on a transformers model, uncached: greedy
    (temperature 0) or seeded sampling (temperature only), `n` answers per prompt,
    stopping at `stop_token_ids` unless `ignore_eos` (the stop token kept in `token_ids`,
    as vLLM does), one `SamplingParams` for all prompts or one each, and a LoRA adapter
    per request (PEFT, merged into a copy of the model)."""

    def __init__(self, model) -> None:
        self.model, self.params, self.lora_requests, self.adapted = model, [], [], {}

    def _logprobs(self, model, ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        return torch.log_softmax(logits.float(), dim=-1)

    def _with(self, lora_request):
        if lora_request is None:
            return self.model
        if lora_request.lora_path not in self.adapted:
            from peft import PeftModel

            copy = PeftModel.from_pretrained(deepcopy(self.model), lora_request.lora_path)
            self.adapted[lora_request.lora_path] = copy.merge_and_unload().eval()
        return self.adapted[lora_request.lora_path]

    def generate(self, requests, params, use_tqdm=True, lora_request=None):
        assert use_tqdm is False
        each = params if isinstance(params, list) else [params] * len(requests)
        self.params += each
        self.lora_requests.append(lora_request)
        model = self._with(lora_request)
        return [self._one(model, list(r["prompt_token_ids"]), p)
                for r, p in zip(requests, each, strict=True)]

    def _one(self, model, prompt: list[int], params):
        prompt_logprobs = None
        if getattr(params, "prompt_logprobs", None):
            lp = self._logprobs(model, prompt)
            prompt_logprobs = [None] + [
                top_entries(lp[i - 1], params.prompt_logprobs, prompt[i])
                for i in range(1, len(prompt))]
        seed = getattr(params, "seed", None)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        outputs = [self._complete(model, list(prompt), params, generator, index)
                   for index in range(getattr(params, "n", 1))]
        return SimpleNamespace(outputs=outputs, prompt_logprobs=prompt_logprobs)

    def _complete(self, model, ids: list[int], params, generator, index: int):
        temperature = params.temperature
        if temperature:
            assert getattr(params, "top_p", 1.0) == 1.0 and getattr(params, "top_k", -1) == -1
        stops = set() if getattr(params, "ignore_eos", False) else set(
            getattr(params, "stop_token_ids", None) or [])
        tokens, logprobs, finish, stop_reason = [], [], "length", None
        forced = ((getattr(params, "extra_args", None) or {}).get("dasd_pair") or {}).get(
            "tokens")  # what the lockstep processor forces (raw log-probabilities kept)
        for _ in range(params.max_tokens):
            lp = self._logprobs(model, ids)[-1]
            if forced:
                token = forced[len(tokens)]
            elif temperature:
                probs = torch.softmax(lp / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            else:
                token = int(lp.argmax())
            tokens.append(token)
            logprobs.append(top_entries(lp, getattr(params, "logprobs", None) or 0, token))
            ids.append(token)
            if token in stops:
                finish, stop_reason = "stop", token
                break
        return SimpleNamespace(index=index, token_ids=tokens, logprobs=logprobs,
                               finish_reason=finish, stop_reason=stop_reason)


def sampling_params(**kwargs):
    return SimpleNamespace(**kwargs)


@pytest.mark.parametrize("forced", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 4, 6])
@pytest.mark.parametrize("method, settings", [("dasd", {}), ("dasd", {"fallback": "base"}),
                                              ("dasd", {"top_k": 9, "tau": 0.1}), ("sd", {})])
def test_vllm_adapter_gives_the_step_engines_tokens(seed, method, settings, forced, one_thread):
    """Base scoring by `prompt_logprobs`, or (`forced`, the linear form) by decoding the
    draft, forced, which keeps the base context in vLLM's prefix cache."""
    model, refs, bases, eos_ids, max_new = case(seed)
    rule = build_rule(method, **settings)
    expected = decode_pairs(model, refs, bases, rule, eos_ids, max_new, PAD)
    llm = FakeLLM(model)
    got = decode_pairs_vllm(llm, refs, bases, rule, eos_ids, max_new,
                            vocab_size=model.config.vocab_size, chunk_size=None,
                            sampling_params=sampling_params, forced=forced)
    for g, e in zip(got, expected, strict=True):
        assert g.token_ids == e.token_ids
        assert g.categories == e.categories
        assert g.finish_reason == e.finish_reason
        assert g.p_base == pytest.approx(e.p_base, rel=1e-5)
        if settings.get("fallback") != "base":  # a base-fallback token may lie outside ref top-K
            assert g.p_ref == pytest.approx(e.p_ref, rel=1e-5)
            assert g.ref_rank == e.ref_rank
    k_ref, n_base = logprob_widths(rule)
    def scoring(params) -> bool:
        return bool(getattr(params, "prompt_logprobs", None) or getattr(params, "extra_args",
                                                                          None))

    drafts = [p for p in llm.params if not scoring(p)]
    scores = [p for p in llm.params if scoring(p)]
    assert drafts and len(drafts) == len(scores)
    assert all(p.temperature == 0.0 for p in llm.params)  # drafts and scores are greedy
    assert all(p.logprobs == k_ref and p.ignore_eos for p in drafts)
    if forced:
        assert not any(getattr(p, "prompt_logprobs", None) for p in llm.params)
        assert all(p.extra_args["dasd_pair"]["role"] == "force" and p.logprobs == n_base
                   and len(p.extra_args["dasd_pair"]["tokens"]) == p.max_tokens for p in scores)
    else:
        assert all(p.prompt_logprobs == n_base and p.max_tokens == 1 for p in scores)


def test_logprob_widths_follow_top_k_and_tau():
    assert logprob_widths(build_rule("dasd")) == (6, 5)                    # K 6, floor(1/0.2)
    assert logprob_widths(build_rule("dasd", top_k=9, tau=0.1)) == (9, 10)
    assert logprob_widths(build_rule("dasd", top_k=2, tau=1 / 3)) == (3, 3)
    assert logprob_widths(build_rule("dasd", tau=0.45)) == (6, 3)          # base top-3 stats
    assert logprob_widths(build_rule("base")) == (3, 3)


def test_compact_lays_a_round_out_over_the_returned_tokens():
    """Logprob objects and bare floats, missing positions as -inf, columns in id order,
    the draft's tokens as columns."""
    from dasd.decoding.backend import Draft

    draft = Draft(torch.tensor([[7, 2]]), torch.empty(0), torch.tensor([2]))
    base = compact(draft, [[{2: SimpleNamespace(logprob=-0.5), 0: -1.5}, None]],
                   [[{7: -0.25}, {9: -2.0}]])
    assert draft.vocabulary.tolist() == [0, 2, 7, 9] and draft.tokens.tolist() == [[2, 1]]
    inf = float("-inf")
    assert draft.logprobs[0].tolist() == [[-1.5, -0.5, inf, inf], [inf] * 4]
    assert base[0].tolist() == [[inf, inf, -0.25, inf], [inf, inf, inf, -2.0]]


def test_missing_vllm_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    with pytest.raises(DasdError, match="pip install vllm") as error:
        import_vllm()
    assert "\n" not in str(error.value)


def test_adapter_refuses_rules_without_the_guarantee():
    class Sampling:
        def select(self, ref_logprobs, base_logprobs): ...

    llm = FakeLLM(make_model(32, seed=0, eos_id=1))
    with pytest.raises(DasdError, match="draft-verify"):
        decode_pairs_vllm(llm, [[4, 5]], [[6]], Sampling(), [1], 5, vocab_size=32,
                          sampling_params=sampling_params)


def test_reference_ranks_past_k_are_beyond_k(one_thread):
    """A token vLLM did not return among the reference top-K gets rank K + 1, not a number
    that depends on its id (DASD's base fallback emits such tokens)."""
    model, refs, bases, eos_ids, max_new = case(0)
    rule = build_rule("dasd", fallback="base")
    got = decode_pairs_vllm(FakeLLM(model), refs, bases, rule, eos_ids, max_new,
                            vocab_size=model.config.vocab_size, sampling_params=sampling_params)
    expected = decode_pairs(model, refs, bases, rule, eos_ids, max_new, PAD)
    k = logprob_widths(rule)[0]
    ranks = [(g, e) for gt, et in zip(got, expected, strict=True)
             for g, e in zip(gt.ref_rank, et.ref_rank, strict=True)]
    assert any(e > k for _, e in ranks), "the case must contain tokens past the top-K"
    assert all(g == (e if e <= k else k + 1) for g, e in ranks)
