"""OPSD, On-Policy Self-Distillation (arXiv 2601.18734; code siyan-zhao/OPSD).

Generalized JSD between the privileged teacher and the student on the student's rollout,
each vocabulary term capped at `clip` (their `jsd_token_clip` 0.05), mean over tokens.
Their scripts: LoRA r64/alpha128, lr 2e-4, beta 0.5, sampling T 1.1, top-p 0.95, top-k 20.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dasd.training.losses import opsd_loss
from dasd.training.onpolicy.checks import check_divergence, check_weight
from dasd.training.onpolicy.method import OnPolicyMethod, reward_weight_field


@dataclass
class OPSD:
    beta: float = field(default=0.5, metadata={
        "help": "generalized JSD: 0 forward KL(T||S), 1 reverse KL (OPSD: 0.5)"})
    clip: float | None = field(default=0.05, metadata={
        "help": "cap on each vocabulary term of the divergence before the sum (OPSD "
                "jsd_token_clip 0.05); none = no cap"})
    reward_weight: float = reward_weight_field(0.0, "OPSD: 0, distillation only")

    def __post_init__(self) -> None:
        check_divergence(self.beta, self.clip)
        check_weight("reward_weight", self.reward_weight)


def loss(student_logits, teacher_logits, mask, settings: OPSD):
    return opsd_loss(student_logits, teacher_logits, mask, settings.beta, settings.clip)


METHOD = OnPolicyMethod(name="opsd", paper="arXiv 2601.18734", loss=loss, settings=OPSD,
                trainer_defaults={"learning_rate": 2e-4, "max_grad_norm": 1.0})
