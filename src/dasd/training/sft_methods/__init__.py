"""SFT methods: which training tokens count in the loss, one settings class each.

A method may `prepare(rows, model)` before training (an offline mask such as Mask-PPL
writes each row's `loss_mask`) and/or give a `token_loss()` that replaces the per-token
loss inside the trainer (ProFit); `sft` is TRL's plain cross-entropy. Adding one is a
file with its settings dataclass and a line in `SFT_METHODS`.
"""

from dataclasses import dataclass

from dasd.training.sft_methods.mask_ppl import (
    MaskPPL,
    add_mask_ppl,
    mask_ppl_file,
    ppl_mask,
    teacher_forced_logprobs,
)
from dasd.training.sft_methods.profit import ProFit, profit_loss


@dataclass
class PlainSFT:
    """`method: sft`: cross-entropy on every response token (the DASD recipe)."""


SFT_METHODS: dict[str, type] = {"sft": PlainSFT, "mask-ppl": MaskPPL, "profit": ProFit}

__all__ = ["SFT_METHODS", "MaskPPL", "PlainSFT", "ProFit", "add_mask_ppl", "mask_ppl_file",
           "ppl_mask", "profit_loss", "teacher_forced_logprobs"]
