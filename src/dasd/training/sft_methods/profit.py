"""ProFit (arXiv 2601.09195; code: Utaotao/ProFit, `_profit_cross_entropy` in
`src/llamafactory/train/trainer_utils.py`): online, probability-guided token selection.

At every training step the *current* model's (detached) probability of each gold response
token is compared with a threshold (0.1): tokens below it contribute nothing to the loss.
The normaliser still counts them, as in the authors' code: the loss is the sum of the
kept tokens' negative log-likelihood divided by **all** response tokens, so a batch with
many dropped tokens gets a smaller loss, not a reweighted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch

from dasd.errors import DasdError

DEFAULT_THRESHOLD = 0.1


def check_threshold(threshold: float) -> float:
    if not 0 < threshold < 1:
        raise DasdError(f"ProFit threshold must be a probability in (0, 1) (paper: 0.1); "
                        f"got {threshold}")
    return threshold


def profit_loss(log_probs: torch.Tensor, label_mask: torch.Tensor, threshold: float,
                num_tokens: torch.Tensor | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, number of kept tokens) for one batch.

    `log_probs` [B, T]: log p(gold token) under the current model (any value where
    `label_mask` is 0); `label_mask` [B, T]: 1 on response tokens. `num_tokens` is the
    normaliser, by default the response tokens of this batch (the Trainer passes the count
    over all gradient-accumulation micro-batches instead).
    """
    label_mask = label_mask.bool()
    keep = label_mask & (log_probs.detach().exp() >= threshold)
    if num_tokens is None:
        num_tokens = label_mask.sum()
    total = -torch.where(keep, log_probs, torch.zeros_like(log_probs)).sum()
    return total / torch.as_tensor(num_tokens, device=total.device).clamp(min=1), keep.sum()


@dataclass
class ProFit:
    """`method: profit`: SFT whose loss skips, at every step, the tokens the current model
    gives a probability below the threshold (arXiv 2601.09195). By default on the
    original references."""

    threshold: float = field(default=DEFAULT_THRESHOLD, metadata={
        "help": "tokens with current-model p(gold) below this leave the loss (paper: 0.1)"})

    def __post_init__(self) -> None:
        check_threshold(self.threshold)

    def token_loss(self):
        return partial(profit_loss, threshold=self.threshold)
