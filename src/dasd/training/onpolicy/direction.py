"""Direction-adaptive self-distillation (arXiv 2605.22263; no public code).

Confirmed by the paper: low-entropy tokens are pulled toward the privileged teacher,
high-entropy tokens pushed away (to keep exploring). Implemented as a signed weight on the
OPSD divergence, `loss = mean_t omega_t * D_t`, with omega from the student's entropy and
the per-rollout rho-quantile (`da_rho`, 0.2); the form of omega is `da_weight` (`tanh`:
tanh((q_rho - H_t) / MAD(H)), or `sign`), see `dasd.training.losses.DIRECTION_WEIGHTS`.
The paper's own shaping of a GRPO advantage is not public; the other settings follow OPSD.
"""

from __future__ import annotations

from dasd.training.losses import da_opsd_loss
from dasd.training.onpolicy.base import Method


def loss(student_logits, teacher_logits, mask, config):
    return da_opsd_loss(student_logits, teacher_logits, mask, config.beta, config.clip,
                        config.da_rho, config.da_weight)


METHOD = Method(name="da-opsd", paper="arXiv 2605.22263", loss=loss,
                defaults={"learning_rate": 2e-4, "beta": 0.5, "max_grad_norm": 1.0})
