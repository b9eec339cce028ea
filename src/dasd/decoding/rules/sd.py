"""Plain self-distillation: greedy decoding of the reference context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dasd.decoding.rules.common import HARD, Selection, label_steps


@dataclass
class SDRule:
    """Greedy reference decoding (Yang et al., ACL 2024), the paper's "SD" baseline.

    `tau` only labels the steps the way DASD would (reserved when the base probability of
    the reference top-1 reaches it, hard otherwise); it never changes the tokens.
    """

    # Exact under draft-and-verify: a pure function of one step's two distributions.
    supports_draft_verify: ClassVar[bool] = True

    tau: float = field(default=0.2, metadata={
        "help": "labels only: p_base from which a step counts as reserved, not hard (0.2)"})

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection:
        tokens = ref_logprobs.argmax(-1)
        base_top1 = base_logprobs.argmax(-1)
        passed = base_logprobs.gather(-1, tokens[:, None]).squeeze(-1).exp() >= self.tau
        return Selection(tokens, label_steps(tokens, tokens, base_top1, passed, HARD))
