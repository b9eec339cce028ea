"""PW-OPSD, Position-Weighted OPSD (arXiv 2605.21606; code SaFo-Lab/PW-OPSD, `pwopsd`).

OPSD's clipped forward KL (beta 0) times `w_t = w_min + (1 - w_min) sigmoid((f_t - tau)/s)`
with f_t the relative position in that rollout; per-sequence weighted mean, then batch
mean. Their launcher: lr 5e-6, max grad norm 0.1, T 1.1, LoRA 64/128.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dasd.errors import DasdError
from dasd.training.losses import pw_opsd_loss
from dasd.training.onpolicy.checks import check_divergence, check_unit, check_weight
from dasd.training.onpolicy.method import OnPolicyMethod, reward_weight_field


@dataclass
class PWOPSD:
    beta: float = field(default=0.0, metadata={
        "help": "generalized JSD: 0 forward KL(T||S), 1 reverse KL (PW-OPSD: 0)"})
    clip: float | None = field(default=0.05, metadata={
        "help": "cap on each vocabulary term of the divergence (0.05); none = no cap"})
    w_min: float = field(default=0.25, metadata={"help": "weight floor w_min (paper: 0.25)"})
    tau: float = field(default=0.30, metadata={
        "help": "relative position of the weight's midpoint (paper: 0.30)"})
    s: float = field(default=0.10, metadata={"help": "sigmoid width s (paper: 0.10)"})
    reward_weight: float = reward_weight_field(0.0, "PW-OPSD: 0, distillation only")

    def __post_init__(self) -> None:
        check_divergence(self.beta, self.clip)
        check_unit("w_min", self.w_min)
        check_weight("reward_weight", self.reward_weight)
        if not self.s > 0:
            raise DasdError(f"s must be > 0; got {self.s}")


def loss(student_logits, teacher_logits, mask, settings: PWOPSD):
    return pw_opsd_loss(student_logits, teacher_logits, mask, settings.beta, settings.clip,
                        settings.w_min, settings.tau, settings.s)


METHOD = OnPolicyMethod(name="pw-opsd", paper="arXiv 2605.21606", loss=loss, settings=PWOPSD,
                trainer_defaults={"learning_rate": 5e-6, "max_grad_norm": 0.1})
