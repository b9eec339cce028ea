"""What an on-policy method is: a name, its paper, its settings and its loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# loss(student_logits [B,T,V], teacher_logits [B,T,V], mask [B,T], settings) -> scalar
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]
# metrics(the same, detached) -> {name: value}: what a method logs per step beside its loss
MetricsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], dict[str, float]]


@dataclass(frozen=True)
class OnPolicyMethod:
    """One registry entry: the loss, its typed `settings` class (defaults = the paper's)
    and `trainer_defaults`, the TRL arguments of the method's paper or launcher (cited in
    `paper`) that apply unless the config sets them. Every settings class has a
    `reward_weight` (`reward_weight_field`): the weight of the group-relative policy
    gradient on the task's verifiable reward that the trainer adds to `loss`."""

    name: str
    paper: str
    loss: LossFn
    settings: type
    trainer_defaults: dict[str, Any] = field(default_factory=dict)
    metrics: MetricsFn | None = None


def reward_weight_field(default: float, paper: str) -> Any:
    """The `reward_weight` setting: weight of TRL's GRPO loss (SDPOTrainer's policy loss:
    rewards normalised within each prompt's `num_generations` rollouts) on the task's
    verifiable reward, added to the method's loss. At 0 (left out of records, so outputs
    made before it existed stay valid) the rewards are only logged."""
    return field(default=default, metadata={
        "help": f"weight of a group-relative policy-gradient (GRPO) loss on the task's "
                f"verifiable reward, the checker `dasd eval` uses; needs num_generations "
                f">= 2; 0 = distillation only, rewards still logged ({paper})",
        "omit_default": default == 0.0})
