"""The config of `dasd run`: a comparison of methods on one model and task (`RunConfig`),
each method's entry (`MethodSpec`), the retention tasks, and each stage's own config
derived from them; the problems every stage reads (`select_problems`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dasd.analysis.compare import ORIGIN, CompareSettings
from dasd.config import ProblemConfig, build_settings, settings_dict, settings_flags
from dasd.decoding.generate import GenerateConfig
from dasd.errors import DasdError
from dasd.evaluation.evaluate import EvalConfig
from dasd.methods import DECODE, REFERENCE, Method, all_settings, get_method, methods
from dasd.models import parse_device
from dasd.registry import did_you_mean
from dasd.training import TrainConfig
from dasd.training.onpolicy.config import OnPolicyConfig

# On-policy methods train on the generate section's problems (the same ones).
PROBLEM_KEYS = ("split", "data", "columns", "dataset_name", "dataset_config",
                "limit", "sample", "levels", "prompts",
                "chat_template_kwargs", "base_chat_template_kwargs",
                "reference_chat_template_kwargs", "thinking_block")


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
class Validation:
    """Choosing a checkpoint on training problems that training did not use, never on the
    test split."""

    problems: int = field(default=0, metadata={
        "help": "held-out training problems on which every checkpoint of every trained "
                "model is evaluated (a seeded draw disjoint from its training problems, "
                "recorded); the run reports test accuracy of the final model and of the "
                "checkpoint chosen on them; training keeps all its checkpoints (save_steps). "
                "0: off"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "response length limit (default: the eval section's)"})

    def __post_init__(self) -> None:
        if self.problems < 0:
            raise DasdError(f"validation.problems must be >= 0 (0: off); got {self.problems}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise DasdError(f"validation.max_new_tokens must be >= 1; got "
                            f"{self.max_new_tokens}")


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

    @property
    def samples(self) -> bool:
        """Whether its rule samples: its rows depend on a seed (dasd-sample, hint)."""
        return self.decodes and "seed" in {f.name for f in dataclasses.fields(
            self.entry.settings)}


HELD_OUT = ("a run holds problems out itself: set validation.problems for a validation draw "
            "disjoint from the training problems")


def _section(base: type, keys_of: dict[str, type], where: str) -> type:
    """A run section of stage config `base` that refuses the methods' own settings (they
    belong in the method entries) and `method` (set per method)."""
    renamed = dict.fromkeys(settings_flags(keys_of), f"a method setting: write it in the "
                            f"method's entry, e.g. methods: [{{name: x, <key>: ...}}] ({where})")
    renamed["method"] = "each entry of methods names its method"
    renamed["settings"] = renamed["method"]
    refused = {"checker": "set checker at the top of the run config, beside task",
               "held_out": HELD_OUT}
    namespace = {"RENAMED": {**getattr(base, "RENAMED", {}), **renamed}, "REFUSED": refused}
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
    checker: str | None = field(default=None, metadata={
        "help": "how task custom checks answers, in every stage (generate, train, eval)",
        "choices": "dasd.tasks.custom:CHECKERS", "omit_default": True})
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
    validation: Validation = field(default_factory=Validation, metadata={
        "help": "checkpoint choice on held-out training problems, e.g. '{problems: 50}'"})
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
        self._check_validation()
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

    def _check_validation(self) -> None:
        if self.eval.held_out is not None:
            raise DasdError(f"config key 'eval.held_out': {HELD_OUT}")
        if not self.validation.problems:
            return
        if self.generate_only:
            raise DasdError("validation chooses among training checkpoints: a generate_only "
                            "run trains nothing; unset validation or generate_only")
        for spec in self.methods:
            problems = self.training_problems(spec)
            if problems.limit is None:
                raise DasdError(f"validation: method '{spec.name}' trains on the whole "
                                f"{problems.task}/{problems.split} split (no limit), so no "
                                "problem is left to validate on; set generate.limit")

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

    def data_config(self, spec: MethodSpec, seed: int | None = None
                    ) -> GenerateConfig | ProblemConfig:
        """The data stage of a method that writes its own rows: its rule's generation, or
        the problems whose references it trains on. A sampling rule in a run with `seeds`
        samples once per training seed (`seed`; the run's `seed` still draws the
        problems)."""
        changes = {"model": self.model, "task": self.task, "checker": self.checker,
                   "seed": self.seed, "dtype": self.dtype, "device": self.device,
                   "out": str(Path(self.out_dir) / "generate" / _seed_folder(seed)
                              / f"{spec.name}.jsonl"),
                   **({"sample_seed": seed} if seed is not None and spec.decodes else {}),
                   **({"levels": spec.levels} if spec.levels is not None else {}),
                   **spec.generate}
        where = f"method '{spec.name}' generate"
        if spec.decodes:
            return _replace(self.generate, where, method=spec.method, settings=spec.settings,
                            **changes)
        problems = ProblemConfig(**{f.name: getattr(self.generate, f.name)
                                    for f in dataclasses.fields(ProblemConfig)})
        return _replace(problems, where, **changes)

    def data_seed(self, spec: MethodSpec, seed: int | None) -> int | None:
        """The seed of the rows `spec` trains on for training seed `seed`: the seed itself
        when they are sampled (by its rule or the one it takes rows from), else None."""
        source = next((m for m in self.methods if m.name == spec.data_from), spec)
        return seed if source.samples and self.seeds is not None else None

    def data_path(self, spec: MethodSpec, seed: int | None = None) -> str:
        """The rows `spec` trains on: its own, or those of the method it takes them from
        (for training seed `seed`: its own draw when they are sampled)."""
        source = next((m for m in self.methods if m.name == spec.data_from), spec)
        return str(Path(self.out_dir) / "generate" / _seed_folder(self.data_seed(spec, seed))
                   / f"{source.name}.jsonl")

    def train_config(self, spec: MethodSpec, data: str, seed: int | None = None
                     ) -> TrainConfig:
        trainer = spec.entry.trainer
        return _replace(
            self.train, f"method '{spec.name}' train", model=self.model, data=[data],
            seed=self.seed if seed is None else seed, dtype=self.dtype, device=self.device,
            out=str(Path(self.out_dir) / "train" / spec.name / _seed_folder(seed)),
            method=trainer, settings=spec.settings if trainer != "sft" else {},
            **self._checkpoints(), **spec.train)

    def _checkpoints(self) -> dict[str, Any]:
        """With validation, training keeps every checkpoint it saves (TRL: save_total_limit
        None, whatever the config says; `save_steps` says how often it saves)."""
        return {"save_total_limit": None} if self.validation.problems else {}

    def training_problems(self, spec: MethodSpec) -> ProblemConfig:
        """The config that draws the problems `spec` trains on (its own data stage, the one
        of the method it takes rows from, or its on-policy training)."""
        source = next((m for m in self.methods if m.name == spec.data_from), spec)
        return self.onpolicy_config(source) if source.onpolicy else self.data_config(source)

    def validation_config(self, spec: MethodSpec, adapter: str | None,
                          seed: int | None = None) -> EvalConfig:
        """The evaluation of `spec`'s final adapter on `validation.problems` problems of its
        training split that its training draw left out (the run's seed draws them, so every
        training seed is validated on the same problems); its checkpoints are evaluated
        beside it (`dasd.stages`)."""
        problems = self.training_problems(spec)
        base = self.eval_config(spec.name, adapter, seed)
        return dataclasses.replace(
            base, task=problems.task, split=problems.split, data=problems.data,
            columns=problems.columns, dataset_name=problems.dataset_name,
            dataset_config=problems.dataset_config, checker=problems.checker,
            limit=problems.limit, sample=problems.sample, levels=problems.levels,
            held_out=self.validation.problems,
            max_new_tokens=self.validation.max_new_tokens or base.max_new_tokens,
            out=str(Path(self.out_dir) / "validation" / _seed_folder(seed) / spec.name
                    / "final.jsonl"))

    def onpolicy_config(self, spec: MethodSpec) -> OnPolicyConfig:
        problems = {key: getattr(self.generate, key) for key in PROBLEM_KEYS}
        if spec.levels is not None:
            problems["levels"] = spec.levels
        return _replace(
            self.onpolicy, f"method '{spec.name}' train", model=self.model, task=self.task,
            checker=self.checker,
            seed=self.seed, dtype=self.dtype, device=self.device, method=spec.method,
            settings=spec.settings, out=str(Path(self.out_dir) / "train" / spec.name),
            **{**problems, **self._checkpoints(), **spec.train})

    def eval_config(self, name: str, adapter: str | None, seed: int | None = None
                    ) -> EvalConfig:
        """The evaluation of model `name` (of training seed `seed`, when the run has
        `seeds`); its `seed` is the run's, which draws the test problems. A sampled
        evaluation of a training seed's model draws its own samples (`sample_seed` offset
        by the seed)."""
        sampling = ({"sample_seed": self.eval.sample_seed + seed}
                    if seed is not None and self.eval.sampling else {})
        return dataclasses.replace(
            self.eval, model=self.model, task=self.task, checker=self.checker, seed=self.seed,
            dtype=self.dtype,
            device=self.device, adapter=adapter, **sampling,
            out=str(Path(self.out_dir) / "eval" / _seed_folder(seed) / f"{name}.jsonl"))

    def retention_config(self, name: str, adapter: str | None, entry: RetentionTask,
                         seed: int | None = None) -> EvalConfig:
        """`eval_config` on a retention task: its own task, split, data and limit."""
        base = self.eval_config(name, adapter)
        return dataclasses.replace(
            base, task=entry.task, split=entry.split, data=entry.data, limit=entry.limit,
            levels=None, prompts=None, columns={}, dataset_name=None, dataset_config=None,
            checker=None,
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
RETENTION = "retention:"  # selections of the retention tasks: "retention:<task key>"
VALIDATION = "validation:"  # held-out training problems of a method: "validation:<name>"
# The settings that decide which problems a stage reads.
SELECTION_KEYS = ("task", "split", "data", "columns", "dataset_name", "dataset_config",
                  "checker", "limit", "sample", "levels", "seed", "held_out")


def select_problems(config: RunConfig) -> dict[str, Any]:
    """`dasd.tasks.ProblemSelection` of every entry of `problem_configs`; methods that read the
    same problems share one (the split is read once)."""
    from dasd.tasks import select_split

    seen: dict[str, Any] = {}
    selections = {}
    configs = config.problem_configs()
    if config.validation.problems:
        configs.update({VALIDATION + spec.name: config.validation_config(spec, None)
                        for spec in config.methods})
    for name, stage_config in configs.items():
        key = json.dumps([getattr(stage_config, k, None) for k in SELECTION_KEYS], default=str)
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
    the test problems, the training problems (and the held-out validation problems) with
    the methods that share them."""
    shared: dict[str, dict[str, dict[str, Any]]] = {"train": {}, "validation": {}}
    for name, selection in selections.items():
        if name == TEST or name.startswith(RETENTION):
            continue
        kind = "validation" if name.startswith(VALIDATION) else "train"
        record = selection.record(ids)
        entry = shared[kind].setdefault(record["ids_sha256"], {"methods": [], **record})
        entry["methods"].append(name.removeprefix(VALIDATION))
    test = selections[TEST].record(ids) if TEST in selections else None
    retention = {name.removeprefix(RETENTION): selection.record(ids)
                 for name, selection in selections.items() if name.startswith(RETENTION)}
    return {"test": test, "train": list(shared["train"].values()),
            **({"validation": list(shared["validation"].values())}
               if shared["validation"] else {}),
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
