"""Typed stage configs: dataclass defaults < YAML file < command-line flags.

Every field carries `metadata={"help": ...}`; `__post_init__` of each config rejects bad
values with a one-line `DasdError`. Nested dataclasses are addressed with dotted keys on
the command line (`--train.lr 1e-4`), as in YAML (`train: {lr: 1e-4}`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from dasd import __version__
from dasd.errors import DasdError

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """`int | None` -> (int, True)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise naming the key."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and str(value).lower() in ("none", "null")):
        return None
    if dataclasses.is_dataclass(inner):
        if isinstance(value, str) and hasattr(inner, "from_string"):
            return inner.from_string(value)
        if not isinstance(value, dict):
            raise DasdError(f"config key '{key}' must be a mapping, got {value!r}")
        return build_config(inner, value, prefix=f"{key}.")
    origin = get_origin(inner)
    try:
        if origin is Literal:
            choices = get_args(inner)
            if value not in choices:
                allowed = ", ".join(map(str, choices))
                raise DasdError(f"config key '{key}' must be one of {allowed}; got {value!r}")
            return value
        if inner is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if origin in (list, tuple):
            (item_tp, *_) = get_args(inner) or (str,)
            if isinstance(value, str) and value.lstrip().startswith("["):
                value = yaml.safe_load(value)
            items = value if isinstance(value, list | tuple) else str(value).split(",")
            return [_coerce(v, item_tp, key) for v in items]
        if origin is dict or inner is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
        if inner in (int, float, str):
            if inner is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return inner(value)
    except (TypeError, ValueError) as err:
        raise DasdError(f"config key '{key}' expects {getattr(inner, '__name__', inner)}, "
                        f"got {value!r}") from err
    return value


def build_config(cls: type[C], values: dict[str, Any], prefix: str = "") -> C:
    """Instantiate `cls` from a (possibly nested) mapping, refusing unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            hint = difflib.get_close_matches(key, fields, n=1)
            did_you_mean = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise DasdError(f"unknown config key '{prefix}{key}'{did_you_mean}")
        kwargs[key] = _coerce(_onto_default(fields[key], value), hints[key], prefix + key)
    return cls(**kwargs)


def _onto_default(f: dataclasses.Field, value: Any) -> Any:
    """A partial mapping for a nested section keeps the section's own defaults."""
    if isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
        if dataclasses.is_dataclass(default):
            return _merge(config_to_dict(default), value)
    return value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'train.lr': 1} -> {'train': {'lr': 1}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    hints = _field_types(cls)
    leaves = []
    for f in dataclasses.fields(cls):
        inner, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            leaves += _leaf_fields(inner, f"{prefix}{f.name}.")
        else:
            leaves.append((prefix + f.name, f, hints[f.name]))
    return leaves


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per config field (dashes or underscores), plus `--config FILE.yaml`."""
    parser.add_argument("--config", help="YAML file with config values (flags override it)")
    for key, f, tp in _leaf_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        flags = list(dict.fromkeys([f"--{key.replace('_', '-')}", f"--{key}"]))
        is_flag = _unwrap_optional(tp)[0] is bool  # `--overwrite` alone means true
        parser.add_argument(*flags, dest=key, default=argparse.SUPPRESS,
                            nargs="?" if is_flag else None, const=True if is_flag else None,
                            help=f"{help_text} (default: {default})")


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Layer defaults < `--config` YAML < explicit flags, then validate."""
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    if config_path:
        values = load_yaml(config_path)
    flags = {k: v for k, v in vars(args).items()
             if k in {leaf for leaf, _, _ in _leaf_fields(cls)}}
    return build_config(cls, _merge(values, _nest(flags)))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DasdError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        first_line = str(err).splitlines()[0]
        raise DasdError(f"config file {path} is not valid YAML: {first_line}") from err
    if not isinstance(data, dict):
        raise DasdError(f"config file {path} must hold a mapping of keys to values")
    return data


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def resolved_config(config: Any) -> dict[str, Any]:
    """The config as run, with the dasd version and git revision for provenance."""
    return {"dasd_version": __version__, "git_revision": git_revision(), **config_to_dict(config)}


def write_resolved_config(config: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(resolved_config(config), sort_keys=False))


@dataclass
class DecodeStageConfig:
    """Settings shared by the stages that decode a task split: `generate` and `eval`."""

    model: str = field(default="smollm2-135m", metadata={
        "help": "hub id, local model directory, .gguf file, or the embedded 'smollm2-135m'"})
    dtype: str = field(default="auto", metadata={
        "help": "auto (fp32 on CPU, bf16 on GPU), float32, bfloat16 or float16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps"})
    task: str = field(default="arith", metadata={
        "help": "task name: arith, gsm8k, math, mbpp, arc_challenge"})
    split: str = field(default="train", metadata={"help": "data split"})
    data: str | None = field(default=None, metadata={
        "help": "local JSONL/Parquet file with the task's fields (instead of the hub)"})
    limit: int | None = field(default=None, metadata={"help": "use the first N examples"})
    levels: list[int] | None = field(default=None, metadata={
        "help": "only examples at these difficulty levels, e.g. 1 or 4,5 (before --limit)"})
    seed: int = field(default=0, metadata={
        "help": "seed of generated tasks (arith) and of sampling rules (hint)"})
    max_new_tokens: int = field(default=256, metadata={
        "help": "response length limit; capped responses are counted in the summary"})
    batch_size: int = field(default=16, metadata={"help": "examples decoded together"})
    prompts: str | None = field(default=None, metadata={
        "help": "YAML file with base/reference (and system) prompt templates"})
    chat_template_kwargs: dict = field(default_factory=dict, metadata={
        "help": "extra chat-template arguments, e.g. '{enable_thinking: false}'"})
    out: str | None = field(default=None, metadata={"help": "output JSONL"})
    overwrite: bool = field(default=False, metadata={
        "help": "start over instead of resuming an existing output"})

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise DasdError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise DasdError(f"limit must be >= 1; got {self.limit}")
        if self.levels is not None and not self.levels:
            raise DasdError("levels is empty: give difficulty levels (e.g. 1,2) or leave it unset")
