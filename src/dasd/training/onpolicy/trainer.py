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
from dasd.decoding.generate import encode
from dasd.errors import DasdError
from dasd.models import load_model, pick_device
from dasd.tasks import load_split
from dasd.tasks.prompts import render_prompts
from dasd.training.losses import opsd_loss, token_entropy
from dasd.training.onpolicy import get_method
from dasd.training.onpolicy.config import OnPolicyConfig
from dasd.training.sft import ADAPTER_FILE, common_trainer_args

log = logging.getLogger(__name__)


def build_dataset(config: OnPolicyConfig, tokenizer):
    """Rows `prompt` (question only) and `privileged_context` (question + reference), both
    chat-formatted by the one prompt builder; refuses teacher prompts over the length cap."""
    from datasets import Dataset

    _, template, examples = load_split(config)
    rows, longest = [], 0
    for example in examples:
        base, reference = render_prompts(tokenizer, template, example, config.chat_template_kwargs)
        length = len(encode(tokenizer, reference))
        if length > config.max_prompt_length:
            raise DasdError(f"the reference prompt of {example.id} has {length} tokens, over "
                            f"max_prompt_length {config.max_prompt_length}: raise "
                            "--max-prompt-length or pick shorter problems (--levels)")
        longest = max(longest, length)
        rows.append({"id": example.id, "prompt": base, "privileged_context": reference})
    log.info("%d prompts; longest teacher prompt %d tokens", len(rows), longest)
    return Dataset.from_list(rows)


def sdft_args(config: OnPolicyConfig, device: torch.device):
    from trl.experimental.sdft import SDFTConfig

    return SDFTConfig(
        output_dir=config.out, learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of steps
        max_steps=config.max_steps, num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm, seed=config.seed,
        logging_steps=config.logging_steps,
        **common_trainer_args(device, config.gradient_checkpointing),
        num_generations=config.num_generations, max_completion_length=config.max_new_tokens,
        max_prompt_length=None,  # never left-truncate; build_dataset checks the lengths
        temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
        teacher_model_kind="base",  # with PEFT: the adapter disabled = the initial policy
        distillation_mode="full_logits", distillation_is_clip=None,
        chat_template_kwargs=config.chat_template_kwargs or None,
        disable_tqdm=False,
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
            self.teacher_context_builder = RenderedTeacherPrompt(self)

        def _tokenize_prompts(self, prompts: list[str]) -> list[list[int]]:
            return [encode(self._tokenizer, prompt) for prompt in prompts]

        def _compute_self_distillation_loss(self, model, inputs, distillation_logits):
            student = distillation_logits.student_logits
            teacher = distillation_logits.teacher_logits
            mask = distillation_logits.loss_mask
            loss = self.onpolicy_method.loss(student, teacher, mask, self.onpolicy)
            self._log_onpolicy_metrics(model, student.detach(), teacher, mask)
            return loss

        def _log_onpolicy_metrics(self, model, student, teacher, mask) -> None:
            """The plain clipped divergence (comparable across methods, whose losses are
            weighted differently) and the student's mean entropy on the rollout."""
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                divergence = opsd_loss(student, teacher, mask, self.onpolicy.beta,
                                       self.onpolicy.clip)
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


def _prepare_out(config: OnPolicyConfig) -> Path:
    out = Path(config.out)
    if (out / ADAPTER_FILE).exists() and not config.overwrite:
        raise DasdError(f"{out} already holds a trained adapter: pass --overwrite or choose "
                        "another --out")
    if config.overwrite:
        for name in ("train_log.jsonl", "train_summary.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(config, out / "config.yaml")
    return out


def train_onpolicy(config: OnPolicyConfig, model=None, tokenizer=None) -> dict[str, Any]:
    """Train a LoRA adapter with the configured on-policy method; save it, return the summary.

    A `model` passed in is wrapped by PEFT in place (tests, or a caller that holds it).
    """
    if (model is None) != (tokenizer is None):
        raise ValueError("pass model and tokenizer together, or neither")
    config = config.resolved()
    out = _prepare_out(config)
    if model is None:
        model, tokenizer = load_model(config.model, config.dtype, config.device)
    dataset = build_dataset(config, tokenizer)
    trainer = build_trainer(config, model, tokenizer, dataset)
    start = time.perf_counter()
    trainer.train()
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
        "rollouts": steps * config.batch_size * config.gradient_accumulation_steps,
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
        "settings": {name: getattr(config, name) for name in (
            "learning_rate", "max_grad_norm", "beta", "clip", "temperature", "top_p", "top_k",
            "lora_r", "lora_alpha")},
    }
