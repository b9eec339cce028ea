"""Loss masks over training tokens: offline ones write a row's `loss_mask` (Mask-PPL)."""

from dasd.training.masks.mask_ppl import (
    add_mask_ppl,
    mask_ppl_file,
    ppl_mask,
    teacher_forced_logprobs,
)

__all__ = ["add_mask_ppl", "mask_ppl_file", "ppl_mask", "teacher_forced_logprobs"]
