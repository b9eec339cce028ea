"""DASD: the first reference top-K candidate the base model finds likely enough."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from dasd.decoding.rules.common import BASE_SELECTED, HARD, Selection, label_steps, ranked_top_k
from dasd.errors import DasdError


@dataclass
class DASDRule:
    """Distribution-aligned selection (Zhang et al., arXiv 2606.00628, Section 3.3).

    Candidates are the reference context's `top_k` tokens in descending reference
    probability; the first whose base-context probability is >= `tau` is emitted. If none
    passes, `fallback="ref"` emits the reference top-1 (a "hard" token) and
    `fallback="base"` the base top-1 ("base-selected").

    >>> rule = DASDRule(top_k=6, tau=0.2, fallback="ref")
    >>> rule.select(ref_logprobs, base_logprobs).tokens  # doctest: +SKIP
    """

    # Exact under draft-and-verify: a pure function of one step's two distributions, needing
    # only the reference top-K and the base tokens with p >= tau (at most floor(1/tau)).
    supports_draft_verify: ClassVar[bool] = True

    top_k: int = field(default=6, metadata={"help": "reference candidates K (paper: 6)"})
    tau: float = field(default=0.2, metadata={
        "help": "base-probability threshold in (0, 1] a candidate must reach (paper: 0.2)"})
    fallback: Literal["ref", "base"] = field(default="ref", metadata={
        "help": "token when no candidate passes: reference or base top-1 (paper: ref)"})

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise DasdError(f"top_k must be an integer >= 1 (paper: 6); got {self.top_k!r}")
        if not 0 < self.tau <= 1:
            raise DasdError(f"tau must be in (0, 1] (paper: 0.2); got {self.tau!r}")
        if self.fallback not in ("ref", "base"):
            raise DasdError(f"fallback must be 'ref' or 'base'; got {self.fallback!r}")

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection:
        candidates = ranked_top_k(ref_logprobs, self.top_k)           # [B, K]
        passes = base_logprobs.gather(-1, candidates).exp() >= self.tau  # [B, K]
        passed = passes.any(-1)
        first_passing = candidates.gather(-1, passes.int().argmax(-1, keepdim=True)).squeeze(-1)
        ref_top1 = candidates[:, 0]
        base_top1 = base_logprobs.argmax(-1)
        fallback = ref_top1 if self.fallback == "ref" else base_top1
        tokens = torch.where(passed, first_passing, fallback)
        fallback_category = HARD if self.fallback == "ref" else BASE_SELECTED
        categories = label_steps(tokens, ref_top1, base_top1, passed, fallback_category)
        return Selection(tokens, categories)
