"""The direction term alone, as a loss (`da-opsd-loss-only`; dasd's first DA-OPSD).

`mean_t omega_t D_t` with the routing of `da_opsd.py` and nothing else: no reward, no
cap. Measured on the embedded model it pushes ~80% of tokens away from the teacher, the
divergence grows step after step and the answers fall apart (Avg@4 0.150 -> 0.000 in 20
steps, docs/results.md). Kept as a named baseline of what the direction rule does unanchored.
"""

from __future__ import annotations

from dataclasses import dataclass

from dasd.training.losses import da_opsd_loss
from dasd.training.onpolicy.checks import check_weight
from dasd.training.onpolicy.da_opsd import Direction, metrics
from dasd.training.onpolicy.method import OnPolicyMethod, reward_weight_field


@dataclass
class DirectionLossOnly(Direction):
    reward_weight: float = reward_weight_field(0.0, "0: the direction term alone")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weight("reward_weight", self.reward_weight)


def loss(student_logits, teacher_logits, mask, settings: DirectionLossOnly):
    return da_opsd_loss(student_logits, teacher_logits, mask, settings.beta, settings.clip,
                        settings.rho, settings.weight)


METHOD = OnPolicyMethod(name="da-opsd-loss-only", paper="arXiv 2605.22263 (direction rule only)",
                loss=loss, settings=DirectionLossOnly, metrics=metrics,
                trainer_defaults={"learning_rate": 2e-4, "max_grad_norm": 1.0})
