"""DASD with sampling: diverse samples from the tokens DASD would accept.

The paper's DASD is greedy, so a problem gets one sample, and a wrong one is lost (the
paper names the missing diversity as a limitation). Here each step samples among the
candidates that pass tau (and the reference top-1 where the confidence guard fires) with
probability proportional to p_ref^(1/temperature); when none may be emitted the fallback
is taken as in DASD. Combined with `dasd generate --samples n` a problem gets n different
DASD samples, of which the training filter keeps the first correct one (or all).

Sampling is seeded per example as in hint-decoding (`row_seed(seed, key)`, the key being
the row id, so sample k of a problem draws its own stream and decodes the same in any
batch); temperature 0 is greedy, i.e. exactly `dasd`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dasd.decoding.rules.common import Selection
from dasd.decoding.rules.dasd import CandidatePool, DASDRule
from dasd.decoding.rules.hint import row_seed
from dasd.errors import DasdError


def sample_columns(step: CandidatePool, ref_logprobs: torch.Tensor, temperature: float,
                   uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, a column of the pool drawn with weight p_ref^(1/T) by the inverse CDF of one
    uniform in [0, 1); 0 where the pool is empty (the fallback is taken there)."""
    values = ref_logprobs.gather(-1, step.candidates).double()
    weights = torch.where(step.pool, ((values - values[:, :1]) / temperature).exp(), 0.0)
    cdf = weights.cumsum(-1)
    targets = uniforms.to(cdf.device, torch.float64)[:, None] * cdf[:, -1:]
    columns = torch.searchsorted(cdf, targets, right=True).squeeze(-1)
    # Rounding can land past the last pooled column: take the last one there.
    last = step.pool.shape[-1] - 1 - step.pool.flip(-1).int().argmax(-1)
    return torch.minimum(columns, last)


@dataclass
class SampledDASDRule(DASDRule):
    """DASD that samples among the accepted candidates in proportion to p_ref^(1/T).

    >>> rule = SampledDASDRule(temperature=1.0, guard=0.9, seed=0)
    >>> rule.start(keys=["ex-1", "ex-1#s2"])  # doctest: +SKIP
    """

    # Sampled and stateful: not a pure function of one step, so draft-and-verify refuses it.
    supports_draft_verify: ClassVar[bool] = False

    temperature: float = field(default=1.0, metadata={
        "help": "sample the accepted candidates with weight p_ref^(1/T); "
                "0 = greedy (exactly dasd)"})
    seed: int = field(default=0, metadata={"from_stage": True})  # the stage's seed

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise DasdError(f"temperature must be >= 0, 0 = greedy; got {self.temperature!r}")
        self._generators: list[torch.Generator] | None = None

    def start(self, keys: Sequence[object],
              decode: Callable[[list[int]], str] | None = None) -> None:
        """Begin a batch: one random stream per example, seeded by (seed, its key)."""
        self._generators = [torch.Generator().manual_seed(row_seed(self.seed, key))
                            for key in keys]

    def keep(self, indices: torch.Tensor) -> None:
        """Finished examples left the batch: keep the streams of the rows still decoding."""
        self._generators = [self._generators[i] for i in indices.tolist()]

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection:
        if self._generators is None or len(self._generators) != len(ref_logprobs):
            raise DasdError("SampledDASDRule.select needs start(keys) for this batch first: "
                            "decode with dasd.decoding.engine.decode_pairs")
        step = self.candidate_pool(ref_logprobs, base_logprobs)
        # One draw per row and step, used or not, so a row's stream depends on its step only.
        uniforms = torch.cat([torch.rand(1, generator=g, dtype=torch.float64)
                              for g in self._generators])
        if self.temperature == 0:
            return step.emit(step.first)
        return step.emit(sample_columns(step, ref_logprobs, self.temperature, uniforms))
