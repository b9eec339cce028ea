"""What an on-policy method is: a name, its paper, its settings and its loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# loss(student_logits [B,T,V], teacher_logits [B,T,V], mask [B,T], settings) -> scalar
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """One registry entry: the loss, its typed `settings` class (defaults = the paper's)
    and `trainer_defaults`, the TRL arguments of the method's paper or launcher (cited in
    `paper`) that apply unless the config sets them."""

    name: str
    paper: str
    loss: LossFn
    settings: type
    trainer_defaults: dict[str, Any] = field(default_factory=dict)
