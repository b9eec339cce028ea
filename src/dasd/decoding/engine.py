"""The step engine: reference and base contexts of every example decoded in lockstep.

Each decoding example holds two rows of one batched forward pass per step, its reference
context and its base context, with a KV cache. After every step the selection rule picks
one token per example and the same token is appended to both of its contexts.

Continuous batching: at most `batch_size` examples decode at once. When one ends (EOS or
its length limit) its two rows leave the batch and the next waiting example, in input
order, takes them at the following step, so the forward pass stays full instead of
narrowing to the last long example of a static batch (`continuous=False`: the next
examples start only when every example of the batch has ended). A row attends only to
its own columns (attention mask) at its own positions (position ids), so an example's
tokens do not depend on which examples share its forward passes, up to float rounding.

Rows are kept so that nothing copies the whole cache (`_Rows`): every row's cached tokens
end at the cache's fill mark, masked columns to their left. An entering example is
prefilled in two forwards of its own, reference prompts and base prompts (each padded only
to the longest prompt of its kind entering with it), and its keys and values are written
into the freed rows; columns no row reaches any more are dropped on the left; when no
example waits, the last rows move into the holes.

Rules that keep per-example state (sampling streams, a step counter) may implement two
optional hooks, called without regard to which rule it is: `start(keys, decode)` before
the first step (one key per example, stable across batches, and a token-ids-to-text
function) and `keep(indices)` when finished examples leave the batch. Examples that join
a running batch cannot be added to a started rule, so each group of examples that enter
together gets a shallow copy of the rule, started with their keys, and each copy selects
for its own rows (`_RuleGroups`). Stateless rules implement neither hook and see every
row in one call.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch

from dasd.decoding.cache import GrowingLayer, growing_cache
from dasd.decoding.rules import Selection, SelectionRule
from dasd.errors import DasdError

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


def _engine_cache(model, room: int):
    """An in-place cache whose every layer supports the row operations of `_Rows`."""
    cache = growing_cache(model, room=room, sliding=True)
    other = sorted({type(layer).__name__ for layer in cache.layers
                    if not isinstance(layer, GrowingLayer)})
    if other:
        raise DasdError(f"the step engine decodes models with full or sliding-window "
                        f"attention; this model's cache has {', '.join(other)} layers")
    return cache


class _Rows:
    """The forward batch: slot s holds one example, its reference context in row 2s and its
    base context in row 2s + 1. Every row's cached tokens are the last `positions[row]`
    columns of the cache (the mask hides the rest); `pending[row]` is the token it feeds at
    the next step. `order` lists the slot of each decoding example in the order the rule
    sees them; `free` lists slots whose example has ended."""

    def __init__(self, model, pad_id: int, room: int) -> None:
        self.model, self.pad_id, self.room = model, pad_id, room
        self.device = next(model.parameters()).device
        self.reset(0)

    def reset(self, slots: int) -> None:
        """A fresh cache with `slots` free slots."""
        self.cache = _engine_cache(self.model, self.room)
        long = {"dtype": torch.long, "device": self.device}
        self.mask = torch.zeros((2 * slots, 0), **long)
        self.positions = torch.zeros(2 * slots, **long)
        self.pending = torch.zeros(2 * slots, **long)
        self.free, self.order = list(range(slots)), []

    def admit(self, ref_prompts: Sequence[Sequence[int]],
              base_prompts: Sequence[Sequence[int]]) -> None:
        """Put examples in free slots; they join the rule's order after the others."""
        slots, self.free = self.free[:len(ref_prompts)], self.free[len(ref_prompts):]
        for side, prompts in ((0, ref_prompts), (1, base_prompts)):
            self._prefill([2 * s + side for s in slots], prompts)
        self.order.extend(slots)

    def _prefill(self, rows: list[int], prompts: Sequence[Sequence[int]]) -> None:
        """Cache all but the last token of each prompt in `rows` (one forward, padded to
        the longest of them); the last token is fed with everyone's at the next step."""
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        ids, real = left_pad([p[:-1] for p in prompts], self.pad_id, self.device)
        rows_t = torch.tensor(rows, dtype=torch.long, device=self.device)
        if ids.shape[1]:
            states = self._prompt_states(ids, real)
            self._make_room(ids.shape[1], states)
            for layer, (keys, values) in zip(self.cache.layers, states, strict=True):
                layer.write_rows(rows_t, keys, values)
        lengths = real.sum(-1)
        width = self.mask.shape[1]
        self.mask[rows_t] = (torch.arange(width, device=self.device)
                             >= width - lengths[:, None]).long()
        self.positions[rows_t] = lengths
        self.pending[rows_t] = torch.tensor([p[-1] for p in prompts], device=self.device)

    def _prompt_states(self, ids: torch.Tensor, real: torch.Tensor
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of left-padded prompts, per layer, padding columns zeroed."""
        cache = _engine_cache(self.model, room=1)
        positions = (real.cumsum(-1) - 1).clamp(min=0)
        self.model(input_ids=ids, attention_mask=real, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1)
        pad = (real == 0)[:, None, :, None]
        return [(layer.keys.masked_fill(pad, 0), layer.values.masked_fill(pad, 0))
                for layer in cache.layers]

    def _make_room(self, width: int, states: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Make at least `width` columns visible, adding zero columns on the left."""
        extra = width - self.mask.shape[1]
        if not self.cache.layers[0].is_initialized:
            for layer, (keys, values) in zip(self.cache.layers, states, strict=True):
                layer.reserve(len(self.mask), width, keys, values)
        elif extra > 0:
            for layer in self.cache.layers:
                layer.widen(extra)
        if extra > 0:
            self.mask = torch.cat([self.mask.new_zeros((len(self.mask), extra)), self.mask], -1)

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed every row its pending token; reference and base log-probabilities [B, V],
        in the rule's order."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.mask), 1))], dim=-1)
        logits = self.model(input_ids=self.pending[:, None], attention_mask=self.mask,
                            position_ids=self.positions[:, None], cache=self.cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1].float()
        self.positions += 1
        logprobs = torch.log_softmax(logits, dim=-1)
        if self.order == list(range(len(self.order))) and not self.free:
            return logprobs[0::2], logprobs[1::2]
        slots = torch.tensor(self.order, device=self.device)
        return logprobs[2 * slots], logprobs[2 * slots + 1]

    def advance(self, keep: list[int], tokens: torch.Tensor) -> None:
        """The examples at `keep` (indices in the rule's order) go on with `tokens`, one
        each; the slots of the others are freed."""
        survivors = [self.order[i] for i in keep]
        self.free = sorted(set(self.free) | set(self.order) - set(survivors))
        self.order = survivors
        slots = torch.tensor(survivors, dtype=torch.long, device=self.device)
        self.pending[2 * slots] = tokens
        self.pending[2 * slots + 1] = tokens

    def settle(self) -> None:
        """Close the holes of free slots (the last rows move in) and drop the columns on
        the left that no row reaches."""
        if self.free:
            count = len(self.order)
            holes = [s for s in self.free if s < count]
            movers = sorted(s for s in self.order if s >= count)
            if movers:
                source = torch.tensor([2 * s + i for s in movers for i in (0, 1)],
                                      device=self.device)
                target = torch.tensor([2 * s + i for s in holes for i in (0, 1)],
                                      device=self.device)
                for layer in self.cache.layers:
                    layer.move_rows(source, target)
                for name in ("mask", "positions", "pending"):
                    getattr(self, name)[target] = getattr(self, name)[source]
                moved = dict(zip(movers, holes, strict=True))
                self.order = [moved.get(s, s) for s in self.order]
            for layer in self.cache.layers:
                layer.keep_rows(2 * count)
            self.mask, self.positions = self.mask[:2 * count], self.positions[:2 * count]
            self.pending, self.free = self.pending[:2 * count], []
        unused = self.mask.shape[1] - int(self.positions.max()) if len(self.order) else 0
        if unused > 0:
            for layer in self.cache.layers:
                layer.trim(unused)
            self.mask = self.mask[:, unused:]


def _budgets(max_new_tokens: int | Sequence[int], n: int) -> list[int]:
    if isinstance(max_new_tokens, int):
        return [max_new_tokens] * n
    if len(max_new_tokens) != n:
        raise ValueError(f"got {len(max_new_tokens)} max_new_tokens for {n} examples")
    return list(max_new_tokens)


class _RuleGroups:
    """The rule as the engine calls it. A stateless rule selects for every row at once; a
    rule with `start` gets one shallow copy per group of examples that entered together
    (started with their keys), each selecting for its own rows, which follow each other in
    the order the groups entered."""

    def __init__(self, rule: SelectionRule, decode: Callable[[list[int]], str] | None) -> None:
        self.rule, self.decode = rule, decode
        self.stateful = hasattr(rule, "start")
        self.groups: list[tuple[SelectionRule, int]] = []  # (started copy, its examples)

    def enter(self, keys: Sequence[object], fresh: bool) -> None:
        """Examples join (after the others, or alone when `fresh`)."""
        if self.stateful:
            group = copy.copy(self.rule)
            group.start(list(keys), self.decode)
            self.groups = [*([] if fresh else self.groups), (group, len(keys))]

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection:
        if not self.stateful:
            return self.rule.select(ref_logprobs, base_logprobs)
        parts, start = [], 0
        for group, count in self.groups:
            rows = slice(start, start + count)
            parts.append(group.select(ref_logprobs[rows], base_logprobs[rows]))
            start += count
        if len(parts) == 1:
            return parts[0]
        return Selection(torch.cat([p.tokens for p in parts]),
                         torch.cat([p.categories for p in parts]))

    def keep(self, indices: list[int]) -> None:
        """Only the examples at `indices` (in row order) go on."""
        groups, start = [], 0
        for group, count in self.groups:
            mine = [i - start for i in indices if start <= i < start + count]
            if mine and len(mine) < count and hasattr(group, "keep"):
                group.keep(torch.tensor(mine, dtype=torch.long))
            if mine:
                groups.append((group, len(mine)))
            start += count
        self.groups = groups


@torch.inference_mode()
def stream_pairs(model, ref_prompts: Sequence[Sequence[int]],
                 base_prompts: Sequence[Sequence[int]], rule: SelectionRule,
                 eos_ids: Sequence[int], max_new_tokens: int | Sequence[int], pad_id: int,
                 on_step: Callable[[int], None] | None = None, *,
                 keys: Sequence[object] | None = None,
                 decode: Callable[[list[int]], str] | None = None,
                 batch_size: int | None = None,
                 continuous: bool = True) -> Iterator[tuple[int, TokenTrace]]:
    """`decode_pairs`, yielding (example index, trace) as each example ends."""
    n = len(ref_prompts)
    if len(base_prompts) != n:
        raise ValueError("ref_prompts and base_prompts must have the same length")
    if keys is None:
        keys = [(tuple(r), tuple(b)) for r, b in zip(ref_prompts, base_prompts, strict=True)]
    if len(keys) != n:
        raise ValueError(f"got {len(keys)} keys for {n} examples")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    budgets = _budgets(max_new_tokens, n)
    traces = [TokenTrace() for _ in range(n)]
    for example in range(n):
        if budgets[example] <= 0:
            yield example, traces[example]
    waiting = deque(e for e in range(n) if budgets[e] > 0)
    if not waiting:
        return
    width = min(batch_size or n, n)
    rows = _Rows(model, pad_id, room=max(1, min(max(budgets), 256)))
    groups = _RuleGroups(rule, decode)
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=rows.device)
    active: list[int] = []  # examples decoding, in the order of their rows
    while active or waiting:
        room = width - len(active) if continuous or not active else 0
        entering = [waiting.popleft() for _ in range(min(len(waiting), room))]
        if entering:
            if not active:
                rows.reset(len(entering))
            groups.enter([keys[e] for e in entering], fresh=not active)
            rows.admit([ref_prompts[e] for e in entering], [base_prompts[e] for e in entering])
            active += entering
        rows.settle()

        ref_lp, base_lp = rows.step()
        selection = groups.select(ref_lp, base_lp)
        stats = step_statistics(ref_lp, base_lp, selection.tokens).tolist()
        tokens, categories = selection.tokens.tolist(), selection.categories.tolist()
        is_eos = torch.isin(selection.tokens, eos).tolist()
        keep = []
        for i, example in enumerate(active):
            trace = traces[example]
            record_step(trace, tokens[i], categories[i], stats[i])
            if is_eos[i]:
                trace.finish_reason = FINISH_EOS
            elif len(trace.token_ids) < budgets[example]:
                keep.append(i)
        if on_step:
            on_step(len(active))
        if len(keep) < len(active):
            kept = set(keep)
            for i, example in enumerate(active):
                if i not in kept:
                    yield example, traces[example]
            groups.keep(keep)
        keep_t = torch.tensor(keep, dtype=torch.long, device=selection.tokens.device)
        rows.advance(keep, selection.tokens[keep_t])
        active = [active[i] for i in keep]


