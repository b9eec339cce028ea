"""The stages of a run, built once: `dasd run` executes this list (`dasd.run`) and
`dasd run --plan` reports it (`dasd.plan`), so the two cannot drift apart.

A stage is one step of one model: a method's data (`generate`, or the `references`), its
training, its evaluation on the test split and on each retention task, and, with
`validation`, the evaluation of every checkpoint on held-out training problems
(`validate`) and of the checkpoint chosen there on the test split (`eval chosen`).
Each stage has its config, the input files it reads, the stage before it whose output it
reads, the marker it leaves, and the function that runs it. A marker holds a fingerprint
of the stage's settings and inputs: a stage whose marker matches is reused, one where only
the set of rows or the summary changed resumes, any other runs again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dasd.analysis.compare import ORIGIN
from dasd.config import ROWS, STAGE, fingerprint
from dasd.decoding.generate import generate
from dasd.evaluation.evaluate import evaluate
from dasd.memory import peak_memory, release_free_memory
from dasd.run_config import RETENTION, TEST, VALIDATION, MethodSpec, RetentionTask, RunConfig
from dasd.training import TrainConfig, train
from dasd.training.onpolicy.trainer import train_onpolicy
from dasd.training.references import write_reference_rows
from dasd.training.sft import ADAPTER_FILE
from dasd.training.trl_args import CHECKPOINT, checkpoints

log = logging.getLogger(__name__)

GENERATE, REFERENCES, TRAIN, EVAL = "generate", "references", "train", "eval"
VALIDATE, CHOSEN = "validate", "eval chosen"
CHOICE_FILE = "choice.json"  # beside the validation rows: every checkpoint's score, the pick
REUSE, RESUME, RUN = "reuse", "resume", "run"

# work(stage config, the run's loaded model, its tokenizer) -> the stage's summary
Work = Callable[[Any, Any, Any], dict[str, Any]]


@dataclass(eq=False)
class Stage:
    """One step of one model of a run."""

    model: str                   # origin, or the method's name in the run
    kind: str                    # generate, references, train, eval, retention
    config: Any                  # the stage's own config (GenerateConfig, TrainConfig, ...)
    work: Work
    problems: str | None         # the selection it reads (`select_problems`), if any
    inputs: list[str] = field(default_factory=list)  # files it reads, in its fingerprint
    upstream: Stage | None = None  # the stage whose output it reads
    seed: int | None = None      # its training seed, in a run with `seeds`
    retention: RetentionTask | None = None

    @property
    def name(self) -> str:
        """generate, references, train, eval or `retention <task>`."""
        return f"retention {self.retention.key}" if self.retention else self.kind

    @property
    def label(self) -> str:
        """The model as the run names it, with its seed in a run with `seeds`."""
        return self.model if self.seed is None else f"{self.model} seed {self.seed}"

    @property
    def marker(self) -> Path:
        marker_kind = {REFERENCES: GENERATE, "retention": EVAL, CHOSEN: EVAL}.get(self.kind,
                                                                                self.kind)
        return stage_marker(self.config.out, marker_kind)

    def status(self) -> str:
        """What `execute` will do, reading only (REUSE, RESUME or RUN)."""
        return stage_status(self.marker, self.config, self.inputs)

    def execute(self, model: Any, tokenizer: Any) -> dict[str, Any]:
        return run_stage(self.marker, self.config, self.inputs,
                         lambda config: self.work(config, model, tokenizer))


def build_stages(config: RunConfig) -> list[Stage]:
    """Every stage of `dasd run`, in the order it runs them: origin's evaluations, then
    each method's data, training and evaluations (per training seed)."""
    stages: list[Stage] = []
    if config.origin and not config.generate_only:
        stages += _evaluations(config, ORIGIN, None, None, None)
    for spec in config.methods:
        stages += _method_stages(config, spec, stages)
    return stages


def _method_stages(config: RunConfig, spec: MethodSpec, earlier: list[Stage]) -> list[Stage]:
    if spec.onpolicy:
        if config.generate_only:
            return []
        train_config = config.onpolicy_config(spec)
        trained = Stage(spec.name, TRAIN, train_config, _fresh_or_resumed(train_onpolicy),
                        spec.name)  # it loads its own copy of the model
        return [trained, *_evaluations(config, spec.name, train_config.out, trained, None),
                *_choice(config, spec, train_config.out, trained, None)]
    stages: list[Stage] = []
    for seed in config.training_seeds():  # each seed trains and evaluates its own model
        data_seed = config.data_seed(spec, seed)  # sampled rows: a draw per seed
        data = next((s for s in stages if s.kind in (GENERATE, REFERENCES)
                     and s.seed == data_seed), None) or _data_stage(config, spec, earlier,
                                                                   data_seed)
        if data.model == spec.name and data not in stages:
            stages.append(data)
        if config.generate_only:
            continue
        path = config.data_path(spec, seed)
        train_config = config.train_config(spec, path, seed)
        trained = Stage(spec.name, TRAIN, train_config, _fresh_or_resumed(train), None,
                        [path], data, seed)
        stages += [trained, *_evaluations(config, spec.name, train_config.out, trained, seed),
                   *_choice(config, spec, train_config.out, trained, seed)]
    return stages


