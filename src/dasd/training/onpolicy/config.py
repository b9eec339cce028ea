"""`OnPolicyConfig`: settings of `dasd train --method opsd|pw-opsd|da-opsd|...`.

The problems (model, task, split, limit, levels, prompts, ...) are those of every decoding
stage, since the student decodes its own rollouts. The method's own settings (`beta`,
`clip`, `reward_weight`, PW-OPSD's `w_min`/`tau`/`s`, DA-OPSD's `rho`/`weight`/...) live
in `settings`; every argument of TRL's `SDPOConfig` that dasd does not set itself works
under TRL's own name (`max_completion_length`,
`per_device_train_batch_size`, `num_generations`, `temperature`, `learning_rate`,
`save_steps`, `report_to`, ...). TRL arguments left unset take the method's paper values
(`Method.trainer_defaults`), then dasd's (`ONPOLICY_DEFAULTS`) when training starts
(`resolved()`), so a section shared by several methods (`dasd run`) gives each its own.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dasd.config import ProblemConfig, build_settings, settings_dict, settings_flags
from dasd.errors import DasdError
from dasd.training.onpolicy import METHODS, get_onpolicy_method
from dasd.training.trl_args import (
    BOOKKEEPING,
    CHECKPOINTS,
    check_ranges,
    check_trainer_args,
    trl_flags,
)

# dasd's defaults for TRL's SDPOConfig: the OPSD scripts' sampling (T 1.1, top-p 0.95,
# top-k 20), one rollout per prompt, short CPU-sized rollouts, no warmup, 50 steps.
ONPOLICY_DEFAULTS: dict[str, Any] = {
    "max_completion_length": 256, "per_device_train_batch_size": 4, "num_generations": 1,
    "temperature": 1.1, "top_p": 0.95, "top_k": 20, "max_prompt_length": 2048,
    "warmup_steps": 0.0, "max_steps": 50, "logging_steps": 1,
    "activation_checkpointing": False, "report_to": "none", **CHECKPOINTS,
    # the privileged teacher: base = the same weights with the LoRA adapter off (the
    # initial policy; OPSD), live = the current student, ema = TRL's moving average
    "teacher_model_kind": "base"}
TEACHERS = ("base", "live", "ema")
# SDPO's teacher-context builder (a successful sibling rollout or feedback in a reprompt
# template), which dasd replaces by the task's reference prompt; SDPO's convex
# `distillation_weight` (dasd: each method's `reward_weight`); GRPO's `beta`, a KL
# coefficient SDPOTrainer does not use (and the name of the methods' JSD setting).
SDPO_REPLACED = ("use_successful_as_teacher", "success_reward_threshold",
                 "dont_reprompt_on_self_success", "include_environment_feedback",
                 "environment_feedback_only_without_solution", "remove_thinking_from_demonstration",
                 "reprompt_template", "solution_template", "feedback_template",
                 "max_reprompt_len", "distillation_weight", "beta")
# Arguments dasd sets from its own fields or its design; not configurable.
ONPOLICY_FIXED = ("output_dir", "seed", "distillation_mode",
                  "chat_template_kwargs", *SDPO_REPLACED)


def _trl_config_cls():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.sdpo import SDPOConfig

    return SDPOConfig


@dataclass
class OnPolicyConfig(ProblemConfig):
    method: str = field(default="opsd", metadata={
        "help": f"on-policy method: {', '.join(METHODS)}"})
    settings: dict = field(default_factory=dict, metadata={
        "help": "the method's own settings, e.g. '{beta: 0.5, clip: 0.05}'; each is also a "
                "flag of its own (--beta 0.5)"})
    split: str = field(default="train", metadata={"help": "data split the prompts come from"})
    seed: int = field(default=0, metadata={
        "help": "seed of generated tasks (arith), LoRA init, shuffling and rollout sampling"})
    out: str | None = field(default=None, metadata={
        "help": "adapter output directory (default: runs/<task>/train/<method>)",
        "effect": "none"})
    overwrite: bool = field(default=False, metadata={
        "help": "start over: replace an adapter or checkpoints already in <out>",
        "effect": "none"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (OPSD, PW-OPSD: 64)"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha (OPSD, PW-OPSD: 128)"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "'all-linear' or comma-separated module names (OPSD: all attention and MLP "
                "projections)"})
    trainer: dict = field(default_factory=dict, metadata={
        "help": "TRL SDPOConfig arguments; each is also a key and flag of its own under "
                "TRL's name (max_completion_length, num_generations, learning_rate, ...)",
        "ignore_keys": BOOKKEEPING})

    FLAG_LABEL: ClassVar[str] = "on-policy"
    RENAMED: ClassVar[dict[str, str]] = {
        "max_new_tokens": "write TRL's `max_completion_length` (the rollout length)",
        "batch_size": "write TRL's `per_device_train_batch_size` (rollouts per micro-batch)",
        "pw_w_min": "write `w_min` (a setting of method pw-opsd)",
        "pw_tau": "write `tau` (a setting of method pw-opsd)",
        "pw_s": "write `s` (a setting of method pw-opsd)",
        "da_rho": "write `rho` (a setting of method da-opsd)",
        "da_weight": "write `weight` (a setting of method da-opsd)",
        "warmup_ratio": "write TRL's `warmup_steps` (transformers 5: a float < 1 is a ratio "
                        "of the steps)",
    }

    @classmethod
    def extra_keys(cls) -> dict[str, str]:
        return {**dict.fromkeys(cls._trl_flags(), "trainer"),
                **dict.fromkeys(cls._settings_flags(), "settings")}

    @classmethod
    def extra_key_help(cls) -> dict[str, tuple[str, Any]]:
        return {**cls._trl_flags(), **cls._settings_flags()}

    @classmethod
    def _trl_flags(cls) -> dict[str, tuple[str, Any]]:
        own = {f.name for f in dataclasses.fields(cls)} | set(ONPOLICY_FIXED)
        return trl_flags(_trl_config_cls(), own)

    @staticmethod
    def _settings_flags() -> dict[str, tuple[str, Any]]:
        return settings_flags({name: m.settings for name, m in METHODS.items()})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out is None:
            self.out = f"runs/{self.task}/train/{self.method}"
        self.settings = settings_dict(self.method_settings())
        fixed = sorted(set(self.trainer) & set(ONPOLICY_FIXED))
        if fixed:
            raise DasdError(f"onpolicy: dasd sets {', '.join(fixed)} itself")
        defaults = {**ONPOLICY_DEFAULTS, **get_onpolicy_method(self.method).trainer_defaults}
        self.trainer = check_trainer_args(_trl_config_cls(), self.trainer, "onpolicy",
                                          defaults)
        self._check_ranges(self.resolved_trainer())
        if self.resolved_trainer().get("use_vllm"):  # TRL would fail deep in its trainer
            from dasd.decoding.vllm_backend import import_vllm

            import_vllm("use_vllm (TRL's rollouts on vLLM)")

    def method_settings(self):
        return build_settings(get_onpolicy_method(self.method).settings, self.settings,
                              f"method '{self.method}'")

    def resolved_trainer(self) -> dict[str, Any]:
        """TRL arguments: the config's, else the method's paper values, else dasd's."""
        return {**ONPOLICY_DEFAULTS, **get_onpolicy_method(self.method).trainer_defaults,
                **self.trainer}

    def resolved(self) -> OnPolicyConfig:
        """This config with every TRL argument it trains with written out."""
        return dataclasses.replace(self, trainer=self.resolved_trainer())

    def config_comment(self) -> str:
        return (f"trainer: TRL SDPOConfig arguments. Set by dasd unless given: the method's "
                f"paper values {get_onpolicy_method(self.method).trainer_defaults}, then "
                + ", ".join(f"{k}={v}" for k, v in ONPOLICY_DEFAULTS.items())
                + "; precision from the device; the rest are TRL's defaults.")

    def _check_ranges(self, trainer: dict[str, Any]) -> None:
        check_ranges(trainer, "onpolicy")
        if trainer["teacher_model_kind"] not in TEACHERS:
            raise DasdError(f"teacher_model_kind must be one of {', '.join(TEACHERS)} (TRL's "
                            f"teachers; dasd's default base); got "
                            f"{trainer['teacher_model_kind']!r}")
        for name in ("lora_r", "lora_alpha", "max_prompt_length", "num_generations"):
            value = trainer.get(name, getattr(self, name, None))
            if value is not None and value < 1:
                raise DasdError(f"{name} must be >= 1; got {value}")
        if not self.lora_target_modules.strip(" ,"):
            raise DasdError("lora_target_modules is empty: use 'all-linear' or module names")
        rollouts = trainer["per_device_train_batch_size"] * trainer.get(
            "gradient_accumulation_steps", 1)
        if rollouts % trainer["num_generations"]:
            raise DasdError(f"per_device_train_batch_size x gradient_accumulation_steps "
                            f"({rollouts}) must be a multiple of num_generations "
                            f"({trainer['num_generations']})")
        if self.method_settings().reward_weight > 0 and trainer["num_generations"] < 2:
            raise DasdError(f"method {self.method} learns from rewards relative to the other "
                            f"rollouts of the same prompt: num_generations must be >= 2; got "
                            f"{trainer['num_generations']} (e.g. num_generations 4 with "
                            "per_device_train_batch_size 4)")

    def target_modules(self) -> str | list[str]:
        from dasd.training.sft import target_modules

        return target_modules(self.lora_target_modules)
