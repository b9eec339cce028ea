"""TRL's own training arguments in dasd's configs, and checkpoints that survive a kill.

A training section takes every field of TRL's config class (`SFTConfig` for SFT,
`SDPOConfig` on-policy) under TRL's own name, flat (`learning_rate: 2e-5`,
`--save-steps 50`, `--train.lr-scheduler-type cosine` in `dasd run`). They are collected
in the section's `trainer` mapping, checked by building TRL's class once at parse time,
and passed through unchanged; dasd sets only the defaults it must (the paper's, CPU-safe
precision, checkpoints) and lists them in the resolved `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import shutil
import tempfile
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml

from dasd.errors import DasdError
from dasd.registry import did_you_mean

# Arguments that change how a run is logged or saved, never the adapter it trains: they
# can change between a run and its resumption (`dasd.config.outcome`).
BOOKKEEPING = frozenset({
    "logging_steps", "logging_strategy", "logging_first_step", "logging_dir", "report_to",
    "run_name", "project", "trackio_space_id", "save_strategy", "save_steps",
    "save_total_limit", "save_only_model", "save_safetensors", "resume_from_checkpoint",
    "disable_tqdm", "dataloader_num_workers", "dataloader_pin_memory", "push_to_hub",
    "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "output_dir",
    "log_level", "log_completions", "num_completions_to_print", "overwrite_output_dir",
})
# Checkpoints for long runs: every tenth of training, the latest one kept (a kill loses
# at most a tenth); the same command resumes from it.
CHECKPOINTS = {"save_strategy": "steps", "save_steps": 0.1, "save_total_limit": 1}
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@functools.cache
def trl_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls) if f.init}


def trl_flags(config_cls: type, own: set[str]) -> dict[str, tuple[str, Any]]:
    """{name: (help, type)} for TRL's arguments that dasd does not set itself (`own`)."""
    hints = typing.get_type_hints(config_cls)
    return {name: (f"TRL {config_cls.__name__}: {f.metadata.get('help', '')}".strip(),
                   hints.get(name, Any))
            for name, f in trl_fields(config_cls).items() if name not in own}