def _data_stage(config: RunConfig, spec: MethodSpec, earlier: list[Stage],
                seed: int | None) -> Stage:
    """The stage that writes the rows `spec` trains on (the draw of training seed `seed`
    when they are sampled): its own, or (`data_from`) the one of the method whose rows it
    takes."""
    if spec.data_from is not None:
        return next(s for s in earlier if s.model == spec.data_from
                    and s.kind in (GENERATE, REFERENCES) and s.seed == seed)
    data_config = config.data_config(spec, seed)
    if spec.decodes:
        return Stage(spec.name, GENERATE, data_config, _generate, spec.name, seed=seed)
    return Stage(spec.name, REFERENCES, data_config, _references, spec.name, seed=seed)


def _evaluations(config: RunConfig, name: str, adapter: str | None, upstream: Stage | None,
                 seed: int | None) -> list[Stage]:
    """A model's evaluation on the test split, then on each retention task; the untrained
    model (`adapter` None) is the one the run loaded, a trained one loads its own."""
    inputs = [adapter] if adapter else []
    work = _evaluate_loaded if adapter is None else _evaluate_own
    stages = [Stage(name, EVAL, config.eval_config(name, adapter, seed), work, TEST, inputs,
                    upstream, seed)]
    for entry in config.retention:
        stages.append(Stage(name, "retention", config.retention_config(name, adapter, entry,
                                                                       seed),
                            work, RETENTION + entry.key, inputs, upstream, seed, entry))
    return stages


def _choice(config: RunConfig, spec: MethodSpec, adapter: str, trained: Stage,
            seed: int | None) -> list[Stage]:
    """With `validation`: every checkpoint of the trained model on the held-out training
    problems, then the chosen checkpoint on the test split."""
    if not config.validation.problems:
        return []
    validation = config.validation_config(spec, adapter, seed)
    choice = str(Path(validation.out).parent / CHOICE_FILE)
    validate = Stage(spec.name, VALIDATE, validation, _validate, VALIDATION + spec.name,
                     [adapter], trained, seed)
    final = config.eval_config(spec.name, adapter, seed).out
    chosen = Stage(spec.name, CHOSEN, config.eval_config(f"{spec.name}@chosen", adapter, seed),
                   functools.partial(_evaluate_chosen, choice, final), TEST, [adapter, choice],
                   validate, seed)
    return [validate, chosen]


def _validate(config: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Every checkpoint of the adapter `config.adapter`, and the adapter itself (the final
    model), evaluated on the held-out problems; the best is chosen, a tie going to the
    later step (so the final model unless a checkpoint beats it)."""
    adapter = Path(config.adapter)
    final_step = json.loads((adapter / "train_summary.json").read_text())["steps"]
    folder = Path(config.out).parent
    points = []
    for step, path in [*[c for c in checkpoints(adapter) if c[0] < final_step],
                       (final_step, adapter)]:
        out = config.out if path == adapter else str(folder / f"{path.name}.jsonl")
        summary = evaluate(dataclasses.replace(config, adapter=str(path), out=out))
        points.append({"step": step, "adapter": str(path), "final": path == adapter,
                       **{k: summary[k] for k in ("n", "correct", "accuracy")}})
    chosen = max(points, key=lambda p: (p["accuracy"], p["step"]))
    choice = {"points": points, "chosen": chosen, "final": points[-1],
              "problems": summary["problems"]}
    (folder / CHOICE_FILE).write_text(json.dumps(choice, indent=2))
    return choice


def _evaluate_chosen(choice_file: str, final_out: str, config: Any, model: Any,
                     tokenizer: Any) -> dict[str, Any]:
    """The test evaluation of the checkpoint chosen on validation; the final model's own
    (already run) when the final model was chosen."""
    chosen = json.loads(Path(choice_file).read_text())["chosen"]
    if chosen["final"]:
        summary = json.loads(Path(final_out).with_suffix(".summary.json").read_text())
        return {**summary, "step": chosen["step"], "same_as_final": True}
    summary = evaluate(dataclasses.replace(config, adapter=chosen["adapter"]))
    return {**summary, "step": chosen["step"], "same_as_final": False}


def _generate(config: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    return generate(config, model=model, tokenizer=tokenizer)


def _references(config: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    return write_reference_rows(config, config.out, tokenizer, overwrite=True)


def _evaluate_loaded(config: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    return evaluate(config, model=model, tokenizer=tokenizer)


def _evaluate_own(config: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
    return evaluate(config)


def _fresh_or_resumed(train_fn: Callable[[Any], dict[str, Any]]) -> Work:
    """A training stage that `run_stage` did not reuse: resume an interrupted run's
    checkpoints, start over where a finished adapter of other settings is in the way. It
    loads its own copy of the model."""
    def work(config: Any, model: Any, tokenizer: Any) -> dict[str, Any]:
        if (Path(config.out) / ADAPTER_FILE).exists():
            config = dataclasses.replace(config, overwrite=True)
        return train_fn(config)
    return work


def usable_rows(stage: Stage, summary: dict[str, Any]) -> int | None:
    """The rows a training stage can use, by its data stage's summary; None when it is
    not known (another method's rows, or rows that are all kept)."""
    config = stage.config
    if (stage.kind != TRAIN or not isinstance(config, TrainConfig) or stage.upstream is None
            or stage.upstream.model != stage.model or config.rejected != "drop"):
        return None
    return summary["kept"] if config.only_correct else summary["samples"]


# --- markers ---------------------------------------------------------------------------------

def stage_marker(path: str, stage: str) -> Path:
    p = Path(path)
    return p.parent / f".stage-{stage}-{p.stem if p.suffix else p.name}.json"


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
