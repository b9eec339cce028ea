"""Draft-and-verify: the step engine's tokens with the base context scored a chunk at a time.

Wherever the reference top-1 passes DASD's threshold the rule emits exactly that token
(about nine steps in ten), so the reference contexts draft a chunk greedily, the base
contexts score the whole chunk in one forward pass, each example keeps its draft up to
the first position where the rule disagrees, takes the rule's token there, and both KV
caches roll back to that point. The rule is applied at every position to the same
distributions the step engine would give it, so the tokens, categories and statistics
are the step engine's (`decode_pairs`); only the cost differs.

Cost, per emitted token: one reference-only forward per drafted position plus one base
forward per chunk, against one forward of both contexts per token in the step engine.
It pays where a forward of two rows costs clearly more than one (compute-bound batches,
serving engines that cannot advance two contexts in lockstep, such as vLLM); on a
memory-bound single-example decode the step engine's second row is nearly free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from dasd.decoding.backend import DraftVerifyBackend, RowRound, TransformersBackend, verify_round
from dasd.decoding.engine import FINISH_EOS, TokenTrace, record_step
from dasd.decoding.rules import SelectionRule
from dasd.errors import DasdError


class ChunkSize:
    """The number of tokens drafted per round: fixed, or adaptive when `fixed` is None.

    Adaptive: each drafted token is taken with some probability q (the reference top-1 is
    what the rule emits), so a row emits E(L) = 1 + q + ... + q^(L-1) tokens from a chunk
    of L, at the cost of L reference steps plus one base pass (counted as `base_cost`
    steps). q is estimated from the rounds so far (accepted drafts / (accepted + rejected),
    decayed by `decay` per round, starting from `prior` = 0.9, about the paper's share of
    consistent tokens) and the size is the L in [`low`, `high`] with the least cost per
    emitted token, (L + base_cost) / E(L): 4 at q = 0.9, 6 at 0.95, 10 at 0.98, 1 at 0.5.
    """

    def __init__(self, fixed: int | None = None, low: int = 1, high: int = 16,
                 prior: float = 0.9, base_cost: float = 1.0, decay: float = 0.9) -> None:
        if fixed is not None and (not isinstance(fixed, int) or fixed < 1):
            raise DasdError(f"chunk_size must be an integer >= 1 or None (adaptive); "
                            f"got {fixed!r}")
        self.fixed, self.low, self.high = fixed, low, high
        self.base_cost, self.decay = base_cost, decay
        self.accepted, self.rejected = 10 * prior, 10 * (1 - prior)
        self.size = fixed if fixed is not None else self.best_size()

    def best_size(self) -> int:
        q = self.accepted / (self.accepted + self.rejected)
        def cost(length: int) -> float:
            return (length + self.base_cost) / sum(q ** j for j in range(length))
        return min(range(self.low, self.high + 1), key=cost)

    def update(self, rounds: Sequence[RowRound]) -> None:
        """Learn from one round's rows (each ends at a rejected draft or takes it all)."""
        if self.fixed is not None or not rounds:
            return
        misses = sum(r.rejected for r in rounds)
        self.accepted = self.decay * self.accepted + sum(len(r.tokens) for r in rounds) - misses
        self.rejected = self.decay * self.rejected + misses
        self.size = self.best_size()


def check_rule(rule: SelectionRule) -> None:
    """Draft-and-verify is exact only for rules whose choice is a pure, deterministic
    function of one step's two distributions; rules declare it with
    `supports_draft_verify` (sampling or hint decoding keep using the step engine)."""
    if not getattr(rule, "supports_draft_verify", False):
        raise DasdError(f"rule {type(rule).__name__} cannot use the draft-verify engine (its "
                        "choice is not a pure function of one step's distributions); "
                        "use engine 'step'")


def run_draft_verify(backend: DraftVerifyBackend, n: int, rule: SelectionRule,
                     eos_ids: Sequence[int], max_new_tokens: int,
                     on_step: Callable[[int], None] | None = None,
                     chunk_size: int | None = None) -> list[TokenTrace]:
    """Decode `n` examples held by `backend` in rounds; returns one trace per example."""
    check_rule(rule)
    chunk = ChunkSize(chunk_size)
    traces = [TokenTrace() for _ in range(n)]
    active = list(range(n))
    eos = set(eos_ids)
    while active and max_new_tokens > 0:
        room = [max_new_tokens - len(traces[i].token_ids) for i in active]
        drafted = min(chunk.size, max(room))
        draft = backend.draft(drafted)
        base = backend.score(draft)
        rounds = verify_round(rule, draft, base, room, _in_columns(draft.vocabulary, eos_ids))
        if draft.vocabulary is not None:  # columns back to token ids
            for result in rounds:
                result.tokens = draft.vocabulary[result.tokens].tolist()
        keep = []
        for row, (example, result) in enumerate(zip(active, rounds, strict=True)):
            trace = traces[example]
            if not result.tokens:
                raise DasdError(f"the decoding backend drafted no token for example {example} "
                                "(is the context longer than the engine's limit?)")
            for token, category, stats in zip(result.tokens, result.categories, result.stats,
                                              strict=True):
                record_step(trace, token, category, stats)
            if result.tokens[-1] in eos:
                trace.finish_reason = FINISH_EOS
            elif len(trace.token_ids) < max_new_tokens:
                keep.append(row)
        if on_step:
            on_step(sum(len(r.tokens) for r in rounds))
        chunk.update([rounds[r] for r in keep])
        if keep:
            backend.advance([r.tokens for r in rounds], keep)
        active = [active[r] for r in keep]
    return traces


def _in_columns(vocabulary: torch.Tensor | None, ids: Sequence[int]) -> list[int]:
    """`ids` as columns of a round's `vocabulary` (those it holds), or as they are."""
    if vocabulary is None:
        return list(ids)
    column = {int(token): i for i, token in enumerate(vocabulary.tolist())}
    return [column[token] for token in ids if token in column]


@torch.inference_mode()
def decode_pairs_draft_verify(model, ref_prompts: Sequence[Sequence[int]],
                              base_prompts: Sequence[Sequence[int]], rule: SelectionRule,
                              eos_ids: Sequence[int], max_new_tokens: int, pad_id: int,
                              on_step: Callable[[int], None] | None = None, *,
                              keys: Sequence[object] | None = None,
                              decode: Callable[[list[int]], str] | None = None,
                              chunk_size: int | None = None) -> list[TokenTrace]:
    """`decode_pairs` (same arguments, same traces) by draft-and-verify.

    `chunk_size`: tokens drafted per round; None adapts it to how much gets accepted.
    `keys` and `decode` are accepted so that either engine takes the same call; they only
    serve stateful rules, which `check_rule` refuses here.
    """
    if len(ref_prompts) != len(base_prompts):
        raise ValueError("ref_prompts and base_prompts must have the same length")
    check_rule(rule)
    if not ref_prompts:
        return []
    backend = TransformersBackend(model, ref_prompts, base_prompts, pad_id)
    return run_draft_verify(backend, len(ref_prompts), rule, eos_ids, max_new_tokens,
                            on_step, chunk_size)
