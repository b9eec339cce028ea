"""Typed stage configs: dataclass defaults < YAML file < command-line flags.

Every field carries `metadata={"help": ...}`; `__post_init__` of each config rejects bad
values with a one-line `DasdError`. Nested dataclasses are addressed with dotted keys on
the command line (`--train.lr 1e-4`), as in YAML (`train: {lr: 1e-4}`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from dasd import __version__
from dasd.errors import DasdError
from dasd.records import read_text
from dasd.registry import did_you_mean

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


def _coerce(value: Any, tp: Any, key: str, checked: bool = False) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise naming the key."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and str(value).lower() in ("none", "null")):
        return None
    if dataclasses.is_dataclass(inner):
        if isinstance(value, str) and hasattr(inner, "from_string"):
            return inner.from_string(value)
        if not isinstance(value, dict):
            raise DasdError(f"config key '{key}' must be a mapping, got {value!r}")
        return build_config(inner, value, prefix=f"{key}.", checked=checked)
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
                value = _key_values(value) if _is_key_values(value) else yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
        if inner in (int, float, str):
            if inner is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return inner(value)
    except (TypeError, ValueError, yaml.YAMLError):
        shape = " (a YAML mapping, e.g. '{name: value}', or name=value,...)" \
            if inner is dict or origin is dict else ""
        raise DasdError(f"config key '{key}' expects {getattr(inner, '__name__', inner)}"
                        f"{shape}, got {value!r}") from None
    return value


def _is_key_values(text: str) -> bool:
    """Whether a command-line mapping is written `name=value,...` rather than in YAML."""
    return "=" in text and not text.lstrip().startswith("{")


def _key_values(text: str) -> dict[str, Any]:
    """`a=1,b=x` as {"a": 1, "b": "x"}: each value read as a YAML scalar (`false`, `3`)."""
    pairs = [part.partition("=") for part in text.split(",")]
    if any(not sep or not key.strip() for key, sep, _ in pairs):
        raise ValueError(text)
    return {key.strip(): yaml.safe_load(value) for key, _, value in pairs}


def build_config(cls: type[C], values: dict[str, Any], prefix: str = "",
                 checked: bool = False) -> C:
    """Instantiate `cls` from a (possibly nested) mapping, refusing unknown keys.

    A class may declare `extra_keys() -> {key: field name}`: keys it does not have that
    belong in one of its mapping fields (a method's own settings, TRL's arguments).
    """
    if not checked:  # (a section merged onto its defaults was checked before the merge)
        _refuse_renamed(cls, values, prefix)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _field_types(cls)
    values = _route_extra_keys(cls, values, fields, prefix)
    kwargs = {}
    for key, value in values.items():
        merged = _onto_default(fields[key], value)
        if merged is not value:
            _refuse_renamed(_unwrap_optional(hints[key])[0], value, f"{prefix}{key}.")
        kwargs[key] = _coerce(merged, hints[key], prefix + key, checked=merged is not value)
    return cls(**kwargs)


def _refuse_renamed(cls: type, values: dict[str, Any], prefix: str) -> None:
    """A key of an older dasd (`cls.RENAMED`: {old key: how to write it now}) gets one line
    that says how to write it now; a key that belongs elsewhere (`cls.REFUSED`: {key: where})
    one that says where."""
    for key in values:
        now = getattr(cls, "RENAMED", {}).get(key)
        if now:
            raise DasdError(f"config key '{prefix}{key}' is from an older dasd: {now}")
        elsewhere = getattr(cls, "REFUSED", {}).get(key)
        if elsewhere:
            raise DasdError(f"config key '{prefix}{key}' is not set here: {elsewhere}")


def _route_extra_keys(cls: type, values: dict[str, Any], fields: dict[str, Any],
                      prefix: str) -> dict[str, Any]:
    extra = cls.extra_keys() if hasattr(cls, "extra_keys") else {}
    routed = {k: v for k, v in values.items() if k in fields}
    for key, value in values.items():
        if key in fields:
            continue
        if key not in extra:
            hint = did_you_mean(key, [*fields, *extra], prefix)
            raise DasdError(f"unknown config key '{prefix}{key}'{hint}")
        target = extra[key]
        routed[target] = {**(routed.get(target) or {}), key: value}
    return routed


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


def _extra_leaves(cls: type, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, help, type) of the extra keys of `cls` and of its nested sections."""
    leaves = []
    if hasattr(cls, "extra_key_help"):
        leaves += [(prefix + key, text, tp) for key, (text, tp) in cls.extra_key_help().items()]
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        inner, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            leaves += _extra_leaves(inner, f"{prefix}{f.name}.")
    return leaves


