"""Greedy decoding of the base context alone (the model without the reference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dasd.decoding.rules.common import BASE_SELECTED, Selection, label_steps


@dataclass
class BaseRule:
    """Greedy base decoding; steps where the reference top-1 differs are "base-selected"."""

    # Exact under draft-and-verify: a pure function of one step's two distributions.
    supports_draft_verify: ClassVar[bool] = True

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection:
        tokens = base_logprobs.argmax(-1)
        ref_top1 = ref_logprobs.argmax(-1)
        never = torch.zeros_like(tokens, dtype=torch.bool)
        return Selection(tokens, label_steps(tokens, ref_top1, tokens, never, BASE_SELECTED))
