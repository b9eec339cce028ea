"""The on-policy loop: TRL's `SDPOTrainer` with the method's loss and the project's prompts.

`SDPOTrainer` (TRL 1.16, experimental) already does what these papers need: the student
samples `num_generations` rollouts per prompt with `generate`, TRL scores them with reward
functions and normalises the rewards within each prompt's group (GRPO advantages), the
teacher is forwarded on a privileged prompt followed by the same rollout tokens, and with
a PEFT model and `teacher_model_kind="base"` (dasd's default; TRL's `live` and `ema` are
passed through) the teacher is the same weights with the LoRA adapter disabled (one copy
of the weights: the fixed initial policy). The subclass
changes four things only:

- the loss: the method's pure function from `dasd.training.losses` on the aligned
  (temperature-scaled) logits and rollout mask, plus `reward_weight` times SDPO's own
  GRPO policy loss (`_compute_policy_loss`) when the method sets one;
- the reward: the task's checker (`dasd.training.rewards`), found by the row's `id`;
- the teacher prompt: the project's reference prompt (`render_prompts`), rendered in full
  beforehand and passed as `privileged_context`. SDPO's own builder makes the teacher
  prompt from a successful sibling rollout (or feedback) in its reprompt template; it is
  an attribute, `teacher_context_builder`, so `ReferencePromptTeacher` replaces it;
- tokenisation: the project's `encode` (no second BOS on chat-formatted text) and no
  left-truncation; over-long prompts are refused when the dataset is built.

Why SDPO rather than `SDFTTrainer` (dasd's loop before the rewards): SDFT has no rewards;
SDPO is SDFT's loop plus TRL's GRPO machinery (reward functions, group advantages, the
clipped policy loss, reward logging), so no part of GRPO is written here. With
`reward_weight` 0 (OPSD, PW-OPSD) the loss is exactly the method's, as under SDFT, and
the rewards are only logged.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from dasd.config import write_resolved_config
from dasd.errors import DasdError
from dasd.memory import step_peak_mb
from dasd.models import load_model, pick_device, prompt_limit
from dasd.records import check_writable
from dasd.tasks import load_split
from dasd.tasks.prompts import ChatSettings, encode, fit_context, render_prompts
from dasd.training.adapters import record_base_model
from dasd.training.losses import opsd_loss, token_entropy
from dasd.training.onpolicy import get_onpolicy_method
from dasd.training.onpolicy.config import OnPolicyConfig
from dasd.training.onpolicy.opsd import OPSD
from dasd.training.rewards import REWARD_LOG_KEY, task_reward
from dasd.training.sft import ADAPTER_FILE, precision_args, trainer_arguments
from dasd.training.trl_args import resume_point

log = logging.getLogger(__name__)


def build_dataset(config: OnPolicyConfig, tokenizer, model=None):
    """Rows `prompt` (question only) and `privileged_context` (question + reference), both
    chat-formatted by the one prompt builder; refuses teacher prompts over the length cap,
    and those that leave no room for a rollout in the model's context (or, with
    `skip_long_prompts`, leaves them out)."""
    from datasets import Dataset

    _, template, examples = load_split(config)
    trainer = config.resolved_trainer()
    limit = trainer["max_prompt_length"]
    rows, lengths = {}, []
    for example in examples:
        base, reference = render_prompts(tokenizer, template, example, config)
        length = len(encode(tokenizer, reference))
        if length > limit:
            raise DasdError(f"the reference prompt of {example.id} has {length} tokens, over "
                            f"max_prompt_length {limit}: raise "
                            "--max-prompt-length or pick shorter problems (--levels)")
        lengths.append(length)
        rows[example.id] = {"id": example.id, "prompt": base, "privileged_context": reference}
    context = None if model is None else prompt_limit(model, trainer["max_completion_length"])
    kept, skipped = fit_context(examples, lengths, context, config.skip_long_prompts,
                                "teacher (reference) prompt")
    log.info("%d prompts; longest teacher prompt %d tokens", len(kept), max(lengths))
    return Dataset.from_list([rows[e.id] for e in kept])


def sdpo_args(config: OnPolicyConfig, device: torch.device):
    """TRL's SDPOConfig from a resolved config: its TRL arguments plus what dasd fixes."""
    from trl.experimental.sdpo import SDPOConfig

    args = trainer_arguments(config, {"disable_tqdm": False})
    args["max_prompt_length"] = None  # never left-truncate; build_dataset checks lengths
    return SDPOConfig(
        output_dir=config.out, seed=config.seed, **{**precision_args(device, args), **args},
        distillation_mode="full_logits",
        use_successful_as_teacher=False,  # the teacher sees the reference prompt instead
        chat_template_kwargs=ChatSettings.of(config).base or None,  # the student's
    )