def decode_pairs(model, ref_prompts: Sequence[Sequence[int]], base_prompts: Sequence[Sequence[int]],
                 rule: SelectionRule, eos_ids: Sequence[int],
                 max_new_tokens: int | Sequence[int], pad_id: int,
                 on_step: Callable[[int], None] | None = None, *,
                 keys: Sequence[object] | None = None,
                 decode: Callable[[list[int]], str] | None = None,
                 batch_size: int | None = None, continuous: bool = True) -> list[TokenTrace]:
    """Decode examples from their reference and base prompt token ids; one trace each, in
    input order.

    `max_new_tokens`: one limit for all, or one per example. `batch_size`: how many
    examples decode at once (default: all); with `continuous` an ending example's rows go
    to the next waiting one at once, otherwise the next examples wait for the whole batch.
    `on_step(n)` is called after each step with the number of tokens emitted in it.
    `keys` name the examples for stateful rules (their random streams are seeded by it,
    so a key decodes the same in any batch); by default an example's key is its prompts.
    `decode` turns token ids into text, for rules that watch the emitted text.
    """
    traces: list[TokenTrace] = [TokenTrace() for _ in ref_prompts]
    for example, trace in stream_pairs(model, ref_prompts, base_prompts, rule, eos_ids,
                                       max_new_tokens, pad_id, on_step, keys=keys,
                                       decode=decode, batch_size=batch_size,
                                       continuous=continuous):
        traces[example] = trace
    return traces


