"""Draft-and-verify on vLLM: reference chunks from `LLM.generate`, base scoring from
`prompt_logprobs`, the round logic shared with the transformers engine (`verify_round`).

vLLM cannot run two contexts in lockstep, but it can do the two things a round needs:
greedy generation of the reference contexts with each position's top-K log-probabilities
(`SamplingParams(temperature=0, max_tokens=L, logprobs=K)`), and scoring of the base
contexts followed by the drafted tokens (`prompt_logprobs=n`). With prefix caching on, a
rejected draft costs nothing to roll back on the reference side: the next round's prompts
share every block up to the accepted tokens. The base side does not get that: vLLM (v1)
computes prompt log-probabilities by skipping the prefix cache, so each round prefills a
row's whole base context again, and the scoring cost of a response grows with the square
of its length (rounds x context). Long traces pay for it; a larger chunk means fewer
rounds.

Exactness: at most floor(1/tau) tokens can have base probability >= tau, so the base
top-floor(1/tau) plus each drafted token's own log-probability decides DASD's rule, its
fallbacks and its categories exactly. The statistics that need whole distributions are
computed over the returned tokens only: the base entropy; a reference rank beyond K is
recorded as K + 1 (`clamp_ranks`).

Not exercised on CPU: vLLM pins its own torch and needs a GPU, so install it in a separate
environment (`pip install vllm`). The tests drive this adapter with a fake `LLM` built on
a tiny transformers model, which checks the parsing of outputs shaped like vLLM's; one
test runs real vLLM where it and a GPU are present. `dasd generate --engine vllm` reaches
it through `dasd.decoding.vllm_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dasd.decoding.backend import Draft
from dasd.decoding.draft_verify import run_draft_verify
from dasd.decoding.engine import TokenTrace
from dasd.decoding.rules import SelectionRule
from dasd.errors import DasdError


def import_vllm(needed_by: str = "the vLLM engine"):
    """The `vllm` module, or one line saying how to install it where it can live."""
    try:
        import vllm
    except ImportError as error:
        raise DasdError(f"{needed_by} needs vLLM, which is not installed here; it pins its own "
                        "torch and transformers, so give it an environment of its own: python "
                        "-m venv .venv-vllm && .venv-vllm/bin/pip install vllm -e .") from error
    return vllm


def logprob_widths(rule: SelectionRule) -> tuple[int, int]:
    """(K for the reference drafts, n for base scoring): the rule's top-K and floor(1/tau),
    at least 3 each so that the base top-3 statistics have their tokens."""
    k_ref = max(3, getattr(rule, "top_k", 1))
    tau = getattr(rule, "tau", 1.0)
    return k_ref, max(3, math.floor(1 / tau + 1e-9))


def load_vllm(model: str, max_logprobs: int = 20, **kwargs: Any):
    """An `LLM` with prefix caching on (draft rollbacks then cost nothing)."""
    return import_vllm().LLM(model=model, enable_prefix_caching=True,
                             max_logprobs=max_logprobs, **kwargs)


def compact(draft: Draft, ref: Sequence[Sequence[dict[int, Any]]],
            base: Sequence[Sequence[dict[int, Any]]]) -> torch.Tensor:
    """Lay a round out over the tokens vLLM returned for it (both contexts' entries and the
    drafted tokens, ascending, so ties still go to the lower id): sets `draft.logprobs`,
    `draft.tokens` (as columns) and `draft.vocabulary`, returns the base log-probabilities
    [B, L, U]. U is a few hundred where the dense layout was the whole vocabulary."""
    ids = {int(t) for row, n in zip(draft.tokens, draft.lengths.tolist(), strict=True)
           for t in row[:n].tolist()}
    for side in (ref, base):
        ids.update(int(token) for row in side for position in row for token in (position or {}))
    vocabulary = torch.tensor(sorted(ids), dtype=torch.long)
    column = {token: i for i, token in enumerate(vocabulary.tolist())}
    rows, length = draft.tokens.shape
    draft.logprobs = torch.full((rows, length, len(column)), -math.inf)
    base_logprobs = torch.full((rows, length, len(column)), -math.inf)
    for out, side in ((draft.logprobs, ref), (base_logprobs, base)):
        for row, positions in enumerate(side):
            for j, entries in enumerate(positions):
                for token, value in (entries or {}).items():
                    out[row, j, column[int(token)]] = getattr(value, "logprob", value)
    draft.tokens = torch.tensor([[column.get(int(t), 0) for t in row] for row in
                                 draft.tokens.tolist()], dtype=torch.long).view(rows, length)
    draft.vocabulary = vocabulary
    return base_logprobs


class VLLMBackend:
    """`DraftVerifyBackend` on a `vllm.LLM`: the contexts are token lists, the KV cache is
    vLLM's prefix cache. `sampling_params` defaults to `vllm.SamplingParams`.

    `forced`: score the base side by decoding the draft, forced by the lockstep logits
    processor (the `LLM` must have it), instead of `prompt_logprobs`. vLLM returns the
    raw log-probabilities of each forced token and the base top-n, and the base context
    stays in the prefix cache: each round computes only its new tokens (linear), where
    `prompt_logprobs` prefills the whole base context every round (quadratic)."""

    def __init__(self, llm, ref_prompts: Sequence[Sequence[int]],
                 base_prompts: Sequence[Sequence[int]], rule: SelectionRule, vocab_size: int,
                 sampling_params: Callable[..., Any] | None = None,
                 forced: bool = False) -> None:
        self.llm, self.vocab_size, self.forced = llm, vocab_size, forced
        self.ref = [list(p) for p in ref_prompts]
        self.base = [list(p) for p in base_prompts]
        self.params = sampling_params or import_vllm().SamplingParams
        self.k_ref, self.n_base = logprob_widths(rule)

    def _run(self, prompts: list[list[int]], **params: Any) -> list[Any]:
        requests = [{"prompt_token_ids": p} for p in prompts]
        return self.llm.generate(requests, self.params(temperature=0.0, **params),
                                 use_tqdm=False)

    def draft(self, n_tokens: int) -> Draft:
        """The reference drafts; their log-probabilities stay as vLLM returned them (a few
        entries per position) until `score` lays the round out over its own columns."""
        # ignore_eos: every row drafts n_tokens; verify_round stops each at its EOS
        outputs = self._run(self.ref, max_tokens=n_tokens, logprobs=self.k_ref,
                            ignore_eos=True, detokenize=False)
        tokens = torch.zeros((len(outputs), n_tokens), dtype=torch.long)
        lengths = torch.zeros(len(outputs), dtype=torch.long)
        self._ref_entries = []
        for row, output in enumerate(outputs):
            completion = output.outputs[0]
            ids = list(completion.token_ids)[:n_tokens]
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            self._ref_entries.append(list(completion.logprobs[: len(ids)]))
            lengths[row] = len(ids)
        return Draft(tokens, torch.empty(0), lengths)

    def score(self, draft: Draft) -> torch.Tensor:
        """The base log-probabilities of the draft, and the round laid out over the tokens
        vLLM returned for it (`compact`)."""
        lengths = draft.lengths.tolist()
        if self.forced:
            entries = self._forced_entries(draft)
        else:
            prompts = [base + draft.tokens[row, :n].tolist()
                       for row, (base, n) in enumerate(zip(self.base, lengths, strict=True))]
            outputs = self._run(prompts, max_tokens=1, prompt_logprobs=self.n_base,
                                detokenize=False)
            entries = [list(output.prompt_logprobs[-n:]) if n else []
                       for output, n in zip(outputs, lengths, strict=True)]
        return compact(draft, self._ref_entries, entries)

    def _forced_entries(self, draft: Draft) -> list[list[dict[int, Any]]]:
        """The base side by decoding the draft, forced by the lockstep processor: vLLM
        returns each forced token's raw log-probability and the base top-n."""
        from dasd.decoding.vllm_lockstep import EXTRA_KEY, FORCE

        entries: list[list[dict[int, Any]]] = [[] for _ in draft.lengths]
        rows = [row for row, n in enumerate(draft.lengths.tolist()) if n]
        params = [self.params(
            temperature=0.0, max_tokens=int(draft.lengths[row]), logprobs=self.n_base,
            ignore_eos=True, detokenize=False, extra_args={EXTRA_KEY: {
                "pair": -1, "role": FORCE,
                "tokens": draft.tokens[row, :int(draft.lengths[row])].tolist()}})
            for row in rows]
        outputs = self.llm.generate([{"prompt_token_ids": self.base[row]} for row in rows],
                                    params, use_tqdm=False)
        for row, output in zip(rows, outputs, strict=True):
            entries[row] = list(output.outputs[0].logprobs[:int(draft.lengths[row])])
        return entries

    def advance(self, emitted: Sequence[Sequence[int]], keep: Sequence[int]) -> None:
        self.ref = [self.ref[r] + list(emitted[r]) for r in keep]
        self.base = [self.base[r] + list(emitted[r]) for r in keep]


