"""`dasd run`: generate -> filter -> train -> evaluate for every method, then one table.

The untrained model ("origin") and every method are evaluated on the same held-out
problems. Each stage leaves a marker with a fingerprint of its settings and inputs: a
stage whose marker matches is reused, one whose settings or inputs changed runs again,
and an interrupted generation or evaluation resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dasd.analysis import frontier
from dasd.analysis.compare import CompareSettings, compare_models, default_pairs, problem_scores
from dasd.config import (
    ROWS,
    STAGE,
    ProblemConfig,
    build_settings,
    fingerprint,
    settings_dict,
    settings_flags,
    write_resolved_config,
)
from dasd.decoding.generate import GenerateConfig, generate
from dasd.errors import DasdError
from dasd.evaluation.evaluate import EvalConfig, evaluate
from dasd.memory import peak_memory, release_free_memory
from dasd.methods import DECODE, REFERENCE, Method, all_settings, get_method, methods
from dasd.models import parse_device
from dasd.records import check_writable, read_jsonl
from dasd.registry import did_you_mean
from dasd.training import TrainConfig, train
from dasd.training.onpolicy import METHODS as ONPOLICY_METHODS
from dasd.training.onpolicy.config import OnPolicyConfig
from dasd.training.onpolicy.trainer import train_onpolicy
from dasd.training.references import write_reference_rows
from dasd.training.sft import ADAPTER_FILE
from dasd.training.trl_args import CHECKPOINT

log = logging.getLogger(__name__)

ORIGIN = "origin"
# On-policy methods train on the generate section's problems (the same ones).
PROBLEM_KEYS = ("split", "data", "limit", "sample", "levels", "prompts",
                "chat_template_kwargs")


@dataclass
class RetentionTask:
    """A task every model of a run is also evaluated on, to see what training cost it
    (the paper's second claim: DASD preserves what the model knew)."""

    task: str = field(metadata={"help": "task name", "choices": "dasd.tasks:TASKS"})
    split: str = field(default="test", metadata={"help": "split to evaluate on"})
    data: str | None = field(default=None, metadata={
        "help": "local JSONL/Parquet file with the task's fields (instead of the hub)"})
    limit: int | None = field(default=None, metadata={
        "help": "use N problems (default: the whole split)"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "response length limit (default: the eval section's)"})

    @classmethod
    def from_string(cls, text: str) -> RetentionTask:
        return cls(task=text)

    def __post_init__(self) -> None:
        from dasd.tasks import TASKS

        if self.task not in TASKS:
            raise DasdError(f"retention: unknown task '{self.task}'; use one of "
                            f"{', '.join(TASKS)}{did_you_mean(self.task, TASKS)}")
        if self.limit is not None and self.limit < 1:
            raise DasdError(f"retention {self.task}: limit must be >= 1; got {self.limit}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise DasdError(f"retention {self.task}: max_new_tokens must be >= 1; got "
                            f"{self.max_new_tokens}")

    @property
    def key(self) -> str:
        """Its folder under `retention/`: the task, with the split unless it is test."""
        return self.task if self.split == "test" else f"{self.task}-{self.split}"


@dataclass
class MethodSpec:
    """One method of the comparison: a registry method (`dasd.methods`) with its own
    settings, given flat in the entry (`{name: dasd-k9, method: dasd, top_k: 9}`).

    Unset stage settings come from the run's sections. `data_from` trains on another
    method's rows (e.g. Mask-PPL on the sd rows); `generate` / `train` change this
    method's stage settings (max_new_tokens; filters and TRL arguments).
    """

    name: str = field(metadata={"help": "label in folders and tables, e.g. dasd-tau0.1"})
    method: str | None = field(default=None, metadata={
        "help": "a method of the registry (default: the name; with data_from: sft)"})
    data_from: str | None = field(default=None, metadata={
        "help": "train on the rows another (earlier) method generated, without decoding again"})
    levels: list[int] | None = field(default=None, metadata={
        "help": "train on these difficulty levels only (the paper's Figures 1 and 6)"})
    settings: dict = field(default_factory=dict, metadata={
        "help": "the method's own settings; usually given flat in the entry"})
    generate: dict = field(default_factory=dict, metadata={
        "help": "other generation settings of this method, e.g. {max_new_tokens: 512}"})
    train: dict = field(default_factory=dict, metadata={
        "help": "training settings of this method, e.g. {rejected: reference} or TRL's "
                "{learning_rate: 1e-4}"})

    @classmethod
    def from_string(cls, text: str) -> MethodSpec:
        return cls(name=text)

    @classmethod
    def extra_keys(cls) -> dict[str, str]:
        return dict.fromkeys(settings_flags(all_settings()), "settings")

    def __post_init__(self) -> None:
        if self.method is None:
            known = self.name in methods()
            self.method = self.name if known or self.data_from is None else "sft"
        if self.method == "sft":  # plain SFT on another method's rows
            if self.data_from is None:
                raise DasdError(f"method '{self.name}': sft trains on rows of another method: "
                                "set data_from")
        else:
            self._check_entry()
        where = f"method '{self.name}'"
        for section in ("generate", "train"):
            moved = set(getattr(self, section)) & set(settings_flags(all_settings()))
            if moved:
                raise DasdError(f"{where}: {', '.join(sorted(moved))} is a setting of the "
                                f"method: write it in the entry itself, e.g. "
                                f"{{name: {self.name}, {sorted(moved)[0]}: ...}}")
        self.settings = settings_dict(build_settings(self.entry.settings, self.settings, where))

    def _check_entry(self) -> None:
        entry = get_method(self.method)
        if entry.source == DECODE and self.data_from is not None:
            raise DasdError(f"method '{self.name}': {self.method} decodes its own rows; drop "
                            "data_from, or train on them with method sft, mask-ppl or profit")
        if entry.onpolicy and (self.data_from or self.generate):
            raise DasdError(f"method '{self.name}' ({self.method}) trains on its own rollouts: "
                            "remove data_from / generate; set its settings in the entry")

    @property
    def entry(self) -> Method:
        if self.method == "sft":
            from dasd.training.sft_methods import PlainSFT

            return Method("sft", REFERENCE, PlainSFT, "sft", "plain SFT")
        return get_method(self.method)

    @property
    def onpolicy(self) -> bool:
        return self.entry.onpolicy

    @property
    def decodes(self) -> bool:
        return self.data_from is None and self.entry.source == DECODE


def _section(base: type, keys_of: dict[str, type], where: str) -> type:
    """A run section of stage config `base` that refuses the methods' own settings (they
    belong in the method entries) and `method` (set per method)."""
    renamed = dict.fromkeys(settings_flags(keys_of), f"a method setting: write it in the "
                            f"method's entry, e.g. methods: [{{name: x, <key>: ...}}] ({where})")
    renamed["method"] = "each entry of methods names its method"
    renamed["settings"] = renamed["method"]
    namespace = {"RENAMED": {**getattr(base, "RENAMED", {}), **renamed}}
    if hasattr(base, "extra_keys"):
        method_keys = set(settings_flags(keys_of))
        namespace["extra_keys"] = classmethod(lambda cls: {
            k: v for k, v in base.extra_keys().items() if k not in method_keys})
        namespace["extra_key_help"] = classmethod(lambda cls: {
            k: v for k, v in base.extra_key_help().items() if k not in method_keys})
    return dataclass(type(base.__name__, (base,), namespace))


def _rules() -> dict[str, type]:
    from dasd.decoding.rules import RULES

    return RULES


def _sft_methods() -> dict[str, type]:
    from dasd.training.sft_methods import SFT_METHODS

    return SFT_METHODS


def _onpolicy_methods() -> dict[str, type]:
    from dasd.training.onpolicy import METHODS

    return {name: m.settings for name, m in METHODS.items()}


GenerateSection = _section(GenerateConfig, _rules(), "generate")
TrainSection = _section(TrainConfig, _sft_methods(), "train")
OnPolicySection = _section(OnPolicyConfig, _onpolicy_methods(), "onpolicy")


@dataclass
class RunConfig:
    name: str = field(default="demo", metadata={"help": "run name; outputs in runs/<name>"})
    out_dir: str | None = field(default=None, metadata={"help": "default: runs/<name>"})
    model: str = field(default="smollm2-135m", metadata={
        "help": "hub id, local model directory, .gguf file, or 'smollm2-135m'"})
    task: str = field(default="arith", metadata={
        "help": "task name", "choices": "dasd.tasks:TASKS"})
    seed: int = field(default=0, metadata={"help": "seed of data, LoRA init and shuffling"})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16, float16"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps"})
    origin: bool = field(default=True, metadata={"help": "also evaluate the untrained model"})
    analyze: bool = field(default=True, metadata={
        "help": "end with `dasd analyze` of the run folder (figures, report.html)"})
    generate_only: bool = field(default=False, metadata={
        "help": "only generate each method's rows (no training, no evaluation), e.g. a "
                "frontier sweep of decoding settings (configs/frontier-gsm8k.yaml)"})
    methods: list[MethodSpec] = field(
        default_factory=lambda: [MethodSpec("sd"), MethodSpec("dasd")],
        metadata={"help": "methods to compare, e.g. 'sd,dasd' or a YAML list of mappings"})
    generate: GenerateSection = field(default_factory=lambda: GenerateSection(limit=64),
                                      metadata={"help": "generation settings (model, task, "
                                                        "method and out are set per method)"})
    train: TrainSection = field(default_factory=TrainSection, metadata={
        "help": "training settings (model, data and out are set per method)"})
    onpolicy: OnPolicySection = field(default_factory=OnPolicySection, metadata={
        "help": "settings of the on-policy methods; their problems are the generate "
                "section's (split, data, limit, levels, prompts)"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={
        "help": "evaluation settings (model, adapter, task and out are set per method); "
                "the whole test split unless limit is set"})
    seeds: list[int] | None = field(default=None, metadata={
        "help": "training seeds, e.g. 0,1,2: every trained model is trained and evaluated "
                "once per seed (train/<name>/seed-<s>, eval/seed-<s>/); results give the "
                "mean, std and each seed's value, and the paired comparisons pool the seeds. "
                "Data generation and origin run once (`seed` draws the problems)"})
    retention: list[RetentionTask] = field(default_factory=list, metadata={
        "help": "other tasks origin and every trained model are also evaluated on, to "
                "measure forgetting, e.g. 'gsm8k,arc' or '[{task: arc, limit: 200}]'"})
    compare: list[list[str]] = field(default_factory=list, metadata={
        "help": "pairs of models to compare besides each against origin and sd, e.g. "
                "'[[dasd, dasd-g0.1]]'", "effect": "none"})
    comparison: CompareSettings = field(default_factory=CompareSettings, metadata={
        "help": "intervals and paired tests of the results (confidence, resamples, seed)",
        "effect": "none"})

    def __post_init__(self) -> None:
        if self.out_dir is None:
            self.out_dir = f"runs/{self.name}"
        parse_device(self.device)
        names = [m.name for m in self.methods]
        if ORIGIN in names or len(set(names)) != len(names):
            raise DasdError(f"method names must be unique and not '{ORIGIN}'; got {names}")
        self._check_compare([ORIGIN, *names])
        keys = [entry.key for entry in self.retention]
        if len(set(keys)) != len(keys):
            raise DasdError(f"retention: each task (and split) once; got {keys}")
        self._check_seeds()
        for i, spec in enumerate(self.methods):  # fail now on a bad setting, not mid-run
            earlier = names[:i]
            if spec.data_from is not None and spec.data_from not in earlier:
                raise DasdError(f"method '{spec.name}': data_from '{spec.data_from}' must name "
                                f"an earlier method ({', '.join(earlier) or 'none before it'})")
            if spec.onpolicy:
                self.onpolicy_config(spec)
                continue
            if spec.data_from is None:
                self.data_config(spec)
            self.train_config(spec, "data.jsonl")

    def _check_seeds(self) -> None:
        if self.seeds is None:
            return
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise DasdError(f"seeds: give distinct training seeds, e.g. 0,1,2; got {self.seeds}")
        onpolicy = [m.name for m in self.methods if m.onpolicy]
        if onpolicy:
            raise DasdError(f"seeds: on-policy methods ({', '.join(onpolicy)}) take one seed "
                            "for now (theirs also draws their problems); run them without "
                            "seeds, or set `seed` per run")

    def training_seeds(self) -> list[int | None]:
        """The seeds each trained model is trained with; [None]: the run's `seed`, in the
        folders of a run without `seeds`."""
        return list(self.seeds) if self.seeds is not None else [None]

    def _check_compare(self, names: list[str]) -> None:
        for pair in self.compare:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise DasdError(f"compare: each entry is a pair of two models, e.g. "
                                f"[dasd, sd]; got {pair}")
            for name in pair:
                if name not in names:
                    raise DasdError(f"compare: '{name}' is not a model of this run; use "
                                    f"{', '.join(names)}{did_you_mean(name, names)}")

    def data_config(self, spec: MethodSpec) -> GenerateConfig | ProblemConfig:
        """The data stage of a method that writes its own rows: its rule's generation, or
        the problems whose references it trains on."""
        changes = {"model": self.model, "task": self.task, "seed": self.seed,
                   "dtype": self.dtype, "device": self.device,
                   "out": str(Path(self.out_dir) / "generate" / f"{spec.name}.jsonl"),
                   **({"levels": spec.levels} if spec.levels is not None else {}),
                   **spec.generate}
        where = f"method '{spec.name}' generate"
        if spec.decodes:
            return _replace(self.generate, where, method=spec.method, settings=spec.settings,
                            **changes)
        problems = ProblemConfig(**{f.name: getattr(self.generate, f.name)
                                    for f in dataclasses.fields(ProblemConfig)})
        return _replace(problems, where, **changes)

    def data_path(self, spec: MethodSpec) -> str:
        """The rows `spec` trains on: its own, or those of the method it takes them from."""
        source = next((m for m in self.methods if m.name == spec.data_from), spec)
        return str(Path(self.out_dir) / "generate" / f"{source.name}.jsonl")

    def train_config(self, spec: MethodSpec, data: str, seed: int | None = None
                     ) -> TrainConfig:
        trainer = spec.entry.trainer
        return _replace(
            self.train, f"method '{spec.name}' train", model=self.model, data=[data],
            seed=self.seed if seed is None else seed, dtype=self.dtype, device=self.device,
            out=str(Path(self.out_dir) / "train" / spec.name / _seed_folder(seed)),
            method=trainer, settings=spec.settings if trainer != "sft" else {}, **spec.train)

    def onpolicy_config(self, spec: MethodSpec) -> OnPolicyConfig:
        problems = {key: getattr(self.generate, key) for key in PROBLEM_KEYS}
        if spec.levels is not None:
            problems["levels"] = spec.levels
        return _replace(
            self.onpolicy, f"method '{spec.name}' train", model=self.model, task=self.task,
            seed=self.seed, dtype=self.dtype, device=self.device, method=spec.method,
            settings=spec.settings, out=str(Path(self.out_dir) / "train" / spec.name),
            **{**problems, **spec.train})

    def eval_config(self, name: str, adapter: str | None, seed: int | None = None
                    ) -> EvalConfig:
        """The evaluation of model `name` (of training seed `seed`, when the run has
        `seeds`); its `seed` is the run's, which draws the test problems."""
        return dataclasses.replace(
            self.eval, model=self.model, task=self.task, seed=self.seed, dtype=self.dtype,
            device=self.device, adapter=adapter,
            out=str(Path(self.out_dir) / "eval" / _seed_folder(seed) / f"{name}.jsonl"))

    def retention_config(self, name: str, adapter: str | None, entry: RetentionTask,
                         seed: int | None = None) -> EvalConfig:
        """`eval_config` on a retention task: its own task, split, data and limit."""
        base = self.eval_config(name, adapter)
        return dataclasses.replace(
            base, task=entry.task, split=entry.split, data=entry.data, limit=entry.limit,
            levels=None, prompts=None,
            max_new_tokens=entry.max_new_tokens or base.max_new_tokens,
            out=str(Path(self.out_dir) / "retention" / entry.key / _seed_folder(seed)
                    / f"{name}.jsonl"))

    def problem_configs(self) -> dict[str, Any]:
        """The configs that select problems: "test" (every evaluation), then each method
        that reads a training split itself (its data stage, or its on-policy training)."""
        evaluates = not getattr(self, "generate_only", False)  # (a run may only generate)
        configs: dict[str, Any] = {TEST: self.eval_config(ORIGIN, None)} if evaluates else {}
        for spec in self.methods:
            if spec.onpolicy:
                configs[spec.name] = self.onpolicy_config(spec)
            elif spec.data_from is None:
                configs[spec.name] = self.data_config(spec)
        return configs


def _seed_folder(seed: int | None) -> str:
    """The folder of one training seed's outputs ("" without `seeds`)."""
    return "" if seed is None else f"seed-{seed}"


TEST = "test"
ALL = "all"
RETENTION = "retention:"  # selections of the retention tasks: "retention:<task key>"
# The settings that decide which problems a stage reads.
SELECTION_KEYS = ("task", "split", "data", "limit", "sample", "levels", "seed")


def select_problems(config: RunConfig) -> dict[str, Any]:
    """`dasd.tasks.ProblemSelection` of every entry of `problem_configs`; methods that read the
    same problems share one (the split is read once)."""
    from dasd.tasks import select_split

    seen: dict[str, Any] = {}
    selections = {}
    for name, stage_config in config.problem_configs().items():
        key = json.dumps([getattr(stage_config, k) for k in SELECTION_KEYS], default=str)
        if key not in seen:
            seen[key] = select_split(stage_config, evaluation=name == TEST)
        selections[name] = seen[key]
    if not config.generate_only:
        for entry in config.retention:
            selections[RETENTION + entry.key] = select_split(
                config.retention_config(ORIGIN, None, entry), evaluation=True)
    return selections


def problems_record(selections: dict[str, Any], ids: bool = False) -> dict[str, Any]:
    """What each stage reads, for config.yaml (`ids`: every problem's id) and results.json:
    the test problems, and the training problems with the methods that share them."""
    train: dict[str, dict[str, Any]] = {}
    for name, selection in selections.items():
        if name == TEST or name.startswith(RETENTION):
            continue
        record = selection.record(ids)
        entry = train.setdefault(record["ids_sha256"], {"methods": [], **record})
        entry["methods"].append(name)
    test = selections[TEST].record(ids) if TEST in selections else None
    retention = {name.removeprefix(RETENTION): selection.record(ids)
                 for name, selection in selections.items() if name.startswith(RETENTION)}
    return {"test": test, "train": list(train.values()),
            **({"retention": retention} if retention else {})}


def _replace(config: Any, where: str, **changes: Any) -> Any:
    """`dataclasses.replace` with TRL arguments and flat keys routed like a YAML mapping,
    and a one-line error naming an unknown key."""
    fields = {f.name for f in dataclasses.fields(config)}
    for key in changes:
        now = getattr(config, "RENAMED", {}).get(key)
        if now and key not in fields:
            raise DasdError(f"{where}: '{key}' is from an older dasd: {now}")
    extra = type(config).extra_keys() if hasattr(config, "extra_keys") else {}
    routed = {k: v for k, v in changes.items() if k in fields}
    for key, value in changes.items():
        if key in fields:
            continue
        if key not in extra:
            raise DasdError(f"{where}: unknown setting '{key}'{did_you_mean(key, fields)}")
        routed[extra[key]] = {**routed.get(extra[key], getattr(config, extra[key])),
                              key: value}
    return dataclasses.replace(config, **routed)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if any(CHECKPOINT.match(part) for part in file.relative_to(path).parts[:-1]):
            continue  # a finished adapter's checkpoints are not what evaluation reads
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _stage_keys(config: Any, inputs: list[str]) -> tuple[str, str]:
    """(fingerprint of the stage, fingerprint of its rows) with these inputs' digests."""
    digests = {p: _file_digest(Path(p)) for p in inputs}
    return fingerprint(config, STAGE, digests), fingerprint(config, ROWS, digests)


REUSE, RESUME, RUN = "reuse", "resume", "run"


def stage_status(marker: Path, config: Any, inputs: list[str]) -> str:
    """What `run_stage` will do, reading only: REUSE (the marker records these settings
    and inputs), RESUME (only the set of rows or the summary changed) or RUN (no marker,
    a missing input, or settings that change the rows)."""
    if not marker.is_file() or not all(Path(p).exists() for p in inputs):
        return RUN
    key, rows_key = _stage_keys(config, inputs)
    previous = json.loads(marker.read_text())
    if previous["fingerprint"] == key:
        return REUSE
    return RESUME if previous.get("rows") == rows_key else RUN


def run_stage(marker: Path, config: Any, inputs: list[str],
              stage: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run `stage(config)` unless `marker` says it already ran with these settings/inputs.

    A stage whose rows would change starts over; one where only the set of rows or the
    summary changed (a larger limit, pass_k) resumes."""
    key, rows_key = _stage_keys(config, inputs)
    previous = json.loads(marker.read_text()) if marker.is_file() else None
    if previous and previous["fingerprint"] == key:
        log.info("reusing %s", marker.parent / marker.stem.removeprefix(".stage-"))
        return {**previous["summary"], "reused": True}
    if previous and previous.get("rows") != rows_key:
        config = dataclasses.replace(config, overwrite=True)  # its rows change: start over
    start = time.perf_counter()
    with peak_memory() as memory:
        summary = stage(config)  # (only a summary setting changed: it resumes, decoding nothing)
    release_free_memory()  # the next stage starts from what is live, not from this peak
    summary["stage_seconds"] = time.perf_counter() - start
    summary["peak_rss_mb"] = memory["peak_rss_mb"]
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": key, "rows": rows_key, "summary": summary},
                                 default=str))
    return summary


def stage_marker(path: str, stage: str) -> Path:
    p = Path(path)
    return p.parent / f".stage-{stage}-{p.stem if p.suffix else p.name}.json"


def make_data(config: RunConfig, spec: MethodSpec, model, tokenizer) -> dict[str, Any] | None:
    """Write the method's training rows (decoded, or the original references); None when
    it trains on another method's rows."""
    if spec.data_from is not None:
        return None
    gen_config = config.data_config(spec)
    if not spec.decodes:
        def stage(c):
            return write_reference_rows(c, c.out, tokenizer, overwrite=True)
    else:
        def stage(c):
            return generate(c, model=model, tokenizer=tokenizer)
    return run_stage(stage_marker(gen_config.out, "generate"), gen_config, [], stage)


def evaluate_method(config: RunConfig, spec: MethodSpec, adapter: str,
                    seed: int | None = None) -> dict[str, Any]:
    eval_config = config.eval_config(spec.name, adapter, seed)
    return run_stage(stage_marker(eval_config.out, "eval"), eval_config, [adapter], evaluate)


def _retention(config: RunConfig, name: str, adapter: str | None, model=None,
               tokenizer=None, seed: int | None = None) -> dict[str, Any]:
    """{"retention": summaries} of a run with retention tasks, else nothing."""
    if not config.retention:
        return {}
    return {"retention": evaluate_retention(config, name, adapter, model, tokenizer, seed)}


def evaluate_retention(config: RunConfig, name: str, adapter: str | None, model=None,
                       tokenizer=None, seed: int | None = None) -> dict[str, Any]:
    """A model's evaluation on every retention task ({task key: summary}); the untrained
    model (`adapter` None) is the one already loaded."""
    def stage(c):
        return evaluate(c, model=model, tokenizer=tokenizer) if adapter is None else evaluate(c)

    summaries = {}
    for entry in config.retention:
        retention_config = config.retention_config(name, adapter, entry, seed)
        summaries[entry.key] = run_stage(stage_marker(retention_config.out, "eval"),
                                         retention_config, [adapter] if adapter else [], stage)
    return summaries


def run_onpolicy_method(config: RunConfig, spec: MethodSpec) -> dict[str, Any]:
    train_config = config.onpolicy_config(spec)
    train_summary = run_stage(stage_marker(train_config.out, "train"), train_config, [],
                              _fresh_or_resumed(train_onpolicy))  # loads its own copy
    result = {"train": train_summary, "eval": evaluate_method(config, spec, train_config.out)}
    return {**result, **_retention(config, spec.name, train_config.out)}


def _fresh_or_resumed(train_fn: Callable[[Any], dict[str, Any]]) -> Callable:
    """A training stage that `run_stage` did not reuse: resume an interrupted run's
    checkpoints, start over where a finished adapter of other settings is in the way."""
    def stage(config):
        if (Path(config.out) / ADAPTER_FILE).exists():
            config = dataclasses.replace(config, overwrite=True)
        return train_fn(config)
    return stage


def run_method(config: RunConfig, spec: MethodSpec, model, tokenizer) -> dict[str, Any]:
    if spec.onpolicy:
        return {} if config.generate_only else run_onpolicy_method(config, spec)
    gen = make_data(config, spec, model, tokenizer)
    result: dict[str, Any] = {"generate": gen} if gen else {"data_from": spec.data_from}
    if config.generate_only:
        return result
    data = config.data_path(spec)
    train_config = config.train_config(spec, data)
    if gen is not None and train_config.rejected == "drop":
        usable = gen["kept"] if train_config.only_correct else gen["samples"]
        if usable == 0:
            log.warning("%s: no correct samples to train on; skipping train and eval",
                        spec.name)
            return result
    per_seed = {}
    for seed in config.training_seeds():
        train_config = config.train_config(spec, data, seed)
        trained = {"train": run_stage(stage_marker(train_config.out, "train"), train_config,
                                      [data], _fresh_or_resumed(train)),  # its own copy
                   "eval": evaluate_method(config, spec, train_config.out, seed),
                   **_retention(config, spec.name, train_config.out, seed=seed)}
        per_seed[seed] = trained
    if config.seeds is None:
        return {**result, **per_seed[None]}
    pooled = pool_seeds(per_seed)
    summary = Path(config.eval_config(spec.name, None).out).with_suffix(".summary.json")
    summary.write_text(json.dumps(pooled["eval"], indent=2, default=str))  # for the analysis
    return {**result, **pooled, "seeds": {str(k): v for k, v in per_seed.items()}}


def pool_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One model's summaries over its training seeds: accuracy as the mean over seeds with
    their standard deviation and each seed's value (overall and per level); times summed;
    the peak memory the largest."""
    def pooled(summaries: list[dict[str, Any]]) -> dict[str, Any]:
        accuracy = [s["accuracy"] for s in summaries]
        levels = summaries[0].get("per_level", {})
        return {**summaries[0], **_mean_std(accuracy), "accuracy_per_seed": accuracy,
                "correct": None, **_stage_costs(summaries),
                "per_level": {lvl: {**summaries[0]["per_level"][lvl], "correct": None,
                                    **_mean_std([s["per_level"][lvl]["accuracy"]
                                                 for s in summaries])} for lvl in levels}}

    runs = list(per_seed.values())
    train = [r["train"] for r in runs]
    result = {"train": {**train[0], **_stage_costs(train)},
              "eval": pooled([r["eval"] for r in runs])}
    if "retention" in runs[0]:
        result["retention"] = {key: pooled([r["retention"][key] for r in runs])
                               for key in runs[0]["retention"]}
    return result


def _stage_costs(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the seeds' runs of one stage cost together: time summed, the largest peak,
    reused only when every seed's was."""
    return {"stage_seconds": sum(s.get("stage_seconds", 0.0) for s in summaries),
            "peak_rss_mb": max(s.get("peak_rss_mb") or 0.0 for s in summaries),
            "reused": all(s.get("reused") for s in summaries)}


def _mean_std(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 \
        if len(values) > 1 else 0.0
    return {"accuracy": mean, "accuracy_std": spread}


def run(config: RunConfig) -> dict[str, Any]:
    """Run the whole comparison; write results.json and results.md in the run folder."""
    from dasd.models import load_model

    root = Path(config.out_dir)
    selections = select_problems(config)  # a missing data file stops here, before the model
    check_writable(root, is_dir=True, flag="out_dir")
    start = time.perf_counter()
    with peak_memory() as load_memory:
        model, tokenizer = load_model(config.model, config.dtype, config.device)
    root.mkdir(parents=True, exist_ok=True)  # only once the model loads: nothing half-made
    write_resolved_config(config, root / "config.yaml")
    with (root / "config.yaml").open("a") as fh:  # the problems drawn, id by id
        fh.write(yaml.safe_dump({"problems": problems_record(selections, ids=True)},
                                sort_keys=False))
    log.info("run folder: %s", root)
    results: dict[str, Any] = {}
    if config.origin and not config.generate_only:
        eval_config = config.eval_config(ORIGIN, None)
        results[ORIGIN] = {"eval": run_stage(
            stage_marker(eval_config.out, "eval"), eval_config, [],
            lambda c: evaluate(c, model=model, tokenizer=tokenizer)),
            **_retention(config, ORIGIN, None, model, tokenizer)}
    for spec in config.methods:
        results[spec.name] = run_method(config, spec, model, tokenizer)
    report = {"name": config.name, "model": config.model, "task": config.task,
              "total_seconds": time.perf_counter() - start,
              "load_peak_rss_mb": load_memory["peak_rss_mb"],
              "problems": problems_record(selections), "methods": results,
              "comparison": compare_run(config, results),
              "retention": retention_run(config, results),
              "distance_from_sd": distance_from_sd(config, results)}
    (root / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (root / "results.md").write_text(results_markdown(report))
    if config.analyze:
        from dasd.analysis import AnalyzeConfig, analyze

        with peak_memory() as memory:
            report["analysis"] = analyze(AnalyzeConfig(path=str(root)))["report"]
        report["analysis_peak_rss_mb"] = memory["peak_rss_mb"]
        (root / "results.json").write_text(json.dumps(report, indent=2, default=str))
        log.info("analysis report: %s", report["analysis"])
    return report


def compare_run(config: RunConfig, results: dict[str, Any]) -> dict[str, Any]:
    """Accuracy intervals of every evaluated model and the paired comparisons (each model
    against origin and sd, and the config's `compare` pairs), from the eval rows."""
    scores = {}
    for name, result in results.items():
        rows = _seed_rows(config, name, lambda seed, n=name: config.eval_config(n, None, seed))
        if result.get("eval") and rows:
            scores[name] = problem_scores(rows)
    return compare_models(scores, default_pairs(list(scores), config.compare),
                          config.comparison)


def _seed_rows(config: RunConfig, name: str, stage_config: Callable[[int | None], Any]
               ) -> list[dict[str, Any]]:
    """A model's eval rows over its training seeds (origin has one run): the comparisons
    pool them, a problem's score being its mean over seeds."""
    seeds = [None] if name == ORIGIN else config.training_seeds()
    paths = [Path(stage_config(seed).out) for seed in seeds]
    return [row for path in paths if path.is_file() for row in read_jsonl(path)]


def retention_run(config: RunConfig, results: dict[str, Any]) -> dict[str, Any]:
    """Per retention task: every trained model against origin, problem by problem (the
    problems each got right only after training, and only before it)."""
    report = {}
    for entry in config.retention:
        scores = {}
        for name, result in results.items():
            rows = _seed_rows(config, name, lambda seed, n=name, e=entry:
                              config.retention_config(n, None, e, seed))
            if (result.get("retention") or {}).get(entry.key) and rows:
                scores[name] = problem_scores(rows)
        pairs = [(name, ORIGIN) for name in scores if name != ORIGIN]
        report[entry.key] = compare_models(scores, pairs, config.comparison)
    return report


def distance_from_sd(config: RunConfig, results: dict[str, Any]) -> dict[str, Any]:
    """Per decoding method: the share of its rows token for token sd's, and of its tokens
    that are not the reference top-1 (where sd would have written another token)."""
    decoded = {spec.name: read_jsonl(config.data_path(spec)) for spec in config.methods
               if spec.decodes and results.get(spec.name, {}).get("generate")
               and Path(config.data_path(spec)).is_file()}
    sd_rows = frontier.distance_from(decoded, frontier.SD)
    return {name: {"same_as_sd_percent": frontier.identical_rows_percent(rows, sd_rows)
                   if sd_rows is not None else None,
                   "departed_tokens_percent": frontier.departed_tokens_percent(rows)}
            for name, rows in decoded.items()}


def _levels(report: dict[str, Any]) -> list[str]:
    """Difficulty levels of the table's columns; none for a task without levels (MBPP)."""
    levels = {lvl for r in report["methods"].values() for lvl in r.get("eval", {}).get(
        "per_level", {})}
    if levels <= {"none"}:
        return []
    return sorted(levels, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0))


TABLE_LEGEND = ("Accuracy on the held-out split (with `seeds`: the mean over training seeds "
                "± their standard deviation; number of problems in parentheses; "
                "'100 of 500': on a subset of the split, cut by eval.limit or eval.levels), "
                "overall and per difficulty level (L1..; with eval.samples n > 1 accuracy is "
                "Avg@n, the mean over n sampled answers, and pass@k is beside it; math-verify: "
                "the same answers scored by math-verify alone, as other harnesses do); "
                "correct/total: correctly answered generated samples; trained on: the rows "
                "training used (all rows with train.only_correct false); high-PPL %: share of "
                "the correct samples' tokens with base-model perplexity > 2.5; rows = sd: share "
                "of the method's rows token for token sd's (100: sd under another name), tokens "
                "off sd: share of its tokens that are not the reference top-1, where sd would "
                "have written another; stage wall times "
                "in seconds; peak MB: each stage's peak resident memory (the whole process).")


COMPARISON_LEGEND = ("Every model answered the same problems, so pairs are compared problem "
                     "by problem: the accuracy difference (a - b, in points) with a paired "
                     "bootstrap interval (problems resampled, seeded), the problems each model "
                     "alone got right, and the exact two-sided McNemar p-value on those "
                     "discordant problems (with eval.samples n > 1: the exact sign test on "
                     "per-problem accuracies). An interval that covers 0 means the two cannot "
                     "be told apart on these problems. Accuracy intervals: Wilson.")


RETENTION_LEGEND = ("Retention: origin and every trained model on tasks they were not "
                    "trained on (`retention:`), problem by problem: right->wrong = problems "
                    "the untrained model answered and the trained one no longer does "
                    "(forgetting), wrong->right the reverse (with `seeds`: problems whose "
                    "score, the mean over seeds, fell or rose); the interval and p as in the "
                    "paired comparisons.")


def results_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The results table as header + rows of strings (shared by terminal and Markdown)."""
    levels = _levels(report)
    sampled = any("pass@k" in r.get("eval", {}) for r in report["methods"].values())
    checkers = sorted({name for r in report["methods"].values()
                       for name in r.get("eval", {}).get("other_checks", {})})
    header = (["method", "accuracy (n)"] + ["pass@k"] * sampled
              + [name.replace("_", "-") for name in checkers] + [f"L{lvl}" for lvl in levels]
              + ["correct/total", "trained on", "high-PPL %", "rows = sd / tokens off sd %",
                 "gen s", "train s", "eval s", "train tok/s", "peak MB gen/train/eval"])
    rows = []
    for name, result in report["methods"].items():
        gen, tr, ev = result.get("generate"), result.get("train"), result.get("eval")
        interval = report.get("comparison", {}).get("accuracy", {}).get(name, {}).get(ALL)
        ci = (f" [{interval['ci_low']:.3f}, {interval['ci_high']:.3f}]"
              if interval and interval.get("ci_low") is not None else "")
        spread = f" ± {ev['accuracy_std']:.3f}" if ev and "accuracy_std" in ev else ""
        seeds = f", {len(ev['accuracy_per_seed'])} seeds" if spread else ""
        acc = [f"{ev['accuracy']:.3f}{spread}{ci} ({_problems(ev)}{seeds})"] if ev else ["-"]
        if sampled:
            acc.append(f"{ev['pass@k']:.3f}" if ev and "pass@k" in ev else "-")
        others = (ev or {}).get("other_checks", {})
        acc += [f"{others[name]['accuracy']:.3f}" if name in others else "-" for name in checkers]
        per_level = [f"{ev['per_level'][lvl]['accuracy']:.2f}"
                     if ev and lvl in ev["per_level"] else "-" for lvl in levels]
        high_ppl = (gen or {}).get("high_ppl_percent_kept")
        rows.append([name, *acc, *per_level, _correct_column(result), _trained_column(result),
                     f"{high_ppl:.2f}" if high_ppl is not None else "-",
                     _distance_column(report.get("distance_from_sd", {}).get(name)),
                     _seconds(gen), _seconds(tr), _seconds(ev),
                     f"{tr['tokens_per_second']:.1f}" if tr and tr.get("tokens_per_second")
                     else "-", "/".join(_peak(s) for s in (gen, tr, ev))])
    return header, rows


def comparison_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The paired comparisons over all levels as header + rows of strings (per level:
    results.json and the analysis report)."""
    comparison = report.get("comparison") or {}
    level = f"{100 * comparison.get('confidence', 0.95):g}% interval"
    header = ["comparison", "difference (points)", level, "problems a/b better",
              "p (exact)", "conclusion"]
    rows = []
    for c in comparison.get("comparisons", []):
        if c["level"] == ALL:
            difference, interval, p, verdict = _difference(c)
            rows.append([f"{c['a']} - {c['b']}", difference, interval,
                         f"{c['a_better']}/{c['b_better']}", p, verdict])
    return header, rows


def _difference(c: dict[str, Any]) -> list[str]:
    """A paired comparison's difference (points), its interval, p and conclusion."""
    return [f"{100 * c['difference']:+.1f}",
            f"[{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]", f"{c['p_value']:.3g}",
            c["verdict"]]


def retention_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The retention table: per task and trained model, accuracy before (origin) and after
    training, the difference with its interval, the problems lost and gained, p."""
    header = ["task", "model", "origin", "after", "difference (points)", "interval",
              "right->wrong", "wrong->right", "p (exact)", "conclusion"]
    rows = []
    for task, comparison in (report.get("retention") or {}).items():
        for c in comparison.get("comparisons", []):
            if c["level"] != ALL:
                continue
            difference, interval, p, verdict = _difference(c)
            rows.append([task, c["a"], f"{c['accuracy_b']:.3f}", f"{c['accuracy_a']:.3f}",
                         difference, interval, str(c["b_better"]), str(c["a_better"]), p,
                         verdict])
    return header, rows


def _problems(summary: dict[str, Any]) -> str:
    """"500", or "100 of 500" when the evaluation used a subset of the split."""
    drawn = summary.get("problems") or {}
    return f"{summary['n']} of {drawn['of']}" if drawn.get("subset") else str(summary["n"])


def _correct_column(result: dict[str, Any]) -> str:
    """Correctly answered / all generated samples (the rows of another method: its name)."""
    if result.get("data_from"):
        return f"rows of {result['data_from']}"
    gen = result.get("generate")
    return f"{gen['kept']}/{gen['samples']}" if gen else "-"


def _trained_column(result: dict[str, Any]) -> str:
    """The rows training used, whatever the filter (`train.only_correct`) kept."""
    train = result.get("train")
    if train and train.get("method") in ONPOLICY_METHODS:
        return "on-policy rollouts"
    if train and isinstance(train.get("rows"), dict):
        rows = train["rows"]
        replaced = sum((rows.get("replaced_by_reference") or {}).values())
        return f"{rows['used']}" + (f" ({replaced} references)" if replaced else "")
    return "0 (skipped)" if result.get("generate") and not train else "-"


def _distance_column(distance: dict[str, Any] | None) -> str:
    """"91.2 / 3.4": rows token for token sd's, tokens that are not the reference top-1."""
    if not distance:
        return "-"
    same, off = distance["same_as_sd_percent"], distance["departed_tokens_percent"]
    return " / ".join("-" if v is None else f"{v:.1f}" for v in (same, off))


def _peak(summary: dict[str, Any] | None) -> str:
    """A stage's peak resident memory in MB ("-": not run, or run by an older dasd)."""
    peak = (summary or {}).get("peak_rss_mb")
    return "-" if peak is None else f"{peak:.0f}"


def run_peak_mb(report: dict[str, Any]) -> float | None:
    """The run's peak resident memory: the largest of its stages', model load's and
    analysis'."""
    peaks = [report.get("load_peak_rss_mb"), report.get("analysis_peak_rss_mb")] + [
        (result.get(stage) or {}).get("peak_rss_mb") for result in report["methods"].values()
        for stage in ("generate", "train", "eval")] + [
        summary.get("peak_rss_mb") for result in report["methods"].values()
        for summary in (result.get("retention") or {}).values()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def _seconds(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    seconds = f"{summary.get('stage_seconds', 0):.0f}"
    return f"{seconds} (reused)" if summary.get("reused") else seconds


def results_markdown(report: dict[str, Any]) -> str:
    header, rows = results_rows(report)
    lines = [f"# {report['name']}: {report['model']} on {report['task']}", "",
             *_markdown_table(header, rows)]
    for title, (header, rows), legend in (
            ("Paired comparisons", comparison_rows(report), COMPARISON_LEGEND),
            ("Retention: what training cost on other tasks", retention_rows(report),
             RETENTION_LEGEND)):
        if rows:
            lines += ["", f"## {title}", "", *_markdown_table(header, rows), "", legend]
    peak = run_peak_mb(report)
    memory = f"; peak resident memory {peak:.0f} MB" if peak is not None else ""
    lines += ["", f"Total wall time: {report['total_seconds']:.0f} s{memory}. " + TABLE_LEGEND]
    return "\n".join(lines) + "\n"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows]]
