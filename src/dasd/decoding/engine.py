"""The step engine: reference and base contexts of every example decoded in lockstep.

All active (example, context) rows share one batched forward pass per step, with a KV
cache and left padding; rows are laid out as [ref_0 .. ref_{n-1}, base_0 .. base_{n-1}] so
each half is a contiguous slice. After every step the selection rule picks one token per
example, the same token is appended to both of its contexts, and finished examples are
dropped from the batch and the cache.

Rules that keep per-example state (sampling streams, a step counter) may implement two
optional hooks, called without regard to which rule it is: `start(keys, decode)` before
the first step (one key per example, stable across batches, and a token-ids-to-text
function) and `keep(indices)` when finished examples leave the batch. Stateless rules
implement neither and are called exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dasd.decoding.cache import growing_cache
from dasd.decoding.rules import SelectionRule

FINISH_EOS, FINISH_LENGTH = "eos", "length"


@dataclass
class TokenTrace:
    """The response of one example and what was known when each token was chosen."""

    token_ids: list[int] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    p_base: list[float] = field(default_factory=list)
    p_ref: list[float] = field(default_factory=list)
    ref_rank: list[int] = field(default_factory=list)          # 1 = reference top-1
    base_entropy: list[float] = field(default_factory=list)    # H(p_base) in nats
    base_top3_ref_rank: list[list[int]] = field(default_factory=list)
    finish_reason: str = FINISH_LENGTH


def rank_in(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """1-based rank of `tokens` [B, m] in each row of `logprobs` [B, V], ties to the lower id
    (the order of `ranked_top_k`)."""
    values = logprobs.gather(-1, tokens)[..., None]                       # [B, m, 1]
    rows = logprobs[:, None, :]
    rank = 1 + (rows > values).sum(-1)
    if bool(((rows == values).sum(-1) > 1).any()):  # exact ties are rare: count them only then
        ids = torch.arange(logprobs.shape[-1], device=logprobs.device)
        rank = rank + ((rows == values) & (ids < tokens[..., None])).sum(-1)
    return rank


def step_statistics(ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor,
                    tokens: torch.Tensor) -> torch.Tensor:
    """Per example: p_base, p_ref, reference rank, H(p_base), ranks of base top-3 in ref."""
    chosen = tokens[:, None]
    base_top3 = torch.topk(base_logprobs, min(3, base_logprobs.shape[-1]), dim=-1).indices
    entropy = -(base_logprobs.exp() * base_logprobs).nan_to_num().sum(-1)
    ranks = rank_in(ref_logprobs, torch.cat([chosen, base_top3], dim=-1)).to(ref_logprobs.dtype)
    columns = [
        base_logprobs.gather(-1, chosen).exp(),
        ref_logprobs.gather(-1, chosen).exp(),
        ranks[:, :1],
        entropy[:, None],
        ranks[:, 1:],
    ]
    return torch.cat(columns, dim=-1).double().cpu()


def record_step(trace: TokenTrace, token: int, category: int, stats: list[float]) -> None:
    """Append one step (a row of `step_statistics`) to an example's trace."""
    trace.token_ids.append(token)
    trace.categories.append(category)
    trace.p_base.append(stats[0])
    trace.p_ref.append(stats[1])
    trace.ref_rank.append(int(stats[2]))
    trace.base_entropy.append(stats[3])
    trace.base_top3_ref_rank.append([int(r) for r in stats[4:]])


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _start_rule(rule: SelectionRule, ref_prompts: Sequence[Sequence[int]],
                base_prompts: Sequence[Sequence[int]], keys: Sequence[object] | None,
                decode: Callable[[list[int]], str] | None) -> None:
    """Call a stateful rule's `start` hook; an example's default key is its two prompts."""
    if not hasattr(rule, "start"):
        return
    if keys is None:
        keys = [(tuple(r), tuple(b)) for r, b in zip(ref_prompts, base_prompts, strict=True)]
    if len(keys) != len(ref_prompts):
        raise ValueError(f"got {len(keys)} keys for {len(ref_prompts)} examples")
    rule.start(list(keys), decode)


@torch.inference_mode()
def decode_pairs(model, ref_prompts: Sequence[Sequence[int]], base_prompts: Sequence[Sequence[int]],
                 rule: SelectionRule, eos_ids: Sequence[int], max_new_tokens: int, pad_id: int,
                 on_step: Callable[[int], None] | None = None, *,
                 keys: Sequence[object] | None = None,
                 decode: Callable[[list[int]], str] | None = None) -> list[TokenTrace]:
    """Decode one batch of examples, each from its reference and base prompt token ids.

    `on_step(n)` is called after each step with the number of tokens emitted in it.
    `keys` name the examples for stateful rules (their random streams are seeded by it,
    so a key decodes the same in any batch); by default an example's key is its prompts.
    `decode` turns token ids into text, for rules that watch the emitted text.
    """
    if len(ref_prompts) != len(base_prompts):
        raise ValueError("ref_prompts and base_prompts must have the same length")
    n = len(ref_prompts)
    device = next(model.parameters()).device
    traces = [TokenTrace() for _ in range(n)]
    if n == 0:
        return traces
    input_ids, attention_mask = left_pad([*ref_prompts, *base_prompts], pad_id, device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = growing_cache(model, room=min(max_new_tokens, 256))
    active = torch.arange(n)                      # example index of each active pair
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    _start_rule(rule, ref_prompts, base_prompts, keys, decode)

    for step in range(max_new_tokens):
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids, cache=cache, use_cache=True,
                       logits_to_keep=1).logits[:, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        ref_lp, base_lp = logprobs[: len(active)], logprobs[len(active):]
        selection = rule.select(ref_lp, base_lp)
        stats = step_statistics(ref_lp, base_lp, selection.tokens).tolist()
        tokens, categories = selection.tokens.tolist(), selection.categories.tolist()
        for i, example in enumerate(active.tolist()):
            record_step(traces[example], tokens[i], categories[i], stats[i])
        if on_step:
            on_step(len(active))

        done = torch.isin(selection.tokens, eos)
        for example in active[done.cpu()].tolist():
            traces[example].finish_reason = FINISH_EOS
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        keep = (~done).nonzero().squeeze(-1)
        next_tokens = selection.tokens[keep]
        if len(keep) < len(active):
            rows = torch.cat([keep, keep + len(active)])
            cache.batch_select_indices(rows)
            if hasattr(rule, "keep"):
                rule.keep(keep.cpu())
            attention_mask, position_ids = attention_mask[rows], position_ids[rows]
            active = active[keep.cpu()]
        input_ids = torch.cat([next_tokens, next_tokens])[:, None]
        ones = attention_mask.new_ones((len(input_ids), 1))
        attention_mask = torch.cat([attention_mask, ones], dim=-1)
        position_ids = position_ids[:, -1:] + 1
    return traces
