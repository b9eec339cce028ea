"""DASD in lockstep inside one vLLM engine: both contexts of an example decode as two
requests, and a batch-level logits processor makes them emit the same token.

Each example is a pair of requests, its reference and its base context, that carry
`extra_args = {"dasd_pair": {"pair": i, "role": "ref" | "base"}}`. vLLM's v1 engine keeps
its running requests in a persistent batch and tells every logits processor how the batch
changed before each step (`BatchUpdate`: the added, removed and moved slots); `PairBook`
follows those changes and knows which slots hold which pair. At every step,
`LockstepCore.apply` takes, for each pair whose two requests are both in the batch at the
same output length, the log-softmax of both rows, asks the same `SelectionRule` as the
transformers engine for the token (every rule: dasd with its guard, sd, base, hint,
dasd-sample), and forces both rows to it (every other logit -inf), so greedy sampling
appends it to both. The step's statistics (p_ref, p_base, category, ranks, base entropy)
are those of `dasd.decoding.engine.step_statistics`, recorded per pair by a sink.

Nothing makes vLLM schedule a pair's two requests in the same step: a token budget, a
chunked prefill or a preemption can split them, and a row in the middle of a chunked
prefill gets logits whose sample is thrown away. So the driver (`decode_pairs_lockstep`)
never trusts a pair: after the engine returns, a pair counts only when both requests
produced the same tokens and the processor recorded exactly those tokens, one
selection per token. Any other pair (split, desynced) is decoded again; a pair that fails
twice is handed to a fallback decoder (draft-and-verify). A request that runs ahead of
its partner is stopped at once (forced to EOS), so a split pair costs little before it
is decoded again. The summary says how often each happened.

The engine is anything with `generate(requests) -> outputs` where a request is
`(prompt token ids, SamplingParams-like with extra_args and max_tokens)` and an output
has `.outputs[0].token_ids`; `VLLMLockstepEngine` wraps a real `vllm.LLM`, the tests use a
fake persistent batch around a tiny transformers model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dasd.decoding.engine import TokenTrace, record_step, step_statistics
from dasd.decoding.rules import Selection, SelectionRule

EXTRA_KEY = "dasd_pair"
REF, BASE = "ref", "base"
FORCE = "force"  # a request that must emit `tokens` (draft-and-verify's linear scoring)


@dataclass
class Member:
    """One request of a pair in the persistent batch: its pair, its role and its output
    token ids (vLLM's live list, which grows as tokens are sampled)."""

    pair: int
    role: str
    output: list[int]
    info: dict[str, Any] = field(default_factory=dict)  # the request's pairing arguments


def pair_info(params: Any) -> dict[str, Any] | None:
    """The pairing a request carries in `SamplingParams.extra_args`, or None."""
    extra = getattr(params, "extra_args", None) or {}
    return extra.get(EXTRA_KEY)


class PairBook:
    """Which slot of the persistent batch holds which member of which pair.

    `update` applies one `BatchUpdate` as vLLM's builtin processors do: slots removed and
    not refilled, then added requests (a slot reused by a request without pairing is
    cleared), then moves in order (a UNIDIRECTIONAL move empties its source, a SWAP
    exchanges the two slots)."""

    def __init__(self) -> None:
        self.slots: dict[int, Member] = {}
        self.seen: dict[tuple[int, str], Member] = {}  # in the batch or not, by pair and role

    def update(self, batch_update: Any) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.slots.pop(index, None)
        for index, params, _prompt, output in batch_update.added:
            info = pair_info(params)
            if info is None:
                self.slots.pop(index, None)
            else:
                member = Member(int(info["pair"]), info["role"], output, info)
                self.slots[index] = self.seen[member.pair, member.role] = member
        for source, target, direction in batch_update.moved:
            moving, other = self.slots.pop(source, None), self.slots.pop(target, None)
            if moving is not None:
                self.slots[target] = moving
            if other is not None and _is_swap(direction):
                self.slots[source] = other

    def in_step(self) -> list[tuple[int, int, int]]:
        """(pair, reference slot, base slot) of every pair whose two requests are both in
        the batch at the same output length, in slot order of the reference."""
        found: dict[int, dict[str, int]] = {}
        for slot, member in self.slots.items():
            found.setdefault(member.pair, {})[member.role] = slot
        pairs = []
        for pair, roles in found.items():
            if REF in roles and BASE in roles and \
                    len(self.slots[roles[REF]].output) == len(self.slots[roles[BASE]].output):
                pairs.append((pair, roles[REF], roles[BASE]))
        return sorted(pairs, key=lambda p: p[1])


    def ahead(self) -> list[tuple[int, int]]:
        """(slot, stop token) of every paired request in the batch that has emitted more
        tokens than its partner (one that has not been added yet has emitted none): its
        pair is split and will be decoded again, so it is stopped at once."""
        stops = []
        for slot, member in self.slots.items():
            if member.role not in (REF, BASE) or member.info.get("stop") is None:
                continue
            partner = self.seen.get((member.pair, BASE if member.role == REF else REF))
            if len(member.output) > (len(partner.output) if partner else 0):
                stops.append((slot, int(member.info["stop"])))
        return stops


def _is_swap(direction: Any) -> bool:
    return getattr(direction, "name", str(direction)).upper().endswith("SWAP")


@dataclass
class PairRules:
    """The selection rule of every pair: one shared object for a stateless rule, one
    started copy per pair for a stateful one (`start(keys, decode)`: hint, dasd-sample),
    keyed as the transformers engine keys its examples."""

    rule: SelectionRule
    keys: Sequence[object]
    decode: Callable[[list[int]], str] | None = None
    _started: dict[int, SelectionRule] = field(default_factory=dict)

    def select(self, pairs: Sequence[int], ref_logprobs: torch.Tensor,
               base_logprobs: torch.Tensor) -> Selection:
        if not hasattr(self.rule, "start"):
            return self.rule.select(ref_logprobs, base_logprobs)
        parts = [self._rule(pair).select(ref_logprobs[i:i + 1], base_logprobs[i:i + 1])
                 for i, pair in enumerate(pairs)]
        return Selection(torch.cat([p.tokens for p in parts]),
                         torch.cat([p.categories for p in parts]))

    def started(self) -> list[int]:
        """The pairs whose stateful rule has started."""
        return list(self._started)

    def restart(self, pair: int) -> None:
        """Forget a pair's state (its requests are decoded again from the start)."""
        self._started.pop(pair, None)

    def _rule(self, pair: int) -> SelectionRule:
        if pair not in self._started:
            started = copy.copy(self.rule)
            started.start([self.keys[pair]], self.decode)
            self._started[pair] = started
        return self._started[pair]


@dataclass
class StepRecord:
    """What the processor chose for a pair at one step."""

    step: int  # the output length before the token
    token: int
    category: int
    stats: list[float]


class LockstepCore:
    """The logits processor's work, apart from vLLM's class: `update_state` follows the
    batch, `apply` selects and forces every pair in step and records it with `sink`."""

    def __init__(self, rules: PairRules, sink: Callable[[int, StepRecord], None],
                 book: PairBook | None = None) -> None:
        self.book, self.rules, self.sink = book or PairBook(), rules, sink

    def update_state(self, batch_update: Any) -> None:
        self.book.update(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        self._force_requests(logits)
        self._stop_split_pairs(logits)
        pairs = self.book.in_step()
        if not pairs:
            return logits
        ref_rows = torch.tensor([r for _, r, _ in pairs], device=logits.device)
        base_rows = torch.tensor([b for _, _, b in pairs], device=logits.device)
        ref_lp = torch.log_softmax(logits[ref_rows], dim=-1)  # vLLM's logits are float32
        base_lp = torch.log_softmax(logits[base_rows], dim=-1)
        ids = [p for p, _, _ in pairs]
        selection = self.rules.select(ids, ref_lp, base_lp)
        stats = step_statistics(ref_lp, base_lp, selection.tokens).tolist()
        force(logits, ref_rows, selection.tokens)
        force(logits, base_rows, selection.tokens)
        tokens, categories = selection.tokens.tolist(), selection.categories.tolist()
        for i, (pair, ref_slot, _) in enumerate(pairs):
            step = len(self.book.slots[ref_slot].output)
            self.sink(pair, StepRecord(step, tokens[i], categories[i], stats[i]))
        return logits

    def _stop_split_pairs(self, logits: torch.Tensor) -> None:
        """A request that ran ahead of its partner emits its stop token (EOS): the pair is
        decoded again anyway, so the engine spends nothing more on it."""
        stops = self.book.ahead()
        if stops:
            rows, tokens = (torch.tensor(column, device=logits.device)
                            for column in zip(*stops, strict=True))
            force(logits, rows, tokens)

    def _force_requests(self, logits: torch.Tensor) -> None:
        """Rows of `FORCE` requests emit their next given token."""
        forced = [(slot, member.info["tokens"][len(member.output)])
                  for slot, member in self.book.slots.items()
                  if member.role == FORCE and len(member.output) < len(member.info["tokens"])]
        if forced:
            rows, tokens = (torch.tensor(column, device=logits.device)
                            for column in zip(*forced, strict=True))
            force(logits, rows, tokens)


def force(logits: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> None:
    """Make `tokens[i]` the only possible token of row `rows[i]` (in place)."""
    chosen = logits[rows, tokens.to(logits.device)]
    logits[rows] = -torch.inf
    logits[rows, tokens.to(logits.device)] = torch.where(
        torch.isfinite(chosen), chosen, torch.zeros_like(chosen))


@dataclass
class LockstepSummary:
    """How the pairs of a lockstep decode went: decoded in lockstep at the first try,
    after a retry, or by the fallback."""

    pairs: int = 0
    first_try: int = 0
    retried: int = 0
    fallback: int = 0
    desyncs: int = 0  # attempts whose result was thrown away

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def assemble(records: Sequence[StepRecord], ref_ids: Sequence[int], base_ids: Sequence[int],
             eos_ids: Sequence[int]) -> TokenTrace | None:
    """The pair's trace, or None when the attempt is not trustworthy: the two requests'
    tokens differ, or the recorded selections are not exactly one per emitted token (a
    selection on a split pair, or one whose sample vLLM threw away)."""
    if list(ref_ids) != list(base_ids) or len(records) != len(ref_ids):
        return None
    trace = TokenTrace()
    for position, (record, token) in enumerate(zip(records, ref_ids, strict=True)):
        if record.step != position or record.token != token:
            return None
        record_step(trace, token, record.category, record.stats)
    if trace.token_ids and trace.token_ids[-1] in set(eos_ids):
        trace.finish_reason = "eos"
    return trace


def decode_pairs_lockstep(engine: Any, ref_prompts: Sequence[Sequence[int]],
                          base_prompts: Sequence[Sequence[int]], rule: SelectionRule,
                          eos_ids: Sequence[int], max_new_tokens: int, *,
                          keys: Sequence[object] | None = None,
                          decode: Callable[[list[int]], str] | None = None,
                          fallback: Callable[[list[int]], list[TokenTrace]] | None = None,
                          pairs_per_call: int | None = None,
                          retries: int = 1) -> tuple[list[TokenTrace], LockstepSummary]:
    """Decode every (reference, base) pair in lockstep on `engine`; (traces in input order,
    summary).

    `engine.run(requests, core)` runs the requests (prompt ids, `PairParams`) with `core`
    (a `LockstepCore`) as its logits processor and returns each request's output token
    ids. The pairs go `pairs_per_call` at a time (default: all at once). A pair that does
    not come out consistent is decoded again alone, where nothing can split it but a
    preemption, up to `retries` times; then `fallback(indices)` (e.g. draft-and-verify)
    returns its trace."""
    n = len(ref_prompts)
    if len(base_prompts) != n:
        raise ValueError("ref_prompts and base_prompts must have the same length")
    keys = list(keys) if keys is not None else [
        (tuple(r), tuple(b)) for r, b in zip(ref_prompts, base_prompts, strict=True)]
    traces: list[TokenTrace | None] = [None] * n
    summary = LockstepSummary(pairs=n)
    rules = PairRules(rule, keys, decode)
    prompts = (ref_prompts, base_prompts)
    width = pairs_per_call or max(n, 1)
    calls = [list(range(start, min(start + width, n))) for start in range(0, n, width)]
    for attempt in range(retries + 1):
        failed = []
        for pairs in calls:
            done = _attempt(engine, pairs, prompts, rules, eos_ids, max_new_tokens)
            for pair in pairs:
                if done.get(pair) is None:
                    failed.append(pair)
                else:
                    traces[pair] = done[pair]
                    summary.first_try += attempt == 0
                    summary.retried += attempt > 0
        summary.desyncs += len(failed)
        calls = [[pair] for pair in failed]  # alone from now on
        if not failed:
            break
    left = [pair for call in calls for pair in call]
    if left:
        if fallback is None:
            raise RuntimeError(f"{len(left)} pairs did not decode in lockstep and no fallback "
                               "was given")
        for pair, trace in zip(left, fallback(left), strict=True):
            traces[pair] = trace
        summary.fallback = len(left)
    return [t if t is not None else TokenTrace() for t in traces], summary


def _attempt(engine: Any, pairs: list[int], prompts: tuple[Sequence[Sequence[int]], ...],
             rules: PairRules, eos_ids: Sequence[int], max_new_tokens: int
             ) -> dict[int, TokenTrace | None]:
    """One engine call over `pairs`: each pair's trace, None where it cannot be trusted."""
    records: dict[int, list[StepRecord]] = {pair: [] for pair in pairs}
    for pair in pairs:
        rules.restart(pair)
    core = LockstepCore(rules, lambda pair, record: records[pair].append(record))
    stop = min(eos_ids) if eos_ids else None  # how a split pair is stopped early
    requests = [(list(prompts[i][pair]), _params(pair, role, max_new_tokens, stop))
                for pair in pairs for i, role in enumerate((REF, BASE))]
    outputs = engine.run(requests, core)
    return {pair: assemble(records[pair], outputs[2 * i], outputs[2 * i + 1], eos_ids)
            for i, pair in enumerate(pairs)}


@dataclass
class PairParams:
    """The sampling parameters of one request of a pair (greedy: the processor forces the
    token), shaped like `vllm.SamplingParams` where the lockstep reads it."""

    max_tokens: int
    extra_args: dict[str, Any]
    temperature: float = 0.0


def _params(pair: int, role: str, max_tokens: int, stop: int | None) -> PairParams:
    return PairParams(max_tokens, {EXTRA_KEY: {"pair": pair, "role": role, "stop": stop}})