def check_trainer_args(config_cls: type, args: dict[str, Any], where: str,
                       defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """`args` with command-line strings read as YAML scalars where TRL's field is not a
    string, checked by building `config_cls` once over dasd's `defaults` (on the CPU; the
    device decides the precision later)."""
    fields = trl_fields(config_cls)
    hints = typing.get_type_hints(config_cls)
    checked = {}
    for key, value in args.items():
        if key not in fields:
            raise DasdError(f"{where}: '{key}' is not an argument of TRL's "
                            f"{config_cls.__name__}")
        checked[key] = _from_text(value, hints.get(key))
        _check_type(key, checked[key], hints.get(key), where)
    if "report_to" in checked:
        check_report_to(checked["report_to"], where)
    return _probe(config_cls, checked, defaults, where)


def check_report_to(value: Any, where: str) -> None:
    """Every integration named must be one transformers knows and one installed here
    (transformers checks either only when the trainer starts, after outputs exist)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [value] if isinstance(value, str) else list(value or [])
    if names in (["none"], ["all"]):
        return
    known, available = list(INTEGRATION_TO_CALLBACK), get_available_reporting_integrations()
    for name in names:
        if name not in known:
            raise DasdError(f"{where}: report_to '{name}' is not an integration transformers "
                            f"knows; use none, all, or one of {', '.join(known)}"
                            f"{did_you_mean(str(name), known)}")
        if name not in available:
            raise DasdError(f"{where}: report_to '{name}' needs its package, which is not "
                            f"installed here: install it, or use "
                            f"{', '.join(['none', *available])}")


def _check_type(key: str, value: Any, tp: Any, where: str) -> None:
    """A word where TRL's field takes only numbers (TRL's dataclasses do not check)."""
    members = _members(tp)
    takes_words = str in members or any(isinstance(m, type) and issubclass(m, enum.Enum)
                                        for m in members)
    if isinstance(value, str) and tp is not None and not takes_words and Any not in members:
        raise DasdError(f"{where}: {key} expects {getattr(tp, '__name__', tp)}, "
                        f"got {value!r}")


def _from_text(value: Any, tp: Any) -> Any:
    """A command-line string read as YAML where TRL's field takes numbers, lists or
    mappings; a word stays a word where the field takes strings (`save_strategy: no`)."""
    if not isinstance(value, str) or tp is str or not value.strip():
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # TRL's own check names the argument
    if isinstance(parsed, bool) and bool not in _members(tp):
        return value
    if isinstance(parsed, str) and float in _members(tp) and str not in _members(tp):
        return _as_float(parsed)
    return parsed


def _as_float(text: str) -> float | str:
    """Python's spellings of a float (`2e-5`, `1E-4`, `1_000.5`, `inf`), which YAML 1.1
    reads as strings; anything else stays a string for the type check to name."""
    try:
        return float(text)
    except ValueError:
        return text


def _members(tp: Any) -> set[Any]:
    args = typing.get_args(tp)
    return {tp} if not args else {a for arg in args for a in _members(arg)} | {tp}


def _probe(config_cls: type, checked: dict[str, Any], defaults: dict[str, Any] | None,
           where: str) -> dict[str, Any]:
    probe = {k: v for k, v in {**(defaults or {}), **checked}.items()
             if k not in ("bf16", "fp16", "use_cpu", "resume_from_checkpoint")}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TRL's own gradient_checkpointing
        try:
            config_cls(**{"output_dir": tmp, **probe, "use_cpu": True, "bf16": False,
                          "fp16": False})
        except Exception as err:  # TRL raises several kinds (ValueError, OSError, ImportError)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DasdError(f"{where}: TRL's {config_cls.__name__} refused these arguments: "
                            f"{first}") from err
    return checked


def check_ranges(args: dict[str, Any], where: str) -> None:
    """The ranges TRL itself does not check, on the arguments a run will use."""
    checks = {
        "learning_rate": (lambda v: v > 0, "must be > 0"),
        "warmup_steps": (lambda v: v >= 0, "must be >= 0 (a float < 1 is a ratio of steps)"),
        "num_train_epochs": (lambda v: v > 0, "must be > 0"),
        "max_steps": (lambda v: v >= 1 or v == -1,
                      "must be >= 1, or -1 to use num_train_epochs"),
        "per_device_train_batch_size": (lambda v: v >= 1, "must be >= 1"),
        "gradient_accumulation_steps": (lambda v: v >= 1, "must be >= 1"),
        "max_length": (lambda v: v is None or v >= 1, "must be >= 1"),
        "max_grad_norm": (lambda v: v > 0, "must be > 0"),
        "temperature": (lambda v: v > 0, "must be > 0"),
        "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
        "top_k": (lambda v: v >= 0, "must be >= 0 (0 = off)"),
    }
    for name, (ok, rule) in checks.items():
        if name in args and args[name] is not None and not ok(args[name]):
            raise DasdError(f"{where}: {name} {rule}; got {args[name]!r}")


def checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of the `checkpoint-<step>` folders in `out`, by step."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in out.iterdir()
                  if p.is_dir() and (m := CHECKPOINT.match(p.name)))


def latest_checkpoint(out: str | Path) -> Path | None:
    """The `checkpoint-<step>` folder with the highest step in `out`, if any."""
    found = checkpoints(out)
    return found[-1][1] if found else None


def clear_checkpoints(out: str | Path) -> None:
    for _, path in checkpoints(out):
        shutil.rmtree(path)


def resume_point(config: Any, out: Path, adapter_file: str) -> str | None:
    """Where training in `out` starts: the user's `resume_from_checkpoint`, else the
    latest checkpoint of an interrupted run with the same settings, else the start.

    `overwrite` clears earlier checkpoints; a finished adapter without `overwrite`, or a
    checkpoint written with other settings, is refused with the fix in one line.
    """
    from dasd.config import changed_settings

    if config.overwrite:
        clear_checkpoints(out)
        return None
    if (out / adapter_file).exists():
        raise DasdError(f"{out} already holds a trained adapter: pass --overwrite or choose "
                        "another --out")
    asked = config.trainer.get("resume_from_checkpoint")
    if asked:
        if not Path(asked).is_dir():
            raise DasdError(f"resume_from_checkpoint {asked} is not a folder: give a "
                            f"checkpoint-<step> folder of an earlier run (in {out})")
        return str(asked)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        return None
    previous = out / "config.yaml"
    changed = changed_settings(config, yaml.safe_load(previous.read_text()) or {}) \
        if previous.is_file() else ["config.yaml missing"]
    if changed:
        raise DasdError(f"{out} holds {checkpoint.name} of a run with other settings "
                        f"({', '.join(changed)}): pass --overwrite to start over")
    return str(checkpoint)
