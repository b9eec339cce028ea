"""PW-OPSD, Position-Weighted OPSD (arXiv 2605.21606; code SaFo-Lab/PW-OPSD, `pwopsd`).

OPSD's clipped forward KL (beta 0) times `w_t = w_min + (1 - w_min) sigmoid((f_t - tau)/s)`
with f_t the relative position in that rollout; per-sequence weighted mean, then batch
mean. Their launcher: lr 5e-6, max grad norm 0.1, T 1.1, LoRA 64/128.
"""

from __future__ import annotations

from dasd.training.losses import pw_opsd_loss
from dasd.training.onpolicy.base import Method


def loss(student_logits, teacher_logits, mask, config):
    return pw_opsd_loss(student_logits, teacher_logits, mask, config.beta, config.clip,
                        config.pw_w_min, config.pw_tau, config.pw_s)


METHOD = Method(name="pw-opsd", paper="arXiv 2605.21606", loss=loss,
                defaults={"learning_rate": 5e-6, "beta": 0.0, "max_grad_norm": 0.1})