def decode_pairs_vllm(llm, ref_prompts: Sequence[Sequence[int]],
                      base_prompts: Sequence[Sequence[int]], rule: SelectionRule,
                      eos_ids: Sequence[int], max_new_tokens: int, vocab_size: int,
                      on_step: Callable[[int], None] | None = None,
                      chunk_size: int | None = None,
                      sampling_params: Callable[..., Any] | None = None,
                      forced: bool = False) -> list[TokenTrace]:
    """`decode_pairs` on a vLLM `LLM` (see the module docstring for what is exact; `forced`:
    see `VLLMBackend`). A reference rank beyond the K tokens vLLM returned is K + 1
    ("beyond K"), whatever the token's id."""
    if len(ref_prompts) != len(base_prompts):
        raise ValueError("ref_prompts and base_prompts must have the same length")
    backend = VLLMBackend(llm, ref_prompts, base_prompts, rule, vocab_size, sampling_params,
                          forced)
    traces = run_draft_verify(backend, len(ref_prompts), rule, eos_ids, max_new_tokens,
                              on_step, chunk_size)
    return [clamp_ranks(trace, backend.k_ref) for trace in traces]


def clamp_ranks(trace: TokenTrace, k: int) -> TokenTrace:
    """Reference ranks past the `k` returned tokens as `k + 1`: among the tokens vLLM did not
    return, the dense tensor's order is only their ids'."""
    trace.ref_rank = [min(rank, k + 1) for rank in trace.ref_rank]
    trace.base_top3_ref_rank = [[min(rank, k + 1) for rank in ranks]
                                for ranks in trace.base_top3_ref_rank]
    return trace
