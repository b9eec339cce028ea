"""Direction-adaptive self-distillation, anchored to a verifiable reward (`da-opsd`).

arXiv 2605.22263 (no public code; only the abstract is public). The paper's: on-policy
self-distillation from a privileged self-teacher, routed by token entropy, high-entropy
tokens pushed away from the teacher (to keep exploring), low-entropy tokens pulled toward
it (to keep steps accurate); compared with RLVR and self-distillation baselines on math
(Avg@16). Ours, since the form is not public:

- the loss is `reward_weight * GRPO(task reward) + direction_weight * mean_t omega_t D_t`:
  TRL's group-relative policy gradient on the task's own checker (`dasd.training.rewards`)
  keeps the student answering, the direction term routes the teacher's pull;
- omega_t = tanh((q_rho - H_t) / MAD(H)) (or its sign, `weight`), H_t the student's
  entropy, q_rho the rollout's rho-quantile, D_t OPSD's clipped JSD (beta 0.5, clip
  0.05). A third-party note on the paper (unconfirmed) gives "rho = 0.2"; read as the
  quantile q_0.2 it pushes 80% of the tokens, and on the embedded model every answer then
  ran to the length cap. We read it as the share of high-entropy tokens, the minority
  that forks a reasoning path: rho 0.8 pushes the rollout's 20% highest-entropy tokens;
- `push_cap`: a pushed token stops being pushed once it is that far from the teacher.

`da-opsd-loss-only` (`da_opsd_loss_only.py`) is the direction term alone; it collapses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dasd.errors import DasdError
from dasd.training.losses import DIRECTION_WEIGHTS, da_opsd_loss, direction_stats
from dasd.training.onpolicy.checks import check_divergence, check_unit, check_weight
from dasd.training.onpolicy.method import OnPolicyMethod, reward_weight_field


@dataclass
class Direction:
    """The entropy routing, shared by `da-opsd` and `da-opsd-loss-only`."""

    beta: float = field(default=0.5, metadata={
        "help": "generalized JSD: 0 forward KL(T||S), 1 reverse KL (as OPSD: 0.5)"})
    clip: float | None = field(default=0.05, metadata={
        "help": "cap on each vocabulary term of the divergence (0.05); none = no cap"})
    rho: float = field(default=0.2, metadata={
        "help": "per-rollout entropy quantile; tokens below it are pulled toward the "
                "teacher, above it pushed away (0.2: a third-party note on the paper, "
                "unconfirmed)"})
    weight: Literal["tanh", "sign"] = field(default="tanh", metadata={
        "help": "signed weight, tanh((q_rho - H_t) / MAD(H)) or sign(q_rho - H_t)"})

    def __post_init__(self) -> None:
        check_divergence(self.beta, self.clip)
        check_unit("rho", self.rho)
        if self.weight not in DIRECTION_WEIGHTS:
            raise DasdError(f"weight must be one of {', '.join(DIRECTION_WEIGHTS)}; "
                            f"got {self.weight!r}")


@dataclass
class DirectionAdaptive(Direction):
    rho: float = field(default=0.8, metadata={
        "help": "per-rollout entropy quantile; tokens below it are pulled toward the "
                "teacher, above it pushed away (ours: 0.8, the 20% highest-entropy tokens "
                "pushed; q_0.2 pushes 80% and the answers degrade, see docs/results.md)"})
    direction_weight: float = field(default=1.0, metadata={
        "help": "weight of the direction term beside the reward's (ours; not public)"})
    push_cap: float | None = field(default=0.05, metadata={
        "help": "a pushed token is pushed only until its divergence from the teacher "
                "reaches this (nats; ours: 0.05, about the untrained model's mean "
                "divergence); none = no cap, the push grows without bound"})
    reward_weight: float = reward_weight_field(1.0, "ours: the paper compares with RLVR")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weight("direction_weight", self.direction_weight)
        check_weight("reward_weight", self.reward_weight)
        if self.push_cap is not None and not self.push_cap > 0:
            raise DasdError(f"push_cap must be > 0, or none for no cap; got {self.push_cap}")
        if self.reward_weight == 0:
            raise DasdError("da-opsd needs reward_weight > 0 (the reward holds the student "
                            "up); the direction term alone is method da-opsd-loss-only")


def loss(student_logits, teacher_logits, mask, settings: DirectionAdaptive):
    return settings.direction_weight * da_opsd_loss(
        student_logits, teacher_logits, mask, settings.beta, settings.clip, settings.rho,
        settings.weight, settings.push_cap)


def metrics(student_logits, teacher_logits, mask, settings: Direction) -> dict[str, float]:
    """Shares of rollout tokens pulled / pushed, and the signed divergence (uncapped)."""
    stats = direction_stats(student_logits, teacher_logits, mask, settings.beta,
                            settings.clip, settings.rho, settings.weight)
    return {f"direction/{name}": value.item() for name, value in stats.items()}


METHOD = OnPolicyMethod(name="da-opsd", paper="arXiv 2605.22263", loss=loss,
                settings=DirectionAdaptive, metrics=metrics,
                # GRPO needs a group of rollouts per prompt: 1 prompt x 4 per step
                trainer_defaults={"learning_rate": 2e-4, "max_grad_norm": 1.0,
                                  "num_generations": 4})