def field_help(f: dataclasses.Field) -> str:
    """A field's help, with the names of the registry its `choices` metadata points at
    ("module:NAME", looked up only when help is shown: this module imports no stage)."""
    text = f.metadata.get("help", "")
    if "choices" in f.metadata:
        module, name = f.metadata["choices"].split(":")
        text += ": " + ", ".join(getattr(importlib.import_module(module), name))
    return text


def config_keys(cls: type) -> dict[str, tuple[str, Any]]:
    """{dotted key: (help, type)} of every value `cls` takes: its fields, nested sections'
    fields, and the extra keys (a method's settings, TRL's training arguments)."""
    keys = {}
    for key, f, tp in _leaf_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        keys[key] = (f"{field_help(f)} (default: {default})", tp)
    for key, help_text, tp in _extra_leaves(cls):
        keys.setdefault(key, (help_text, tp))
    return keys


def add_config_arguments(parser: argparse.ArgumentParser, *classes: type) -> None:
    """One `--flag` per config key of `classes` (dashes or underscores), plus `--config
    FILE.yaml`. A key several classes take shows each class's help (`labels`)."""
    parser.add_argument("--config", help="YAML file with config values (flags override it)")
    merged: dict[str, tuple[list[str], Any]] = {}
    for cls in classes:
        label = getattr(cls, "FLAG_LABEL", None)
        for key, (help_text, tp) in config_keys(cls).items():
            helps, _ = merged.setdefault(key, ([], tp))
            text = f"{label}: {help_text}" if label and len(classes) > 1 else help_text
            if text not in helps:
                helps.append(text)
    for key, (helps, tp) in merged.items():
        _add_flag(parser, key, "; ".join(helps), tp)


def _add_flag(parser: argparse.ArgumentParser, key: str, help_text: str, tp: Any) -> None:
    flags = list(dict.fromkeys([f"--{key.replace('_', '-')}", f"--{key}"]))
    is_flag = _unwrap_optional(tp)[0] is bool  # `--overwrite` alone means true
    parser.add_argument(*flags, dest=key, default=argparse.SUPPRESS,
                        nargs="?" if is_flag else None, const=True if is_flag else None,
                        help=help_text.replace("%", "%%"))


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Layer defaults < `--config` YAML < explicit flags, then validate."""
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    if config_path:
        values = load_yaml(config_path)
    known = config_keys(cls)
    flags = {k: v for k, v in vars(args).items() if k in known}
    return build_config(cls, _merge(values, _nest(flags)))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DasdError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(read_text(path)) or {}
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
    """The config as run, with the dasd version, git revision and library versions."""
    from dasd.versions import library_versions

    return {"dasd_version": __version__, "git_revision": git_revision(),
            "versions": library_versions(), **config_to_dict(config)}


def write_resolved_config(config: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = config.config_comment() if hasattr(config, "config_comment") else ""
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(header + yaml.safe_dump(resolved_config(config), sort_keys=False))


def settings_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a method's settings dataclass that a user sets (not those a stage
    fills in, such as the run's seed)."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("from_stage")]


def build_settings(cls: type, values: dict[str, Any] | None, where: str) -> Any:
    """`cls` built from a mapping of its user-facing fields; an unknown key names the
    method (`where`) and the settings it has."""
    values = dict(values or {})
    names = [f.name for f in settings_fields(cls)]
    for key in values:
        if key not in names:
            has = f"its settings are {', '.join(names)}" if names else "it has no settings"
            raise DasdError(f"{where} has no setting '{key}'{did_you_mean(key, names)}; {has}")
    try:
        return build_config(cls, values)
    except DasdError as err:
        raise DasdError(f"{where}: {err}") from err


def omitted(f: dataclasses.Field, value: Any) -> bool:
    """A setting added after outputs were written (`metadata={"omit_default": True}`) is
    left out of records and fingerprints while it has its default, so those outputs stay
    valid and new ones with the default stay byte-identical."""
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return bool(f.metadata.get("omit_default")) and value == default


def settings_dict(settings: Any) -> dict[str, Any]:
    """The user-facing settings of a built settings object, every default filled in
    (except those `omitted` at their default)."""
    return {f.name: getattr(settings, f.name) for f in settings_fields(type(settings))
            if not omitted(f, getattr(settings, f.name))}


def settings_flags(registry: dict[str, type]) -> dict[str, tuple[str, Any]]:
    """One flag per settings name over a registry of settings classes: {name: (help,
    type)}; a name several methods use gets each one's help, prefixed by the method."""
    helps: dict[str, list[str]] = {}
    types_: dict[str, Any] = {}
    for method, cls in registry.items():
        hints = _field_types(cls)
        for f in settings_fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            helps.setdefault(f.name, []).append(
                f"{method}: {field_help(f)} (default: {default})")
            types_.setdefault(f.name, hints[f.name])
    return {name: ("; ".join(texts), types_[name]) for name, texts in helps.items()}