class ReferencePromptTeacher:
    """SDPO's teacher-context builder, replaced: every rollout's teacher prompt is its
    row's `privileged_context`, the task's full reference prompt, followed by the rollout."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.last_metrics: dict[str, float] = {}  # SDPO logs these; nothing to add

    def build(self, output, prompts, rewards, feedbacks) -> dict[str, torch.Tensor]:
        """`feedbacks`: the batch's `privileged_context` column (SDPO's name for it)."""
        from trl.trainer.utils import pad

        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        device, pad_id = completion_ids.device, self.trainer._tokenizer.pad_token_id
        ids = [torch.tensor(row) for row in self.trainer._tokenize_prompts(list(feedbacks))]
        prompt_ids = pad(ids, padding_value=pad_id, padding_side="left").to(device)
        prompt_mask = pad([torch.ones_like(row) for row in ids], padding_value=0,
                          padding_side="left").to(device)
        return {"teacher_input_ids": torch.cat([prompt_ids, completion_ids], dim=1),
                "teacher_attention_mask": torch.cat([prompt_mask, completion_mask], dim=1),
                "self_distillation_mask": torch.ones(len(ids), device=device)}


@functools.cache
def _trainer_cls():
    from trl.experimental.sdpo import SDPOTrainer

    class OnPolicyTrainer(SDPOTrainer):
        """SDPOTrainer whose loss is an on-policy method from the registry, plus
        `reward_weight` x GRPO on the task's reward."""

        def __init__(self, *args, onpolicy: OnPolicyConfig, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.onpolicy = onpolicy
            self.onpolicy_method = get_onpolicy_method(onpolicy.method)
            self.onpolicy_settings = onpolicy.method_settings()
            self.reward_weight = self.onpolicy_settings.reward_weight
            self.teacher_context_builder = ReferencePromptTeacher(self)

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:  # `id`: how the reward finds the problem
                self._signature_columns = ["prompt", "privileged_context", "id"]

        def _prepare_training_batch(self, inputs):
            with warnings.catch_warnings():  # a group of one rollout has no reward spread
                if self.num_generations == 1:
                    warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom")
                return super()._prepare_training_batch(inputs)

        def _tokenize_prompts_untruncated(self, prompts: list[str]) -> list[list[int]]:
            return [encode(self._tokenizer, prompt) for prompt in prompts]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                raise ValueError("the on-policy trainer does not return outputs")
            logits = self._compute_teacher_student_logits(model, self.teacher_model, inputs)
            loss = self._compute_self_distillation_loss(model, inputs, logits)
            if self.reward_weight:
                policy = self._compute_policy_loss(inputs, logits.student_logits)
                loss = loss + self.reward_weight * policy
            scale = self.current_gradient_accumulation_steps if self.model.training else 1.0
            return loss / scale

        def _compute_self_distillation_loss(self, model, inputs, distillation_logits):
            student = distillation_logits.student_logits
            teacher = distillation_logits.teacher_logits
            mask = distillation_logits.loss_mask
            loss = self.onpolicy_method.loss(student, teacher, mask, self.onpolicy_settings)
            self._log_onpolicy_metrics(model, student.detach(), teacher, mask)
            return loss

        def _log_onpolicy_metrics(self, model, student, teacher, mask) -> None:
            """The plain clipped divergence (comparable across methods, whose losses are
            weighted differently; at the method's own beta and clip, OPSD's for a method
            without them), the student's mean entropy on the rollout, and what the method
            itself reports (`OnPolicyMethod.metrics`)."""
            mode = "train" if model.training else "eval"
            settings = self.onpolicy_settings
            plain = OPSD()
            beta = getattr(settings, "beta", plain.beta)
            clip = getattr(settings, "clip", plain.clip)
            with torch.no_grad():
                divergence = opsd_loss(student, teacher, mask, beta, clip)
                entropy = (token_entropy(student) * mask).sum() / mask.sum().clamp(min=1)
                extra = (self.onpolicy_method.metrics(student, teacher, mask, settings)
                         if self.onpolicy_method.metrics else {})
            self._metrics[mode]["divergence"].append(divergence.item())
            self._metrics[mode]["student_entropy"].append(entropy.item())
            for name, value in extra.items():
                self._metrics[mode][name].append(value)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:  # a training step's log: the memory it peaked at
                logs["peak_memory_mb"] = step_peak_mb(self.args.device)
            super().log(logs, start_time)

        def _warn_on_inactive_self_distillation(self, mode: str) -> None:
            pass  # SDPO's warning about its successful-rollout teacher; ours always runs

        def _warn_on_degenerate_diagnostics(self, mode, counter_key, message) -> None:
            if self.reward_weight:  # flat rewards matter only to a method that uses them
                super()._warn_on_degenerate_diagnostics(mode, counter_key, message)

    return OnPolicyTrainer


def build_trainer(config: OnPolicyConfig, model, tokenizer, dataset, rewards=None):
    """The trainer with a fresh LoRA config (PEFT mutates the one it is given). `rewards`:
    TRL reward functions; by default the task's checker over the config's problems."""
    from peft import LoraConfig

    config = config.resolved()
    if rewards is None:
        task, _, examples = load_split(config)
        rewards = [task_reward(task, examples)]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=config.target_modules(), task_type="CAUSAL_LM")
    args = sdpo_args(config, pick_device(config.device))
    return _trainer_cls()(model=model, reward_funcs=rewards, args=args,
                          train_dataset=dataset, processing_class=tokenizer, peft_config=lora,
                          onpolicy=config)


