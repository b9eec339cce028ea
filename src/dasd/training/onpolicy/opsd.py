"""OPSD, On-Policy Self-Distillation (arXiv 2601.18734; code siyan-zhao/OPSD).

Generalized JSD between the privileged teacher and the student on the student's rollout,
each vocabulary term capped at `clip` (their `jsd_token_clip` 0.05), mean over tokens.
Their scripts: LoRA r64/alpha128, lr 2e-4, beta 0.5, sampling T 1.1, top-p 0.95, top-k 20.
"""

from __future__ import annotations

from dasd.training.losses import opsd_loss
from dasd.training.onpolicy.base import Method


def loss(student_logits, teacher_logits, mask, config):
    return opsd_loss(student_logits, teacher_logits, mask, config.beta, config.clip)


METHOD = Method(name="opsd", paper="arXiv 2601.18734", loss=loss,
                defaults={"learning_rate": 2e-4, "beta": 0.5, "max_grad_norm": 1.0})