# What a setting changes. Every field changes the rows (or adapter) a stage writes unless
# its metadata says otherwise: `effect: "stage"` changes which rows there are or the
# summary but no finished row (limit, pass_k), `effect: "none"` changes nothing written
# (batch size, engine, device, output path). Mapping fields may list `ignore_keys`; a
# setting newer than its outputs may be `omit_default` (see `omitted`).
ROWS, STAGE = "rows", "stage"


def outcome(config: Any, level: str = ROWS) -> dict[str, Any]:
    """The settings of `config` that decide its output: at `ROWS` those that change a
    finished row (a resume must agree on them), at `STAGE` also those that change the
    set of rows or the summary (`dasd run` reruns a stage when they differ)."""
    settings = {}
    for f in dataclasses.fields(config):
        effect = f.metadata.get("effect", ROWS)
        value = getattr(config, f.name)
        if effect == "none" or (effect == STAGE and level == ROWS) or omitted(f, value):
            continue
        if dataclasses.is_dataclass(value):
            value = outcome(value, level)
        elif isinstance(value, dict) and "ignore_keys" in f.metadata:
            value = {k: v for k, v in value.items() if k not in f.metadata["ignore_keys"]}
        settings[f.name] = value
    return settings


def fingerprint(config: Any, level: str = ROWS, extra: Any = None) -> str:
    """One hash of `outcome(config, level)` (and of `extra`, e.g. input digests)."""
    payload = json.dumps([outcome(config, level), extra], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def changed_settings(config: Any, previous: dict[str, Any], level: str = ROWS) -> list[str]:
    """`key=old->new` for every output-deciding setting that differs from `previous` (a
    resolved config as written beside an output), dotted for nested ones."""
    now = _flatten(json.loads(json.dumps(outcome(config, level), default=str)))
    before = _flatten(previous)
    return [f"{k}={before.get(k)!r}->{now[k]!r}" for k in sorted(now) if before.get(k) != now[k]]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


@dataclass
class ProblemConfig:
    """The model and the problems of a stage: what `generate`, `eval` and on-policy
    training share."""

    model: str = field(default="smollm2-135m", metadata={
        "help": "hub id, local model directory, .gguf file, or the embedded 'smollm2-135m'"})
    dtype: str = field(default="auto", metadata={
        "help": "auto (fp32 on CPU, bf16 on GPU), float32, bfloat16 or float16"})
    device: str = field(default="auto", metadata={
        "help": "auto, cpu, cuda, cuda:1, mps", "effect": "none"})
    task: str = field(default="arith", metadata={
        "help": "task name", "choices": "dasd.tasks:TASKS"})
    split: str = field(default="train", metadata={"help": "data split"})
    data: str | None = field(default=None, metadata={
        "help": "local JSONL/Parquet file with the task's fields (instead of the hub)"})
    columns: dict = field(default_factory=dict, metadata={
        "help": "the task's field names read from other columns of your rows, e.g. "
                "'{question: problem, answer: final}' or question=problem,answer=final",
        "omit_default": True})
    dataset_name: str | None = field(default=None, metadata={
        "help": "your data set instead of the task's own: a hub id or a local data set folder "
                "(`datasets.load_dataset`), read at `split`; not with `data`",
        "omit_default": True})
    dataset_config: str | None = field(default=None, metadata={
        "help": "the configuration (subset) of `dataset_name`", "omit_default": True})
    checker: str | None = field(default=None, metadata={
        "help": "how task custom checks answers (and asks for them)",
        "choices": "dasd.tasks.custom:CHECKERS", "omit_default": True})
    limit: int | None = field(default=None, metadata={
        "help": "use N examples of the split (default: all), drawn as `sample` says",
        "effect": STAGE})
    sample: Literal["stratified", "first"] = field(default="stratified", metadata={
        "help": "how a limit draws: stratified (a seeded random sample, stratified by level "
                "and subject in proportion to the split) or first (the first N in file order)",
        "effect": STAGE})
    levels: list[int] | None = field(default=None, metadata={
        "help": "only examples at these difficulty levels, e.g. 1 or 4,5 (before --limit)"})
    held_out: int | None = field(default=None, metadata={
        "help": "take N other problems instead: a draw (seeded, as `sample` says) from the "
                "problems of the split that the `limit` draw leaves out, e.g. a validation set "
                "disjoint from the training problems", "effect": STAGE, "omit_default": True})
    seed: int = field(default=0, metadata={
        "help": "seed of the problems drawn by a limit, of generated tasks (arith) and of "
                "sampling"})
    prompts: str | None = field(default=None, metadata={
        "help": "YAML file with base/reference (and system) prompt templates"})
    chat_template_kwargs: dict = field(default_factory=dict, metadata={
        "help": "chat-template arguments of both contexts, e.g. '{enable_thinking: false}'"})
    base_chat_template_kwargs: dict | None = field(default=None, metadata={
        "help": "chat-template arguments of the base (student) context only, over "
                "chat_template_kwargs; evaluation prompts as this context does",
        "omit_default": True})
    reference_chat_template_kwargs: dict | None = field(default=None, metadata={
        "help": "chat-template arguments of the reference (teacher) context only, over "
                "chat_template_kwargs, e.g. '{enable_thinking: true}'", "omit_default": True})
    thinking_block: Literal["shared", "own", "open"] = field(default="shared", metadata={
        "help": "what the reference prompt ends with where a chat template leaves a thinking "
                "block after the assistant header (Qwen3's empty <think></think>): shared = "
                "the base prompt's, so both contexts score the first response token at the same "
                "point; own = its own rendering (OPSD's code); open = an open <think>, the "
                "teacher reads the response as its thinking", "omit_default": True})
    out: str | None = field(default=None, metadata={"help": "output path", "effect": "none"})
    overwrite: bool = field(default=False, metadata={
        "help": "start over instead of resuming an existing output", "effect": "none"})
    skip_long_prompts: bool = field(default=False, metadata={
        "help": "leave out (and name) problems whose prompt does not fit the model's context "
                "beside the new-token budget; by default such a prompt stops the run before "
                "anything is written", "effect": STAGE})

    def __post_init__(self) -> None:
        from dasd.models import parse_device

        parse_device(self.device)
        if self.limit is not None and self.limit < 1:
            raise DasdError(f"limit must be >= 1; got {self.limit}")
        if self.levels is not None and not self.levels:
            raise DasdError("levels is empty: give difficulty levels (e.g. 1,2) or leave it unset")
        if self.held_out is not None and (self.held_out < 1 or self.limit is None):
            raise DasdError(f"held_out must be >= 1 and needs a limit (the draw it holds "
                            f"problems out of); got held_out {self.held_out}, limit {self.limit}")
        self._check_dataset()

    def _check_dataset(self) -> None:
        """A dataset_config needs its dataset_name (which `Task.load` checks when it reads:
        a folder made later, e.g. by a config's own command, is fine here)."""
        name = self.dataset_name
        if self.dataset_config is not None and name is None:
            raise DasdError(f"dataset_config '{self.dataset_config}' needs dataset_name (the "
                            "data set it configures): set --dataset-name or unset it")


@dataclass
class DecodeStageConfig(ProblemConfig):
    """Settings shared by the stages that decode a task split: `generate` and `eval`."""

    max_new_tokens: int = field(default=256, metadata={
        "help": "response length limit; capped responses are counted in the summary"})
    batch_size: int = field(default=16, metadata={
        "help": "examples decoded together", "effect": "none"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise DasdError(f"{name} must be >= 1; got {getattr(self, name)}")
