"""Direction-adaptive self-distillation (arXiv 2605.22263; no public code).

Confirmed by the paper: low-entropy tokens are pulled toward the privileged teacher,
high-entropy tokens pushed away (to keep exploring). Implemented as a signed weight on the
OPSD divergence, `loss = mean_t omega_t * D_t`, with omega from the student's entropy and
the per-rollout rho-quantile (`rho`, 0.2); the form of omega is `weight` (`tanh`:
tanh((q_rho - H_t) / MAD(H)), or `sign`), see `dasd.training.losses.DIRECTION_WEIGHTS`.
The paper's own shaping of a GRPO advantage is not public; the other settings follow OPSD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dasd.errors import DasdError
from dasd.training.losses import DIRECTION_WEIGHTS, da_opsd_loss
from dasd.training.onpolicy.base import Method
from dasd.training.onpolicy.checks import check_divergence, check_unit


@dataclass
class DirectionAdaptive:
    beta: float = field(default=0.5, metadata={
        "help": "generalized JSD: 0 forward KL(T||S), 1 reverse KL (as OPSD: 0.5)"})
    clip: float | None = field(default=0.05, metadata={
        "help": "cap on each vocabulary term of the divergence (0.05); none = no cap"})
    rho: float = field(default=0.2, metadata={
        "help": "per-rollout entropy quantile; tokens below it are pulled toward the "
                "teacher, above it pushed away (paper: 0.2)"})
    weight: Literal["tanh", "sign"] = field(default="tanh", metadata={
        "help": "signed weight, tanh((q_rho - H_t) / MAD(H)) or sign(q_rho - H_t)"})

    def __post_init__(self) -> None:
        check_divergence(self.beta, self.clip)
        check_unit("rho", self.rho)
        if self.weight not in DIRECTION_WEIGHTS:
            raise DasdError(f"weight must be one of {', '.join(DIRECTION_WEIGHTS)}; "
                            f"got {self.weight!r}")


def loss(student_logits, teacher_logits, mask, settings: DirectionAdaptive):
    return da_opsd_loss(student_logits, teacher_logits, mask, settings.beta, settings.clip,
                        settings.rho, settings.weight)


METHOD = Method(name="da-opsd", paper="arXiv 2605.22263", loss=loss,
                settings=DirectionAdaptive,
                trainer_defaults={"learning_rate": 2e-4, "max_grad_norm": 1.0})
