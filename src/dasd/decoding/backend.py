"""What draft-and-verify needs from a decoding engine, the shared round logic, and the
transformers implementation.

A backend holds the reference and base contexts of every active example and offers three
operations: `draft` (decode a chunk greedily from the reference contexts, keeping each
position's log-probabilities), `score` (the base contexts' log-probabilities at every
position of that chunk, in one pass) and `advance` (keep what a round emitted, roll the
rest back, drop finished examples). `verify_round` is the pure function that decides,
from those tensors alone, what each example emits in a round; the transformers backend
here and the vLLM adapter (`vllm_backend.py`) both go through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from dasd.decoding.cache import growing_cache
from dasd.decoding.engine import left_pad, step_statistics
from dasd.decoding.rules import SelectionRule


@dataclass
class Draft:
    """A greedy chunk of the reference contexts: tokens [B, L], the reference
    log-probabilities that chose each of them [B, L, V], and how many positions of each
    row are real [B] (a backend that stops a row at EOS drafts fewer).

    `vocabulary`: the token id of each of the V columns, ascending, when a backend
    re-expresses a round over the few tokens it knows (vLLM: those it returned), so that
    `tokens` and the rule's choices are column indices; None: V is the whole vocabulary."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    lengths: torch.Tensor
    vocabulary: torch.Tensor | None = None


class DraftVerifyBackend(Protocol):
    def draft(self, n_tokens: int) -> Draft: ...

    def score(self, draft: Draft) -> torch.Tensor:
        """Base log-probabilities [B, L, V]: position j conditioned on the base context
        followed by `draft.tokens[:, :j]`. It may set `draft.vocabulary` (and re-express
        the draft over it)."""
        ...

    def advance(self, emitted: Sequence[Sequence[int]], keep: Sequence[int]) -> None:
        """Append `emitted[r]` to both contexts of row r, forget the rest of its draft, and
        keep only the rows listed in `keep` (in that order)."""
        ...


@dataclass
class RowRound:
    """What one example emitted in a round, with its categories and `step_statistics` rows;
    `rejected`: the last token is the rule's, not the draft's."""

    tokens: list[int]
    categories: list[int]
    stats: list[list[float]] = field(default_factory=list)
    rejected: bool = False


def verify_round(rule: SelectionRule, draft: Draft, base_logprobs: torch.Tensor,
                 room: Sequence[int], eos_ids: Sequence[int]) -> list[RowRound]:
    """Apply `rule` at every drafted position and accept up to the first disagreement.

    Position j of a draft sees exactly the distributions the step engine would see as long
    as the tokens emitted before it are the drafted ones; so each row emits the drafted
    tokens while the rule agrees with them, then the rule's own token at the first
    position where it does not (which may differ from the draft), and stops there, at EOS,
    or after `room[r]` tokens (the length limit).
    """
    rows, length, vocab = draft.logprobs.shape
    ref_flat, base_flat = draft.logprobs.reshape(-1, vocab), base_logprobs.reshape(-1, vocab)
    selection = rule.select(ref_flat, base_flat)
    tokens = selection.tokens.view(rows, length)
    device = tokens.device
    positions = torch.arange(length, device=device)
    lengths = draft.lengths.to(device)
    agrees = (tokens == draft.tokens.to(device)) & (positions < lengths[:, None])
    first_bad = torch.where(agrees, length, positions).min(-1).values
    emitted = torch.minimum(first_bad + 1, lengths)
    emitted = torch.minimum(emitted, torch.tensor(list(room), device=device))
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    is_eos = torch.isin(tokens, eos) & (positions < emitted[:, None])
    emitted = torch.minimum(emitted, torch.where(is_eos, positions, length).min(-1).values + 1)

    taken = (positions < emitted[:, None]).reshape(-1).nonzero().squeeze(-1)
    stats = step_statistics(ref_flat[taken], base_flat[taken], selection.tokens[taken]).tolist()
    chosen, categories = selection.tokens[taken].tolist(), selection.categories[taken].tolist()
    rejected = (first_bad < emitted).tolist()
    out, start = [], 0
    for count, disagreed in zip(emitted.tolist(), rejected, strict=True):
        end = start + count
        out.append(RowRound(chosen[start:end], categories[start:end], stats[start:end],
                            disagreed))
        start = end
    return out