def decode_batches(decoder: Callable[..., list[TokenTrace]], sizes: Sequence[int], model,
                   ref_prompts: Sequence[Sequence[int]], base_prompts: Sequence[Sequence[int]],
                   rule: SelectionRule, eos_ids: Sequence[int], max_new_tokens: int,
                   pad_id: int, on_step: Callable[[int], None] | None = None, *,
                   keys: Sequence[object] | None = None,
                   decode: Callable[[list[int]], str] | None = None
                   ) -> Iterator[list[TokenTrace]]:
    """The traces of consecutive batches of `sizes` examples, each batch yielded as soon as
    all of its examples have ended (so a caller can write them in input order).

    With the step engine (`decoder` is `decode_pairs`) the batches run as one stream of at
    most max(sizes) examples at a time, continuously refilled; any other decoder (with the
    `decode_pairs` signature) is called batch by batch."""
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    if len(ref_prompts) != bounds[-1]:
        raise ValueError(f"batches of {bounds[-1]} examples for {len(ref_prompts)} prompts")
    if decoder is not decode_pairs:
        for start, end in pairwise(bounds):
            yield decoder(model, ref_prompts[start:end], base_prompts[start:end], rule, eos_ids,
                          max_new_tokens, pad_id, on_step,
                          keys=None if keys is None else keys[start:end], decode=decode)
        return
    traces: list[TokenTrace | None] = [None] * len(ref_prompts)
    ended, batch = 0, 0
    stream = stream_pairs(model, ref_prompts, base_prompts, rule, eos_ids, max_new_tokens,
                          pad_id, on_step, keys=keys, decode=decode,
                          batch_size=max(sizes, default=1))
    for example, trace in stream:
        traces[example] = trace
        while ended < len(traces) and traces[ended] is not None:
            ended += 1
        while batch < len(sizes) and bounds[batch + 1] <= ended:
            yield traces[bounds[batch]:bounds[batch + 1]]
            batch += 1
    for start, end in pairwise(bounds[batch:]):  # empty batches at the end
        yield traces[start:end]
