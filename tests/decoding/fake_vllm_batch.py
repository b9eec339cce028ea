"""A small fake of vLLM v1's scheduler and persistent batch around a transformers model, to
drive a logits processor as vLLM would (read from vLLM 0.11's `gpu_input_batch.py`,
`BatchUpdateBuilder` and the V1 scheduler):

- a token budget per step; prompts prefill in chunks of what is left of it (chunked
  prefill), or wait whole when `chunked` is off; at most `max_num_seqs` running;
- running requests are scheduled first, in admission order; when the KV cache
  (`kv_tokens`) cannot hold a step, the last admitted request is preempted (its computed
  tokens dropped, its output kept) and waits at the front to be recomputed; a step that
  preempted admits nobody;
- the persistent batch outlives a call, as vLLM's does (the finished requests of one call
  leave it at the next call's first step);
- every step, requests that are not scheduled leave the persistent batch (`removed`, or
  the source of a condensing move), new and resumed ones take the lowest free slot
  (`added`, with the request's live output list), holes are filled from the tail
  (UNIDIRECTIONAL moves), and `swap_every` adds SWAP moves as reordering backends do;
- one logits row per scheduled request, in slot order; greedy sampling; the sample of a
  row still inside its prefill is thrown away.

`preempt_at` {step: request index} preempts a request at a step, whatever the cache
holds: a desync injected on purpose.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

import torch


class MoveDirectionality(Enum):
    UNIDIRECTIONAL = auto()
    SWAP = auto()


@dataclass(frozen=True)
class BatchUpdate:
    batch_size: int
    removed: list[int]
    added: list[tuple[int, Any, list[int], list[int]]]
    moved: list[tuple[int, int, MoveDirectionality]]


@dataclass
class Request:
    prompt: list[int]
    params: Any
    output: list[int] = field(default_factory=list)
    computed: int = 0
    done: bool = False

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.output)


class FakePersistentBatch:
    def __init__(self, model, eos_ids, token_budget: int = 4096, max_num_seqs: int = 64,
                 kv_tokens: int | None = None, chunked: bool = True,
                 swap_every: int | None = None, preempt_at: dict[int, int] | None = None):
        self.model, self.eos = model, set(eos_ids)
        self.token_budget, self.max_num_seqs, self.kv_tokens = token_budget, max_num_seqs, kv_tokens
        self.chunked, self.swap_every = chunked, swap_every
        self.preempt_at = dict(preempt_at or {})
        self.calls, self.preemptions = 0, 0
        self.slots: list[tuple[int, int] | None] = []  # (call, request); kept across calls
        self.outputs: list[list[list[int]]] = []  # every call's outputs

    def run(self, requests, core) -> list[list[int]]:
        self.calls += 1
        reqs = [Request(list(prompt), params) for prompt, params in requests]
        waiting, running = deque(range(len(reqs))), []
        step = 0
        while waiting or running:
            scheduled = self._schedule(reqs, waiting, running, step)
            update = self._update(self.slots, scheduled, reqs, step)
            core.update_state(update)
            rows = [r for _, r in self.slots]
            logits = torch.stack([self._logits(reqs[r], scheduled[r]) for r in rows])
            logits = core.apply(logits)
            for row, r in enumerate(rows):
                self._advance(reqs[r], scheduled[r], int(logits[row].argmax()), running, r)
            step += 1
        self.outputs.append([req.output for req in reqs])
        return self.outputs[-1]

    def _schedule(self, reqs, waiting, running, step) -> dict[int, int]:
        budget, scheduled, preempted = self.token_budget, {}, self.preemptions
        victim = self.preempt_at.pop(step, None)
        if victim is not None and victim in running:
            self._preempt(reqs, running, waiting, victim)
        for r in list(running):
            if r not in running:
                continue  # preempted below
            need = min(reqs[r].length - reqs[r].computed, budget)
            while not self._fits(reqs, running, scheduled, r, need):
                last = running[-1]
                self._preempt(reqs, running, waiting, last)
                scheduled.pop(last, None)
                if last == r:
                    break
            if r not in running or need <= 0:
                continue
            scheduled[r], budget = need, budget - need
        if self.preemptions > preempted:
            return scheduled  # vLLM admits no waiting request in a step that preempted
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            r = waiting[0]
            need = reqs[r].length - reqs[r].computed
            if not self.chunked and need > budget:
                break
            need = min(need, budget)
            if not self._fits(reqs, running, scheduled, r, need):
                break
            waiting.popleft()
            running.append(r)
            scheduled[r], budget = need, budget - need
        return scheduled

    def _fits(self, reqs, running, scheduled, r, need) -> bool:
        if self.kv_tokens is None:
            return True
        held = sum(reqs[o].computed + scheduled.get(o, 0) for o in running if o != r)
        return held + reqs[r].computed + need <= self.kv_tokens

    def _preempt(self, reqs, running, waiting, r) -> None:
        running.remove(r)
        reqs[r].computed = 0  # recomputed on re-admission; the output is kept
        waiting.appendleft(r)
        self.preemptions += 1

    def _update(self, slots, scheduled, reqs, step) -> BatchUpdate:
        now = {(self.calls, r) for r in scheduled}
        removed = [i for i, entry in enumerate(slots) if entry is not None and entry not in now]
        for i in removed:
            slots[i] = None
        free = sorted(removed)
        added = []
        for r in scheduled:
            if (self.calls, r) in slots:
                continue
            index = free.pop(0) if free else len(slots)
            if index == len(slots):
                slots.append(None)
            slots[index] = (self.calls, r)
            added.append((index, reqs[r].params, reqs[r].prompt, reqs[r].output))
            removed = [i for i in removed if i != index]
        moved = []
        while None in slots:  # condense: the last slot fills the first hole
            hole = slots.index(None)
            while slots and slots[-1] is None:
                slots.pop()
            if hole >= len(slots):
                break
            moved.append((len(slots) - 1, hole, MoveDirectionality.UNIDIRECTIONAL))
            slots[hole] = slots.pop()
            removed = [i for i in removed if i != hole]
        if self.swap_every and step % self.swap_every == 0 and len(slots) > 1:
            moved.append((0, len(slots) - 1, MoveDirectionality.SWAP))
            slots[0], slots[-1] = slots[-1], slots[0]
        return BatchUpdate(len(slots), removed, added, moved)

    @torch.no_grad()
    def _logits(self, req: Request, scheduled: int) -> torch.Tensor:
        ids = (req.prompt + req.output)[:req.computed + scheduled]
        return self.model(torch.tensor([ids])).logits[0, -1]

    def _advance(self, req: Request, scheduled: int, token: int, running, r) -> None:
        req.computed += scheduled
        if req.computed < req.length:
            return  # inside its prefill: the sample is thrown away
        req.output.append(token)
        if token in self.eos or len(req.output) >= req.params.max_tokens:
            req.done = True
            running.remove(r)
