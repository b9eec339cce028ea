"""`dasd train`: LoRA SFT on generated rows with TRL's SFTTrainer.

The DASD recipe (paper Section 4): keep only the samples whose final answer is correct and
fine-tune with the causal-LM loss on the response tokens, LoRA on all linear layers via
PEFT, lr 2e-5, warmup ratio 0.2. Those are the defaults here. Rows are used as the exact
token ids that were generated (see `dasd.training.data`); a per-row `loss_mask` removes
tokens from the loss (Mask-PPL). Methods that change the loss online (ProFit) pass their
own `DasdSFTTrainer` subclass as `trainer_cls`; the loop stays TRL's.

Writes into `out`: the adapter (`adapter_config.json`, `adapter_model.safetensors`), the
tokenizer, `config.yaml` (resolved config), `train_log.jsonl` (one row per Trainer log),
`train_summary.json`, and with `merge` a full merged model in `out/merged`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from dasd.config import (
    STAGE,
    build_settings,
    settings_dict,
    settings_flags,
    write_resolved_config,
)
from dasd.distributed import ShardPlan
from dasd.errors import DasdError
from dasd.models import load_model, parse_device, pick_device
from dasd.records import check_writable
from dasd.registry import lookup
from dasd.training.adapters import record_base_model
from dasd.training.data import RowStats, build_dataset, check_rows_left
from dasd.training.filters import REJECTED_POLICIES, RowFilter
from dasd.training.references import replace_with_reference
from dasd.training.sft_methods import SFT_METHODS
from dasd.training.trl_args import (
    BOOKKEEPING,
    CHECKPOINTS,
    check_ranges,
    check_trainer_args,
    latest_checkpoint,
    resume_point,
    trl_flags,
)

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
ADAPTER_FILE = "adapter_model.safetensors"


# The SFT arguments dasd sets unless the config does: the paper's recipe (lr 2e-5, warmup
# ratio 0.2), one epoch, TRL's loss on completions, no activation checkpointing (TRL's
# default is on: slower on small models), no reporting, checkpoints for resuming.
SFT_DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-5, "warmup_steps": 0.2, "num_train_epochs": 1.0,
    "per_device_train_batch_size": 4, "max_length": 1024, "logging_steps": 1,
    "activation_checkpointing": False, "report_to": "none", **CHECKPOINTS}
# Arguments dasd's exact-id rows need; not configurable.
SFT_FIXED = ("output_dir", "completion_only_loss", "packing", "dataset_text_field", "seed")


def _sft_config_cls():
    from trl import SFTConfig

    return SFTConfig


@dataclass
class TrainConfig:
    model: str = field(default="smollm2-135m", metadata={
        "help": "base model: hub id, local model directory, .gguf file, or 'smollm2-135m'"})
    data: list[str] | None = field(default=None, metadata={
        "help": "JSONL file(s) written by `dasd generate` (comma-separated for several)"})
    out: str | None = field(default=None, metadata={
        "help": "adapter output directory (default: <data dir>/train/<data file stem>)",
        "effect": "none"})
    method: str = field(default="sft", metadata={
        "help": f"SFT method: {', '.join(SFT_METHODS)}; on-policy methods train on their "
                "own rollouts instead (dasd train --method opsd ...)"})
    settings: dict = field(default_factory=dict, metadata={
        "help": "the method's own settings, e.g. '{threshold: 2.5}' for mask-ppl; each is "
                "also a flag of its own (--threshold 2.5)"})
    only_correct: bool = field(default=True, metadata={
        "help": "train only on rows whose answer is correct (the DASD recipe)"})
    drop_length_capped: bool = field(default=False, metadata={
        "help": "also drop rows that hit the generation length cap"})
    reject_mentions: bool = field(default=False, metadata={
        "help": "also reject rows that mention the reference ('reference answer', 'your "
                "response', ...; the filter of Yang et al. 2024)"})
    rejected: Literal["drop", "reference"] = field(default="drop", metadata={
        "help": "rejected rows: drop them (DASD recipe) or train on the problem's original "
                "reference instead (Yang et al. 2024's self-distillation)"})
    per_problem: Literal["first", "all"] = field(default="first", metadata={
        "help": "with several samples per problem (generate --samples n): train on the first "
                "correct sample of each problem, or on all of them",
        "omit_default": True})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "'all-linear' (paper: all linear layers) or comma-separated module names"})
    seed: int = field(default=0, metadata={
        "help": "seed of LoRA init, dropout and shuffling (TRL's seed)"})
    dtype: str = field(default="auto", metadata={
        "help": "weights dtype: auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16"})
    device: str = field(default="auto", metadata={
        "help": "auto, cpu, cuda, mps", "effect": "none"})
    merge: bool = field(default=False, metadata={
        "help": "also save the base model with the adapter merged in, to <out>/merged",
        "effect": STAGE})
    overwrite: bool = field(default=False, metadata={
        "help": "start over: replace an adapter or checkpoints already in <out>",
        "effect": "none"})
    trainer: dict = field(default_factory=dict, metadata={
        "help": "TRL SFTConfig arguments; each is also a key and flag of its own under "
                "TRL's name (learning_rate, save_steps, report_to, ...)",
        "ignore_keys": BOOKKEEPING})

    FLAG_LABEL: ClassVar[str] = "sft"
    RENAMED: ClassVar[dict[str, str]] = {
        "mask": "Mask-PPL is a method now: `method: mask-ppl` (in a run: a methods entry "
                "{name: mask-ppl, method: mask-ppl})",
        "loss": "ProFit is a method now: `method: profit` (in a run: {name: profit, "
                "method: profit})",
        "mask_ppl_threshold": "write `threshold` (a setting of method mask-ppl)",
        "mask_source": "write `source` (a setting of method mask-ppl)",
        "profit_threshold": "write `threshold` (a setting of method profit)",
        "warmup_ratio": "write TRL's `warmup_steps` (transformers 5: a float < 1 is a ratio "
                        "of the steps, e.g. 0.2)",
    }

    @classmethod
    def extra_keys(cls) -> dict[str, str]:
        return {**dict.fromkeys(cls._trl_flags(), "trainer"),
                **dict.fromkeys(settings_flags(SFT_METHODS), "settings")}

    @classmethod
    def extra_key_help(cls) -> dict[str, tuple[str, Any]]:
        return {**cls._trl_flags(), **settings_flags(SFT_METHODS)}

    @classmethod
    def _trl_flags(cls) -> dict[str, tuple[str, Any]]:
        own = {f.name for f in dataclasses.fields(cls)} | set(SFT_FIXED)
        return trl_flags(_sft_config_cls(), own)

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        self.data = [str(p) for p in self.data] if self.data else None
        lookup(SFT_METHODS, self.method, "SFT method")
        self.settings = settings_dict(self.method_settings())
        self._check_lora()
        parse_device(self.device)
        if self.rejected not in REJECTED_POLICIES:
            raise DasdError(f"rejected must be one of {', '.join(REJECTED_POLICIES)}; "
                            f"got {self.rejected!r}")
        if self.dtype not in DTYPES:
            raise DasdError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        fixed = sorted(set(self.trainer) & set(SFT_FIXED))
        if fixed:
            raise DasdError(f"train: dasd sets {', '.join(fixed)} itself (use out / seed)")
        self.trainer = {**SFT_DEFAULTS, **check_trainer_args(
            _sft_config_cls(), self.trainer, "train", SFT_DEFAULTS)}
        check_ranges(self.trainer, "train")
        if self.out is None and self.data:
            self.out = str(default_out(self.data))

    def _check_lora(self) -> None:
        if self.lora_r < 1:
            raise DasdError(f"lora_r must be >= 1; got {self.lora_r}")
        if not self.lora_alpha > 0:
            raise DasdError(f"lora_alpha must be > 0; got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise DasdError(f"lora_dropout must be in [0, 1); got {self.lora_dropout}")
        if not self.lora_target_modules.strip(" ,"):
            raise DasdError("lora_target_modules is empty: use 'all-linear' or module names")

    def method_settings(self):
        """The SFT method's typed settings (`prepare` rows, `token_loss`)."""
        return build_settings(SFT_METHODS[self.method], self.settings, f"method '{self.method}'")

    @property
    def max_length(self) -> int:
        return self.trainer["max_length"]

    def config_comment(self) -> str:
        return ("trainer: TRL SFTConfig arguments. Set by dasd unless given: "
                + ", ".join(f"{k}={v}" for k, v in SFT_DEFAULTS.items())
                + "; precision from the device; the rest are TRL's defaults.")

    def check_inputs(self) -> None:
        """Checks that need the file system; run just before training, not at parse time,
        so that a chained run can name data that an earlier stage has yet to write."""
        if not self.data:
            raise DasdError("data is required: pass --data runs/<task>/<method>.jsonl")
        for path in self.data:
            if not Path(path).is_file():
                raise DasdError(f"data file not found: {path}; run `dasd generate` first "
                                "or fix --data")
        if self.out is None:
            raise DasdError("out is required when training on several data files: pass --out")
        check_writable(self.out, is_dir=True)

    def row_filter(self) -> RowFilter:
        return RowFilter(self.only_correct, self.drop_length_capped, self.reject_mentions,
                         rejected=self.rejected, per_problem=self.per_problem)

    def target_modules(self) -> str | list[str]:
        return target_modules(self.lora_target_modules)


