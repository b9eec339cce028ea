"""What an on-policy method is: a name, its paper, its default settings and its loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# loss(student_logits [B,T,V], teacher_logits [B,T,V], mask [B,T], config) -> scalar
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """One registry entry. `defaults` fill the config fields the user left unset (None):
    the settings of the method's paper or launcher, cited in `paper`."""

    name: str
    paper: str
    loss: LossFn
    defaults: dict[str, Any] = field(default_factory=dict)