class _Context:
    """One side (reference or base) of every active example: its KV cache, the attention
    mask over the cached columns, how many real tokens each row holds, and the tokens
    not fed yet (the prompt at first, then the last emitted token).

    Rows accept different numbers of drafted tokens, so rejected columns are handled in
    two ways: the part of the rejected tail that every row shares is cropped from the
    cache (all of it at batch 1), and the rest is masked out of the attention mask;
    position ids count real tokens only, so a masked column never shifts later positions.
    """

    def __init__(self, model, prompts: Sequence[Sequence[int]], pad_id: int,
                 device: torch.device) -> None:
        self.model = model
        self.pending, self.pending_mask = left_pad(prompts, pad_id, device)
        self.mask = self.pending_mask[:, :0]
        self.seen = torch.zeros(len(prompts), dtype=torch.long, device=device)
        self.cache = growing_cache(model)

    def feed(self, ids: torch.Tensor, new_mask: torch.Tensor, keep: int) -> torch.Tensor:
        """Run `ids` [B, T] through the model; log-probabilities of the last `keep` columns."""
        self.mask = torch.cat([self.mask, new_mask], dim=-1)
        positions = (self.seen[:, None] + new_mask.cumsum(-1) - 1).clamp(min=0)
        self.seen = self.seen + new_mask.sum(-1)
        logits = self.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                            cache=self.cache, use_cache=True, logits_to_keep=keep).logits
        return torch.log_softmax(logits.float(), dim=-1)

    def feed_pending(self, extra: torch.Tensor, keep: int) -> torch.Tensor:
        """Feed the pending tokens followed by `extra` [B, E] (E may be 0)."""
        ids = torch.cat([self.pending, extra], dim=-1)
        mask = torch.cat([self.pending_mask, torch.ones_like(extra)], dim=-1)
        self.pending = self.pending[:, :0]
        self.pending_mask = self.pending_mask[:, :0]
        return self.feed(ids, mask, keep)

    def rollback(self, drop: torch.Tensor, keep: torch.Tensor, last: torch.Tensor) -> None:
        """Keep rows `keep`, forget the last `drop[r]` cached columns of each, and make
        `last` (one token per kept row) the next pending token."""
        if len(keep) < len(self.mask):
            self.cache.batch_select_indices(keep)
            self.mask, self.seen = self.mask[keep], self.seen[keep]
        drop = drop[keep]
        common = int(drop.min()) if len(drop) else 0
        if common:
            self.cache.crop(-common)
            self.mask = self.mask[:, :-common]
        width = self.mask.shape[-1]
        hole = torch.arange(width, device=drop.device) >= width - (drop - common)[:, None]
        self.mask = self.mask.masked_fill(hole, 0)
        self.seen = self.seen - drop
        self.pending = last[:, None]
        self.pending_mask = torch.ones_like(self.pending)


class TransformersBackend:
    """Draft-and-verify on a transformers causal LM: one copy of the weights, two KV caches.

    After a round of L drafted tokens both caches hold the same columns: the pending
    token(s) and drafts 0..L-2 (the last draft is not fed yet), so one rollback rule fits
    both.
    """

    def __init__(self, model, ref_prompts: Sequence[Sequence[int]],
                 base_prompts: Sequence[Sequence[int]], pad_id: int) -> None:
        device = next(model.parameters()).device
        self.ref = _Context(model, ref_prompts, pad_id, device)
        self.base = _Context(model, base_prompts, pad_id, device)
        self.length = 0

    def draft(self, n_tokens: int) -> Draft:
        logprobs, tokens = [], []
        empty = self.ref.pending[:, :0]
        step = self.ref.feed_pending(empty, keep=1)[:, -1]
        for j in range(n_tokens):
            if j:
                token = tokens[-1][:, None]
                step = self.ref.feed(token, torch.ones_like(token), keep=1)[:, -1]
            logprobs.append(step)
            tokens.append(step.argmax(-1))  # first maximum: the rule's reference top-1
        self.length = n_tokens
        lengths = torch.full((len(tokens[0]),), n_tokens, dtype=torch.long)
        return Draft(torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1), lengths)

    def score(self, draft: Draft) -> torch.Tensor:
        return self.base.feed_pending(draft.tokens[:, :-1], keep=draft.tokens.shape[1])

    def advance(self, emitted: Sequence[Sequence[int]], keep: Sequence[int]) -> None:
        device = self.ref.mask.device
        counts = torch.tensor([len(e) for e in emitted], dtype=torch.long, device=device)
        drop = self.length - counts  # drafted columns after the last accepted one
        rows = torch.tensor(list(keep), dtype=torch.long, device=device)
        last = torch.tensor([emitted[r][-1] for r in keep], dtype=torch.long, device=device)
        for context in (self.ref, self.base):
            context.rollback(drop, rows, last)
