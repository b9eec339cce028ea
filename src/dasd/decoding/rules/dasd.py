"""DASD: the first reference top-K candidate the base model finds likely enough.

With the confidence guard (`guard`, gamma < 1) the reference top-1 is emitted whenever the
reference is more sure of it than gamma, whatever the base model thinks: on a weak base
model the paper's rule otherwise trades the reference's confident numbers for the base
model's (the tokens that carry the answer). gamma = 1 is the paper's rule, gamma = 0
plain self-distillation's tokens; the sweep between them is the DASD-SD frontier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from dasd.decoding.rules.common import (
    BASE_SELECTED,
    CONSISTENT,
    GUARDED,
    HARD,
    RESERVED,
    Selection,
    ranked_top_k,
)
from dasd.errors import DasdError


@dataclass
class CandidatePool:
    """One step of DASD before its choice: the reference top-K `candidates` [B, K] (most
    likely first), which of them reach tau (`passes`), which may be emitted (`pool`: those
    that pass, plus the reference top-1 where the guard fired) and the base top-1 [B]."""

    candidates: torch.Tensor
    passes: torch.Tensor
    pool: torch.Tensor
    base_top1: torch.Tensor
    fallback_ref: bool

    @property
    def first(self) -> torch.Tensor:
        """The column of the first candidate in the pool (0 where the pool is empty)."""
        return self.pool.int().argmax(-1)

    def emit(self, columns: torch.Tensor) -> Selection:
        """The candidate in `columns` [B] where the pool has one, else the fallback, with
        each step's category."""
        ref_top1 = self.candidates[:, 0]
        fallback = ref_top1 if self.fallback_ref else self.base_top1
        in_pool = self.pool.any(-1)
        chosen = self.candidates.gather(-1, columns[:, None]).squeeze(-1)
        tokens = torch.where(in_pool, chosen, fallback)
        passed = in_pool & self.passes.gather(-1, columns[:, None]).squeeze(-1)
        # The guard let in the reference top-1 although it failed tau; where no candidate
        # passed and the fallback is that same token, the paper's rule emits it too (hard).
        by_guard = in_pool & ~passed & ~(~self.passes.any(-1) & (fallback == ref_top1))
        categories = torch.full_like(tokens, HARD if self.fallback_ref else BASE_SELECTED)
        categories[passed] = RESERVED
        categories[by_guard] = GUARDED
        categories[(tokens == ref_top1) & (ref_top1 == self.base_top1)] = CONSISTENT
        return Selection(tokens, categories)


@dataclass
class DASDRule:
    """Distribution-aligned selection (Zhang et al., arXiv 2606.00628, Section 3.3).

    Candidates are the reference context's `top_k` tokens in descending reference
    probability; the first whose base-context probability is >= `tau` is emitted. If none
    passes, `fallback="ref"` emits the reference top-1 (a "hard" token) and
    `fallback="base"` the base top-1 ("base-selected"). With `guard` gamma < 1, a reference
    top-1 whose reference probability is > gamma is emitted in any case ("guarded" where
    the paper's rule would have emitted another token).

    >>> rule = DASDRule(top_k=6, tau=0.2, fallback="ref", guard=0.9)
    >>> rule.select(ref_logprobs, base_logprobs).tokens  # doctest: +SKIP
    """

    # Exact under draft-and-verify: a pure function of one step's two distributions, needing
    # only the reference top-K (the guard reads the top-1's probability) and the base tokens
    # with p >= tau (at most floor(1/tau)).
    supports_draft_verify: ClassVar[bool] = True

    top_k: int = field(default=6, metadata={"help": "reference candidates K (paper: 6)"})
    tau: float = field(default=0.2, metadata={
        "help": "base-probability threshold in (0, 1] a candidate must reach (paper: 0.2)"})
    fallback: Literal["ref", "base"] = field(default="ref", metadata={
        "help": "token when no candidate passes: reference or base top-1 (paper: ref)"})
    guard: float = field(default=1.0, metadata={
        "help": "confidence guard gamma in [0, 1]: emit the reference top-1 whenever its "
                "reference probability is > gamma, whatever the base model says; 1 = off "
                "(the paper), 0 = plain self-distillation's tokens",
        "omit_default": True})

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise DasdError(f"top_k must be an integer >= 1 (paper: 6); got {self.top_k!r}")
        if not 0 < self.tau <= 1:
            raise DasdError(f"tau must be in (0, 1] (paper: 0.2); got {self.tau!r}")
        if self.fallback not in ("ref", "base"):
            raise DasdError(f"fallback must be 'ref' or 'base'; got {self.fallback!r}")
        if not 0 <= self.guard <= 1:
            raise DasdError(f"guard must be in [0, 1] (1 = off, the paper's rule); "
                            f"got {self.guard!r}")

    def candidate_pool(self, ref_logprobs: torch.Tensor,
                       base_logprobs: torch.Tensor) -> CandidatePool:
        candidates = ranked_top_k(ref_logprobs, self.top_k)              # [B, K]
        passes = base_logprobs.gather(-1, candidates).exp() >= self.tau  # [B, K]
        pool = passes.clone()
        if self.guard < 1:
            pool[:, 0] |= ref_logprobs.gather(-1, candidates[:, :1]).squeeze(-1).exp() > self.guard
        return CandidatePool(candidates, passes, pool, base_logprobs.argmax(-1),
                             self.fallback == "ref")

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection:
        step = self.candidate_pool(ref_logprobs, base_logprobs)
        return step.emit(step.first)