def _prepare_out(config: OnPolicyConfig) -> tuple[Path, str | None]:
    """(output folder, checkpoint to resume from)."""
    out = Path(config.out)
    check_writable(out, is_dir=True)
    checkpoint = resume_point(config, out, ADAPTER_FILE)
    if config.overwrite:
        for name in ("train_log.jsonl", "train_summary.json", ADAPTER_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(config, out / "config.yaml")
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    return out, checkpoint


def train_onpolicy(config: OnPolicyConfig, model=None, tokenizer=None) -> dict[str, Any]:
    """Train a LoRA adapter with the configured on-policy method; save it, return the summary.

    A `model` passed in is wrapped by PEFT in place (tests, or a caller that holds it).
    """
    if (model is None) != (tokenizer is None):
        raise ValueError("pass model and tokenizer together, or neither")
    config = config.resolved()
    check_writable(config.out, is_dir=True)
    if model is None:
        model, tokenizer = load_model(config.model, config.dtype, config.device)
    dataset = build_dataset(config, tokenizer, model)  # refuses bad prompts before writing
    out, checkpoint = _prepare_out(config)
    trainer = build_trainer(config, model, tokenizer, dataset)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    trainer.model.eval()
    trainer.model.save_pretrained(out)
    record_base_model(out, config.model)  # the hub id, not this machine's cache path
    tokenizer.save_pretrained(out)
    log_rows = trainer.state.log_history
    (out / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log_rows))
    summary = _summary(config, trainer, len(dataset), seconds)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("%s adapter saved to %s (loss %s -> %s in %d steps, %.0f s)", config.method, out,
             summary["train_loss_first"], summary["train_loss_last"], summary["steps"], seconds)
    return summary


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [row[key] for row in rows if key in row]


def _summary(config: OnPolicyConfig, trainer, prompts: int, seconds: float) -> dict[str, Any]:
    rows = trainer.state.log_history
    losses, divergences = _series(rows, "loss"), _series(rows, "divergence")
    rewards = [r for r in _series(rows, REWARD_LOG_KEY) if r is not None]
    lengths = _series(rows, "completions/mean_length")
    memory = _series(rows, "peak_memory_mb")
    trainable, total = trainer.model.get_nb_trainable_parameters()
    steps = trainer.state.global_step
    return {
        "output": str(config.out), "method": config.method,
        "paper": get_onpolicy_method(config.method).paper, "model": config.model,
        "task": config.task, "split": config.split, "prompts": prompts, "steps": steps,
        "rollouts": steps * config.trainer["per_device_train_batch_size"]
        * config.trainer.get("gradient_accumulation_steps", 1),
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_min": min(losses) if losses else None,
        "divergence_first": divergences[0] if divergences else None,
        "divergence_last": divergences[-1] if divergences else None,
        "reward_mean": sum(rewards) / len(rewards) if rewards else None,
        "mean_rollout_tokens": sum(lengths) / len(lengths) if lengths else None,
        "seconds": seconds, "seconds_per_step": seconds / steps if steps else None,
        "trainable_params": trainable, "total_params": total,
        "device": str(trainer.args.device),
        # per logged step: CUDA's allocator peak on a GPU, the process's resident peak on CPU
        "peak_memory_mb": max(memory) if memory else None,
        "mixed_precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else None,
        "settings": {**config.settings, **{name: config.trainer.get(name) for name in (
            "learning_rate", "max_grad_norm", "temperature", "top_p", "top_k")},
            "lora_r": config.lora_r, "lora_alpha": config.lora_alpha},
    }