def target_modules(spec: str) -> str | list[str]:
    if spec.strip() == "all-linear":
        return "all-linear"
    return [m.strip() for m in spec.split(",") if m.strip()]


def default_out(data: list[str]) -> Path | None:
    """`runs/x/dasd.jsonl` -> `runs/x/train/dasd`; `runs/x/generate/dasd.jsonl` likewise."""
    if len(data) != 1:
        return None
    path = Path(data[0])
    parent = path.parent.parent if path.parent.name == "generate" else path.parent
    return parent / "train" / path.stem


def lora_config(config: TrainConfig):
    """A fresh LoraConfig for every trainer: PEFT mutates the one it is given."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules(), task_type="CAUSAL_LM")


def mixed_precision(device: torch.device) -> str | None:
    """bf16 autocast where the GPU has it, else fp16 on GPUs; never on CPU (TRL's bf16
    default fails there) or MPS."""
    if device.type != "cuda":
        return None
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def precision_args(device: torch.device, trainer: dict[str, Any]) -> dict[str, Any]:
    """Mixed precision from the device unless the config chose it (bf16 / fp16)."""
    if "bf16" in trainer or "fp16" in trainer:
        return {"use_cpu": device.type == "cpu"}
    precision = mixed_precision(device)
    return {"bf16": precision == "bf16", "fp16": precision == "fp16",
            "use_cpu": device.type == "cpu"}


def trainer_arguments(config, defaults_off: dict[str, Any]) -> dict[str, Any]:
    """The config's TRL arguments; `gradient_checkpointing` (TRL's older name) given by
    the user replaces dasd's `activation_checkpointing` default."""
    args = dict(config.trainer)
    if "gradient_checkpointing" in args:
        args.pop("activation_checkpointing", None)
    args.pop("resume_from_checkpoint", None)  # passed to train(), where TRL reads it
    return {**defaults_off, **args}


