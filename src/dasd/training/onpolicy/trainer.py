"""The on-policy loop: TRL's `SDFTTrainer` with the method's loss and the project's prompts.

`SDFTTrainer` (TRL 1.16, experimental) already does what these papers need: the student
samples rollouts from its prompt with `generate`, the teacher is forwarded on a privileged
prompt followed by the same rollout tokens, and with a PEFT model and
`teacher_model_kind="base"` the teacher is the same weights with the LoRA adapter
disabled (one copy of the weights: the fixed initial policy). The subclass changes three
things only:

- the loss: `_compute_self_distillation_loss` calls the method's pure function from
  `dasd.training.losses` on the aligned (temperature-scaled) logits and rollout mask;
- the teacher prompt: the project's reference prompt (`render_prompts`), rendered in full
  beforehand and passed as `privileged_context`, instead of TRL's template around the
  last user message;
- tokenisation: the project's `encode` (no second BOS on chat-formatted text) and no
  left-truncation; over-long prompts are refused when the dataset is built.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from dasd.config import write_resolved_config
from dasd.errors import DasdError
from dasd.models import load_model, pick_device
from dasd.tasks import load_split
from dasd.tasks.prompts import encode, render_prompts
from dasd.training.losses import opsd_loss, token_entropy
from dasd.training.onpolicy import get_method
from dasd.training.onpolicy.config import OnPolicyConfig
from dasd.training.sft import ADAPTER_FILE, precision_args, trainer_arguments
from dasd.training.trl_args import resume_point

log = logging.getLogger(__name__)


def build_dataset(config: OnPolicyConfig, tokenizer):
    """Rows `prompt` (question only) and `privileged_context` (question + reference), both
    chat-formatted by the one prompt builder; refuses teacher prompts over the length cap."""
    from datasets import Dataset

    _, template, examples = load_split(config)
    limit = config.resolved_trainer()["max_prompt_length"]
    rows, longest = [], 0
    for example in examples:
        base, reference = render_prompts(tokenizer, template, example, config.chat_template_kwargs)
        length = len(encode(tokenizer, reference))
        if length > limit:
            raise DasdError(f"the reference prompt of {example.id} has {length} tokens, over "
                            f"max_prompt_length {limit}: raise "
                            "--max-prompt-length or pick shorter problems (--levels)")
        longest = max(longest, length)
        rows.append({"id": example.id, "prompt": base, "privileged_context": reference})
    log.info("%d prompts; longest teacher prompt %d tokens", len(rows), longest)
    return Dataset.from_list(rows)


def sdft_args(config: OnPolicyConfig, device: torch.device):
    """TRL's SDFTConfig from a resolved config: its TRL arguments plus what dasd fixes."""
    from trl.experimental.sdft import SDFTConfig

    args = trainer_arguments(config, {"distillation_is_clip": None, "disable_tqdm": False})
    args["max_prompt_length"] = None  # never left-truncate; build_dataset checks lengths
    return SDFTConfig(
        output_dir=config.out, seed=config.seed, **{**precision_args(device, args), **args},
        teacher_model_kind="base",  # with PEFT: the adapter disabled = the initial policy
        distillation_mode="full_logits",
        chat_template_kwargs=config.chat_template_kwargs or None,
    )


@functools.cache
def _trainer_cls():
    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

    class RenderedTeacherPrompt(DemonstrationTeacherContextBuilder):
        """The teacher prompt is `privileged_context` itself: the full reference prompt."""

        def _compose_teacher_prompt(self, prompt, privileged_context):
            return privileged_context

    class OnPolicyTrainer(SDFTTrainer):
        """SDFTTrainer whose loss is an on-policy method from the registry."""

        def __init__(self, *args, onpolicy: OnPolicyConfig, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.onpolicy = onpolicy
            self.onpolicy_method = get_method(onpolicy.method)
            self.onpolicy_settings = onpolicy.method_settings()
            self.teacher_context_builder = RenderedTeacherPrompt(self)

        def _tokenize_prompts(self, prompts: list[str]) -> list[list[int]]:
            return [encode(self._tokenizer, prompt) for prompt in prompts]

        def _compute_self_distillation_loss(self, model, inputs, distillation_logits):
            student = distillation_logits.student_logits
            teacher = distillation_logits.teacher_logits
            mask = distillation_logits.loss_mask
            loss = self.onpolicy_method.loss(student, teacher, mask, self.onpolicy_settings)
            self._log_onpolicy_metrics(model, student.detach(), teacher, mask)
            return loss

        def _log_onpolicy_metrics(self, model, student, teacher, mask) -> None:
            """The plain clipped divergence (comparable across methods, whose losses are
            weighted differently) and the student's mean entropy on the rollout."""
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                divergence = opsd_loss(student, teacher, mask, self.onpolicy_settings.beta,
                                       self.onpolicy_settings.clip)
                entropy = (token_entropy(student) * mask).sum() / mask.sum().clamp(min=1)
            self._metrics[mode]["divergence"].append(divergence.item())
            self._metrics[mode]["student_entropy"].append(entropy.item())

    return OnPolicyTrainer


def build_trainer(config: OnPolicyConfig, model, tokenizer, dataset):
    """The trainer with a fresh LoRA config (PEFT mutates the one it is given)."""
    from peft import LoraConfig

    config = config.resolved()
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=config.target_modules(), task_type="CAUSAL_LM")
    args = sdft_args(config, pick_device(config.device))
    return _trainer_cls()(model=model, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, onpolicy=config)


def _prepare_out(config: OnPolicyConfig) -> tuple[Path, str | None]:
    """(output folder, checkpoint to resume from)."""
    out = Path(config.out)
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
    out, checkpoint = _prepare_out(config)
    if model is None:
        model, tokenizer = load_model(config.model, config.dtype, config.device)
    dataset = build_dataset(config, tokenizer)
    trainer = build_trainer(config, model, tokenizer, dataset)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    trainer.model.eval()
    trainer.model.save_pretrained(out)
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
    lengths = _series(rows, "completions/mean_length")
    trainable, total = trainer.model.get_nb_trainable_parameters()
    steps = trainer.state.global_step
    return {
        "output": str(config.out), "method": config.method,
        "paper": get_method(config.method).paper, "model": config.model,
        "task": config.task, "split": config.split, "prompts": prompts, "steps": steps,
        "rollouts": steps * config.trainer["per_device_train_batch_size"]
        * config.trainer.get("gradient_accumulation_steps", 1),
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_min": min(losses) if losses else None,
        "divergence_first": divergences[0] if divergences else None,
        "divergence_last": divergences[-1] if divergences else None,
        "mean_rollout_tokens": sum(lengths) / len(lengths) if lengths else None,
        "seconds": seconds, "seconds_per_step": seconds / steps if steps else None,
        "trainable_params": trainable, "total_params": total,
        "device": str(trainer.args.device),
        "mixed_precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else None,
        "settings": {**config.settings, **{name: config.trainer.get(name) for name in (
            "learning_rate", "max_grad_norm", "temperature", "top_p", "top_k")},
            "lora_r": config.lora_r, "lora_alpha": config.lora_alpha},
    }
