"""Which training tokens count in the loss.

Offline masks write a row's `loss_mask` before training (Mask-PPL); online token losses
replace the per-token loss inside the trainer (ProFit). `TOKEN_LOSSES` maps a config's
`loss` to a factory of the trainer's `token_loss` (None: TRL's own cross-entropy).
"""

from functools import partial

from dasd.training.masks.mask_ppl import (
    add_mask_ppl,
    mask_ppl_file,
    ppl_mask,
    teacher_forced_logprobs,
)
from dasd.training.masks.profit import profit_loss

MASKS = ("none", "mask_ppl")
TOKEN_LOSSES = {
    "nll": lambda config: None,
    "profit": lambda config: partial(profit_loss, threshold=config.profit_threshold),
}

__all__ = ["MASKS", "TOKEN_LOSSES", "add_mask_ppl", "mask_ppl_file", "ppl_mask",
           "profit_loss", "teacher_forced_logprobs"]