def sft_args(config: TrainConfig, device: torch.device):
    args = trainer_arguments(config, {"ddp_find_unused_parameters": False,  # LoRA: all used
                                      "disable_tqdm": False})  # a bar with rate and ETA
    return _sft_config_cls()(output_dir=config.out, seed=config.seed,
                             **{**precision_args(device, args), **args},
                             completion_only_loss=True, packing=False)


@functools.cache
def _sft_trainer_cls():
    from trl import SFTTrainer

    class DasdSFTTrainer(SFTTrainer):
        """SFTTrainer that counts the tokens it trained on (all, and those with a label) and
        optionally replaces the per-token loss (`token_loss`, e.g. ProFit's online mask).

        `token_loss(log_probs, label_mask, num_tokens=n) -> (loss, kept tokens)` gets TRL's
        fused-head outputs: the log-probability of each gold token and the label mask.
        """

        def __init__(self, *args, token_loss: Callable | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.token_loss = token_loss
            self.tokens_seen = 0
            self.loss_tokens_seen = 0
            self.kept_tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.tokens_seen += int(inputs["attention_mask"].sum())
                self.loss_tokens_seen += int((inputs["labels"][:, 1:] != -100).sum())
            if self.token_loss is None or return_outputs:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            return self._token_loss(model, inputs, num_items_in_batch)

        def _token_loss(self, model, inputs, num_items_in_batch):
            # TRL's own default branch, with the per-token loss swapped (same normaliser).
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)
            label_mask = outputs.label_mask
            num_tokens = label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss, kept = self.token_loss(outputs.log_probs, label_mask, num_tokens=num_tokens)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            mode = "train" if model.training else "eval"
            if model.training:
                self.kept_tokens_seen += int(kept)
            total = int(label_mask.sum())
            self._metrics[mode]["kept_token_fraction"].append(int(kept) / total if total else 0.0)
            return loss

    return DasdSFTTrainer


def __getattr__(name: str):
    # `DasdSFTTrainer` is defined on first use: importing TRL takes seconds, and the CLI
    # imports this module for `TrainConfig` alone (e.g. for --help).
    if name == "DasdSFTTrainer":
        return _sft_trainer_cls()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_trainer(config: TrainConfig, model, tokenizer, dataset, trainer_cls=None,
                  token_loss: Callable | None = None):
    """The SFTTrainer (LoRA-wrapped model, labels built from `completion_mask`)."""
    from transformers import set_seed

    trainer_cls = trainer_cls or _sft_trainer_cls()
    set_seed(config.seed)  # LoRA's A matrices are initialised inside the trainer
    device = pick_device(config.device)
    extra = {"token_loss": token_loss} if token_loss is not None else {}
    return trainer_cls(model=model, args=sft_args(config, device), train_dataset=dataset,
                       processing_class=tokenizer, peft_config=lora_config(config), **extra)


