"""`OnPolicyConfig`: settings of `dasd train --method opsd|pw-opsd|da-opsd`.

The task fields (model, task, split, limit, levels, prompts, ...) are those of every
decoding stage, since the student decodes its own rollouts. Fields left unset (None) take
the method's paper defaults (`dasd.training.onpolicy.METHODS[...].defaults`) when training
starts (`resolved()`); the resolved values are what `config.yaml` in the output folder
records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from dasd.config import DecodeStageConfig
from dasd.errors import DasdError
from dasd.training.losses import DIRECTION_WEIGHTS
from dasd.training.onpolicy import get_method


@dataclass
class OnPolicyConfig(DecodeStageConfig):
    method: str = field(default="opsd", metadata={
        "help": "on-policy method: opsd, pw-opsd (position-weighted), da-opsd "
                "(direction-adaptive)"})
    split: str = field(default="train", metadata={"help": "data split the prompts come from"})
    seed: int = field(default=0, metadata={
        "help": "seed of generated tasks (arith), LoRA init, shuffling and rollout sampling"})
    out: str | None = field(default=None, metadata={
        "help": "adapter output directory (default: runs/<task>/train/<method>)"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an adapter already in <out>"})
    # Rollouts (the student samples from the question-only prompt).
    max_new_tokens: int = field(default=256, metadata={
        "help": "rollout length limit in tokens (TRL max_completion_length)"})
    batch_size: int = field(default=4, metadata={
        "help": "rollouts per micro-batch (prompts x num_generations)"})
    num_generations: int = field(default=1, metadata={
        "help": "rollouts per prompt; batch_size x gradient_accumulation_steps must be a "
                "multiple of it"})
    temperature: float = field(default=1.1, metadata={
        "help": "sampling temperature of rollouts; logits of both sides are divided by it in "
                "the loss, as in TRL (OPSD/PW-OPSD: 1.1)"})
    top_p: float = field(default=0.95, metadata={
        "help": "nucleus sampling of rollouts (OPSD: 0.95)"})
    top_k: int = field(default=20, metadata={
        "help": "top-k sampling of rollouts, 0 = off (OPSD: 20)"})
    max_prompt_length: int = field(default=2048, metadata={
        "help": "longest teacher (reference) prompt in tokens; longer ones are refused, never "
                "truncated (TRL would cut them from the left, dropping the question)"})
    # Loss.
    beta: float | None = field(default=None, metadata={
        "help": "generalized JSD: 0 forward KL(T||S), 1 reverse KL (OPSD 0.5, PW-OPSD 0; "
                "unset: the method's)"})
    clip: float | None = field(default=0.05, metadata={
        "help": "cap on each vocabulary term of the divergence before the sum (OPSD "
                "jsd_token_clip 0.05); none = no cap"})
    pw_w_min: float = field(default=0.25, metadata={
        "help": "PW-OPSD: weight floor w_min (paper: 0.25)"})
    pw_tau: float = field(default=0.30, metadata={
        "help": "PW-OPSD: relative position of the weight's midpoint (paper: 0.30)"})
    pw_s: float = field(default=0.10, metadata={"help": "PW-OPSD: sigmoid width s (paper: 0.10)"})
    da_rho: float = field(default=0.2, metadata={
        "help": "DA-OPSD: per-rollout entropy quantile; tokens below it are pulled toward the "
                "teacher, above it pushed away (paper: 0.2)"})
    da_weight: Literal["tanh", "sign"] = field(default="tanh", metadata={
        "help": "DA-OPSD: signed weight, tanh((q_rho - H_t) / MAD(H)) or sign(q_rho - H_t)"})
    # Optimisation.
    learning_rate: float | None = field(default=None, metadata={
        "help": "peak learning rate (OPSD 2e-4, PW-OPSD 5e-6; unset: the method's)"})
    max_grad_norm: float | None = field(default=None, metadata={
        "help": "gradient clipping (PW-OPSD 0.1, others 1.0; unset: the method's)"})
    warmup_ratio: float = field(default=0.0, metadata={
        "help": "fraction of steps with linear warmup, in [0, 1)"})
    max_steps: int = field(default=50, metadata={
        "help": "optimizer steps; -1 to use num_train_epochs instead"})
    num_train_epochs: float = field(default=1.0, metadata={
        "help": "passes over the prompts (when max_steps is -1)"})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "micro-batches per optimizer step"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (OPSD, PW-OPSD: 64)"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha (OPSD, PW-OPSD: 128)"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "'all-linear' or comma-separated module names (OPSD: all attention and MLP "
                "projections)"})
    logging_steps: int = field(default=1, metadata={"help": "log the loss every N steps"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations to save memory (slower; off: TRL's default is on)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out is None:
            self.out = f"runs/{self.task}/train/{self.method}"
        defaults = self.method_defaults()
        if defaults:  # validate what training will use: building it checks the ranges
            dataclasses.replace(self, **defaults)
        else:
            self._check_ranges()

    def method_defaults(self) -> dict[str, Any]:
        """The method's paper settings for the fields left unset (None)."""
        return {name: value for name, value in get_method(self.method).defaults.items()
                if getattr(self, name) is None}

    def resolved(self) -> OnPolicyConfig:
        """This config with the unset fields filled by the method's defaults. Unset fields
        stay None until training, so a section shared by several methods (`dasd run`)
        gives each method its own paper defaults."""
        return dataclasses.replace(self, **self.method_defaults())

    def _check_ranges(self) -> None:
        for name in ("num_generations", "gradient_accumulation_steps", "lora_r", "lora_alpha",
                     "logging_steps", "max_prompt_length"):
            if getattr(self, name) < 1:
                raise DasdError(f"{name} must be >= 1; got {getattr(self, name)}")
        positive = {"learning_rate": self.learning_rate, "temperature": self.temperature,
                    "max_grad_norm": self.max_grad_norm, "pw_s": self.pw_s}
        for name, value in positive.items():
            if not value > 0:
                raise DasdError(f"{name} must be > 0; got {value}")
        for name in ("beta", "pw_w_min", "da_rho"):
            if not 0 <= getattr(self, name) <= 1:
                raise DasdError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise DasdError(f"top_p must be in (0, 1]; got {self.top_p}")
        if not self.lora_target_modules.strip(" ,"):
            raise DasdError("lora_target_modules is empty: use 'all-linear' or module names")
        if self.clip is not None and not self.clip > 0:
            raise DasdError(f"clip must be > 0, or none for no cap; got {self.clip}")
        if self.top_k < 0:
            raise DasdError(f"top_k must be >= 0 (0 = off); got {self.top_k}")
        if not 0 <= self.warmup_ratio < 1:
            raise DasdError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise DasdError(f"max_steps must be >= 1, or -1 to use num_train_epochs; "
                            f"got {self.max_steps}")
        if self.da_weight not in DIRECTION_WEIGHTS:
            raise DasdError(f"da_weight must be one of {', '.join(DIRECTION_WEIGHTS)}; "
                            f"got {self.da_weight!r}")
        rollouts = self.batch_size * self.gradient_accumulation_steps
        if rollouts % self.num_generations:
            raise DasdError(f"batch_size x gradient_accumulation_steps ({rollouts}) must be a "
                            f"multiple of num_generations ({self.num_generations})")

    def target_modules(self) -> str | list[str]:
        if self.lora_target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