def training_set(config: TrainConfig, model, tokenizer):
    """(dataset, RowStats): the rows of `config.data` after the filter, the rejected-row
    policy and the method's `prepare` (Mask-PPL: on the frozen model, before LoRA)."""
    def to_reference(row):
        return replace_with_reference(row, tokenizer)

    method = config.method_settings()
    prepare = getattr(method, "prepare", None)
    return build_dataset(config.data, max_length=config.max_length,
                         row_filter=config.row_filter(), to_reference=to_reference,
                         transform=(lambda rows: prepare(rows, model)) if prepare else None)


def _prepare_out(config: TrainConfig) -> tuple[Path, str | None]:
    """(output folder, checkpoint to resume from); one process prepares the folder."""
    out = Path(config.out)
    if not ShardPlan.from_env().is_main:
        return out, latest_checkpoint(out) and str(latest_checkpoint(out))
    checkpoint = resume_point(config, out, ADAPTER_FILE)
    if config.overwrite:
        shutil.rmtree(out / "merged", ignore_errors=True)
        for name in ("train_log.jsonl", "train_summary.json", ADAPTER_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(config, out / "config.yaml")
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    return out, checkpoint


def train(config: TrainConfig, model=None, tokenizer=None, trainer_cls=None) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on generated rows; save it and return the run summary.

    A `model` passed in is wrapped by PEFT in place, so after the call it computes with the
    trained adapter (merged into its weights when `config.merge`). `trainer_cls` swaps in a
    subclass of `DasdSFTTrainer` for methods that change the loss online (e.g. ProFit).
    """
    if (model is None) != (tokenizer is None):
        raise ValueError("pass model and tokenizer together, or neither")
    config.check_inputs()
    if config.rejected == "drop":  # fail on empty data before loading any model
        check_rows_left(config.data, config.row_filter(), config.max_length)
    if model is None:  # under torchrun / accelerate launch: this rank's own GPU
        device = ShardPlan.from_env().device(config.device)
        model, tokenizer = load_model(config.model, config.dtype, device)
    dataset, stats = training_set(config, model, tokenizer)
    log.info("training on %d of %d rows (%s); output in %s", stats.used, stats.read,
             stats.explain(), config.out)
    out, checkpoint = _prepare_out(config)
    token_loss = getattr(config.method_settings(), "token_loss", None)
    trainer = build_trainer(config, model, tokenizer, dataset, trainer_cls,
                            token_loss=token_loss() if token_loss else None)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    trainer.model.eval()

    summary = _summary(config, trainer, result, stats, seconds)  # every rank: it reduces
    if not trainer.is_world_process_zero():
        return summary
    trainer.model.save_pretrained(out)
    record_base_model(out, config.model)  # the hub id, not this machine's cache path
    tokenizer.save_pretrained(out)
    _write_jsonl(out / "train_log.jsonl", trainer.state.log_history)
    if config.merge:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
        summary["merged"] = str(out / "merged")
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("adapter saved to %s (train loss %s -> %s in %d steps, %.0f s)", out,
             summary["train_loss_first"], summary["train_loss_last"], summary["steps"], seconds)
    return summary


def _summary(config: TrainConfig, trainer, result, stats: RowStats,
             seconds: float) -> dict[str, Any]:
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    trainable, total = trainer.model.get_nb_trainable_parameters()
    steps = trainer.state.global_step
    tokens = _all_ranks(trainer, getattr(trainer, "tokens_seen", 0))  # DasdSFTTrainer counts
    loss_tokens = _all_ranks(trainer, getattr(trainer, "loss_tokens_seen", 0))
    return {
        "output": str(config.out), "data": config.data, "model": config.model,
        "rows": stats.as_dict(),
        "steps": steps, "epochs": trainer.state.epoch,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.training_loss,
        "seconds": seconds, "seconds_per_step": seconds / steps if steps else None,
        "trainable_params": trainable, "total_params": total,
        "tokens_trained": tokens, "loss_tokens_trained": loss_tokens,
        "tokens_per_second": tokens / seconds if seconds else None,
        "loss_tokens_per_second": loss_tokens / seconds if seconds else None,
        "device": str(trainer.args.device),
        "mixed_precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else None,
        "merged": None,
    }


def _all_ranks(trainer, count: int) -> int:
    """`count` summed over the processes of a distributed run (itself on one process)."""
    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        return count
    total = accelerator.reduce(torch.tensor(count, device=accelerator.device), reduction="sum")
    return int(total)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def load_trained(model_spec: str, adapter_dir: str | Path, dtype: str = "auto",
                 device: str = "auto"):
    """(model, tokenizer): the base model with the adapter from `adapter_dir`, in eval mode."""
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise DasdError(f"{adapter_dir} holds no adapter (adapter_config.json): give the "
                        "--out directory of `dasd train`")
    model, tokenizer = load_model(model_spec, dtype, device)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), tokenizer
