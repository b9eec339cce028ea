"""`--plan`: what `dasd run`, `generate`, `eval` or `train` would do, before anything runs.

A plan reads the config, the data (local files; hub data sets only from the local cache,
see `dasd.tasks.io.local_only`), the stage markers and outputs already on disk, and the
model's tokenizer when it is on disk already. It loads no model, decodes nothing, downloads
nothing and writes nothing. It is a plain dict of JSON numbers and strings (`--plan
--json` prints it as is); `dasd.plan_text.render_plan` prints it as text.

What it holds: the training and test problems (how many, of how many, per level and
subject beside the split's own proportions), every stage with what it will do (run,
resume, reuse, or stop), token budgets (max new tokens x problems), the settings that
differ from the DASD paper's protocol (`PAPER`), and a warning for every deviation from
the full benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from dasd.config import ROWS, changed_settings, settings_fields
from dasd.errors import DasdError
from dasd.methods import get_method
from dasd.records import sidecar
from dasd.tasks import ProblemSelection, select_split
from dasd.tasks.io import local_only
from dasd.tasks.sample import counts
from dasd.versions import library_versions

# The DASD paper's protocol (Section 4, Table 1): training sets capped at 2,000 problems per
# data set, SFT on the correctly answered samples only, LoRA via PEFT on all linear layers,
# lr 2e-5, warmup ratio 0.2 (transformers 5 writes it `warmup_steps: 0.2`), the whole
# test split. The methods' own settings are measured against their registry defaults,
# which are their papers' (K 6, tau 0.2, ref fallback for DASD).
PAPER = {"train_problems": 2000, "only_correct": True, "lora_target_modules": "all-linear",
         "learning_rate": 2e-5, "warmup_steps": 0.2}
RUN, RESUME, REUSE, STOP = "run", "resume", "reuse", "stop"


def make_plan(command: str, config: Any) -> dict[str, Any]:
    """The plan of `dasd <command>` with this config (`run`, `generate`, `eval`, `train`)."""
    from dasd.training import TrainConfig

    with local_only():
        if command == "run":
            plan = plan_run(config)
        elif command in ("generate", "eval"):
            plan = plan_decode(command, config)
        elif isinstance(config, TrainConfig):
            plan = plan_sft(config)
        else:
            plan = plan_onpolicy(config)
    plan["versions"] = library_versions()
    return plan


# --- problems -------------------------------------------------------------------------------

def describe(selection: ProblemSelection, config: Any) -> dict[str, Any]:
    """The problems of one selection, with the split's own counts beside them."""
    split = counts(selection.pool)
    return {**selection.record(), "task": config.task, "split": config.split,
            "levels": getattr(config, "levels", None), "seed": config.seed,
            "available": len(selection.pool), "split_counts": split,
            "first_row": first_row(selection.pool[0])}


def first_row(example: Any, width: int = 100) -> dict[str, Any]:
    """The first problem of the split as dasd reads it (long fields shortened)."""
    def short(text: str) -> str:
        return text if len(text) <= width else text[:width - 3] + "..."

    return {"id": example.id, "question": short(example.question),
            "reference": short(example.reference), "answer": short(example.answer),
            "level": example.level}


def _problem_warnings(problems: dict[str, Any], evaluation: bool) -> list[str]:
    where = f"{problems['task']}/{problems['split']}"
    warnings = []
    if problems["asked"] is not None and problems["asked"] > problems["n"]:
        warnings.append(f"limit {problems['asked']} asks for more problems than {where} has "
                        f"({problems['available']}): all {problems['n']} are used")
    if problems["sample"] == "first" and problems["n"] < problems["available"]:
        warnings.append(f"{where}: the first {problems['n']} problems in file order "
                        "(sample: first), not a representative sample")
    if evaluation and problems["subset"]:
        cut = " and ".join(k for k in ("limit", "levels") if problems.get(
            "asked" if k == "limit" else k) is not None)
        warnings.append(f"evaluation on {problems['n']} of the {problems['of']} problems of "
                        f"{where} ({cut}): scores are on a subset, marked '{problems['n']} of "
                        f"{problems['of']}'")
    return warnings


# --- stages ---------------------------------------------------------------------------------

def _stage(method: str, stage: str, status: str, why: str, **budget: Any) -> dict[str, Any]:
    return {"method": method, "stage": stage, "status": status, "why": why, **budget}


def _marker_status(marker: Path, config: Any, inputs: list[str], upstream: str
                   ) -> tuple[str, str]:
    """(status, why) of a `dasd run` stage from its marker (`dasd.run.stage_status`)."""
    from dasd.stages import stage_status

    if upstream != REUSE:
        return RUN, "its input is written first (by the stage before it)"
    status = stage_status(marker, config, inputs)
    if status == REUSE:
        return REUSE, "finished with these settings and inputs"
    if status == RESUME:
        return RESUME, "only the set of problems or the summary changed: finished rows are kept"
    if marker.is_file():
        return RUN, "settings or inputs changed since it ran: starts over"
    return RUN, "not run yet"


def _output_status(config: Any, out: Path, ids: set[str], n: int) -> tuple[str, str]:
    """(status, why) of a stage writing `n` rows of the problems `ids` to `out` outside
    `dasd run` (the resume rules of `dasd.outputs.open_output`), reading only."""
    import yaml

    if not out.exists():
        return RUN, f"new output {out}"
    if config.overwrite:
        return RUN, f"overwrite: {out} starts over"
    previous = sidecar(out, "config.yaml")
    if previous.is_file():
        changed = changed_settings(config, yaml.safe_load(previous.read_text()) or {}, ROWS)
        if changed:
            return STOP, (f"{out} was written with other settings ({', '.join(changed)}): "
                          "pass --overwrite or choose another --out")
    done = sum(row_id.split("#")[0] in ids for row_id in _row_ids(out))
    return (REUSE if done >= n else RESUME), f"{min(done, n)} of {n} rows already in {out}"


def _row_ids(path: Path) -> list[str]:
    """The ids of the complete rows of a JSONL output (a partial last line is left out)."""
    ids = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            ids.append(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def _adapter_status(out: Path, overwrite: bool) -> tuple[str, str]:
    """(status, why) of `dasd train` into `out` (`dasd.training.trl_args.resume_point`)."""
    from dasd.training.sft import ADAPTER_FILE
    from dasd.training.trl_args import latest_checkpoint

    if overwrite:
        return RUN, f"overwrite: {out} starts over"
    if (out / ADAPTER_FILE).exists():
        return STOP, f"{out} already holds a trained adapter: pass --overwrite or another --out"
    checkpoint = latest_checkpoint(out)
    if checkpoint is not None:
        return RESUME, f"resumes from {checkpoint.name}"
    return RUN, f"new adapter in {out}"


def _decode_budget(n: int, max_new_tokens: int, samples: int = 1) -> dict[str, int]:
    return {"problems": n, "samples": samples, "max_new_tokens": max_new_tokens,
            "new_tokens_max": n * samples * max_new_tokens}


def _sft_budget(trainer: dict[str, Any], rows: int, rows_known: bool) -> dict[str, Any]:
    """Rows, optimizer steps and tokens of SFT; `rows` is an upper bound until the data
    exists (generated rows that fail the filter are dropped)."""
    batch = trainer.get("per_device_train_batch_size", 8) * trainer.get(
        "gradient_accumulation_steps", 1)
    epochs = trainer.get("num_train_epochs", 3.0)
    steps = trainer.get("max_steps", -1)
    if steps is None or steps < 1:
        steps = math.ceil(rows / batch) * math.ceil(epochs) if rows else 0
    return {"rows": rows, "rows_exact": rows_known, "batch": batch, "epochs": epochs,
            "steps_max": steps, "max_length": trainer.get("max_length"),
            "train_tokens_max": rows * math.ceil(epochs) * (trainer.get("max_length") or 0)}


def _rollout_budget(trainer: dict[str, Any], prompts: int) -> dict[str, Any]:
    batch = trainer.get("per_device_train_batch_size", 4) * trainer.get(
        "gradient_accumulation_steps", 1)
    steps = trainer.get("max_steps", -1)
    generations = trainer.get("num_generations", 1)
    if steps is None or steps < 1:
        steps = math.ceil(prompts * generations / batch) * math.ceil(
            trainer.get("num_train_epochs", 3.0))
    rollouts = steps * batch
    return {"problems": prompts, "steps_max": steps, "rollouts": rollouts,
            "teacher": trainer.get("teacher_model_kind"),
            "max_new_tokens": trainer["max_completion_length"],
            "new_tokens_max": rollouts * trainer["max_completion_length"]}


# --- settings against the paper -------------------------------------------------------------

def _deviation(where: str, setting: str, value: Any, paper: Any) -> dict[str, Any]:
    return {"where": where, "setting": setting, "value": value, "paper": paper}


def sft_deviations(config: Any, where: str) -> list[dict[str, Any]]:
    """The SFT settings of `config` (a TrainConfig) that are not the DASD paper's."""
    values = {"only_correct": config.only_correct,
              "lora_target_modules": config.lora_target_modules,
              "learning_rate": config.trainer.get("learning_rate"),
              "warmup_steps": config.trainer.get("warmup_steps")}
    return [_deviation(where, key, value, PAPER[key]) for key, value in values.items()
            if value != PAPER[key]]


def method_deviations(name: str, method: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """A method's own settings that are not its registry defaults (its paper's)."""
    from dasd.config import build_settings

    if method == "sft":
        return []
    built = build_settings(get_method(method).settings, {}, method)
    defaults = {f.name: getattr(built, f.name) for f in settings_fields(type(built))}
    return [_deviation(f"method {name}", key, value, defaults.get(key))
            for key, value in settings.items() if defaults.get(key) != value]


def onpolicy_deviations(config: Any, where: str) -> list[dict[str, Any]]:
    """On-policy TRL settings that are not the method's paper values."""
    from dasd.training.onpolicy import get_onpolicy_method as onpolicy_method
    from dasd.training.onpolicy.config import OnPolicyConfig

    paper = dict(onpolicy_method(config.method).trainer_defaults)
    fields = {f.name: f.default for f in dataclasses.fields(OnPolicyConfig)}
    paper.update(lora_r=fields["lora_r"], lora_alpha=fields["lora_alpha"])
    trainer = config.resolved_trainer()
    values = {key: trainer.get(key, getattr(config, key, None)) for key in paper}
    return [_deviation(where, key, value, paper[key]) for key, value in values.items()
            if value != paper[key]]


def problem_deviations(train: list[dict[str, Any]], test: dict[str, Any] | None
                       ) -> list[dict[str, Any]]:
    out = []
    for problems in train:
        where = "training problems (" + ", ".join(problems.get("methods", [])) + ")"
        if problems["n"] < min(PAPER["train_problems"], problems["available"]):
            out.append(_deviation(where, "problems", problems["n"], PAPER["train_problems"]))
        if problems["sample"] == "first" and problems["n"] < problems["available"]:
            out.append(_deviation(where, "sample", "first", "a representative sample"))
    if test is not None and test["subset"]:
        out.append(_deviation("test problems", "problems", f"{test['n']} of {test['of']}",
                              f"all {test['of']}"))
    return out


# --- tokenizer ------------------------------------------------------------------------------

def local_tokenizer(spec: str) -> tuple[Any | None, str]:
    """(tokenizer, where it came from), or (None, why not) when it is not on disk already:
    nothing is downloaded and no GGUF is converted."""
    from dasd import models

    try:
        if spec in models.EMBEDDED_MODELS or spec.endswith(".gguf"):
            gguf = (models.embedded_gguf_path(spec) if spec in models.EMBEDDED_MODELS
                    else Path(spec))
            if not gguf.is_file():
                return None, f"model file not found: {spec}"
            source = models._gguf_cache_dir(gguf)  # the converted copy, if made already
            if not (source / "config.json").is_file():
                return None, "the GGUF is not converted yet (the first run converts it)"
        else:
            source = Path(spec).expanduser()
        return _load_tokenizer(str(source) if source.is_dir() else spec)
    except DasdError as err:
        return None, str(err)


def _load_tokenizer(source: str) -> tuple[Any | None, str]:
    import huggingface_hub.constants as hub
    from transformers import AutoTokenizer

    saved, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception:  # not cached, or not a tokenizer: the plan goes on without it
        return None, f"no tokenizer of {source} on disk (nothing is downloaded)"
    finally:
        hub.HF_HUB_OFFLINE = saved
    return tokenizer, source


def prompt_tokens(tokenizer: Any, selection: ProblemSelection, config: Any, context: int
                  ) -> dict[str, Any]:
    """Prompt lengths in tokens (context 0: the base prompt, 1: the reference prompt)."""
    from dasd.tasks.prompts import encode, render_prompts

    lengths = [len(encode(tokenizer, render_prompts(tokenizer, selection.template, e,
                                                    config)[context]))
               for e in selection.examples]
    return {"prompt": "reference" if context else "base", "max": max(lengths),
            "mean": round(sum(lengths) / len(lengths), 1), "lengths": lengths}


CONTEXTS = ("base", "reference")


def context_ends(tokenizer: Any, texts: dict[str, str], contexts: tuple[str, ...],
                 first: int = 3, last: int = 8) -> dict[str, Any]:
    """What each context's prompt looks like: its length and its first and last tokens,
    each decoded on its own (where a chat template's arguments and the thinking block
    show)."""
    from dasd.tasks.prompts import encode

    ends = {}
    for name in contexts:
        ids = encode(tokenizer, texts[name])
        ends[name] = {"tokens": len(ids), "first": [tokenizer.decode([i]) for i in ids[:first]],
                      "last": [tokenizer.decode([i]) for i in ids[-last:]]}
    return ends


def thinking_warnings(texts: dict[str, str], config: Any) -> list[str]:
    """A warning when the two contexts end in different thinking blocks (`thinking_block:
    own`): the response's first token is then predicted at different points."""
    from dasd.tasks.thinking import thinking_prefix

    base, reference = (thinking_prefix(texts[name]) for name in CONTEXTS)
    if base == reference:
        return []
    return [f"the base prompt ends in {base!r} and the reference prompt in {reference!r} "
            f"(thinking_block {getattr(config, 'thinking_block', 'own')}): the two contexts "
            "predict the response's first token at different points"]


def _add_contexts(plan: dict[str, Any], tokenizer: Any, selection: ProblemSelection,
                  config: Any, contexts: tuple[str, ...] = CONTEXTS) -> None:
    """Each context's prompt of the first problem, rendered once; with both contexts, the
    thinking-block warning."""
    from dasd.tasks.prompts import render_prompts

    texts = dict(zip(CONTEXTS, render_prompts(tokenizer, selection.template,
                                              selection.examples[0], config), strict=True))
    plan["tokenizer"]["contexts"] = context_ends(tokenizer, texts, contexts)
    if len(contexts) == 2:
        plan["warnings"] += thinking_warnings(texts, config)


# --- the commands ---------------------------------------------------------------------------

def _header(command: str, config: Any) -> dict[str, Any]:
    return {"command": command, "model": config.model, "task": config.task,
            "seed": config.seed, "writes_nothing": True}


def _finish(plan: dict[str, Any]) -> dict[str, Any]:
    """Token totals over the stages, and warnings for stages that would stop."""
    stages = plan["stages"]
    plan["token_budget"] = {
        "new_tokens_max_to_run": sum(s.get("new_tokens_max", 0) for s in stages
                                     if s["status"] != REUSE),
        "new_tokens_max_all": sum(s.get("new_tokens_max", 0) for s in stages)}
    plan["warnings"] += [f"{s['method']} {s['stage']} would stop: {s['why']}"
                         for s in stages if s["status"] == STOP]
    return plan


def plan_run(config: Any) -> dict[str, Any]:
    """The plan of `dasd run`: the stages of `dasd.stages.build_stages`, the list `dasd run`
    executes, each with its status and budget."""
    from dasd.run_config import RETENTION, TEST, VALIDATION, problems_record, select_problems
    from dasd.stages import build_stages

    selections = select_problems(config)
    configs = config.problem_configs()
    record = problems_record(selections)
    train = [{**describe(selections[entry["methods"][0]], configs[entry["methods"][0]]),
              "methods": entry["methods"]} for entry in record["train"]]
    test = describe(selections[TEST], configs[TEST]) if TEST in selections else None
    plan = {**_header("run", config), "name": config.name, "out_dir": config.out_dir,
            "problems": {"train": train, "test": test}, "stages": [], "deviations": [],
            "warnings": []}
    for problems in train:
        plan["warnings"] += _problem_warnings(problems, evaluation=False)
    if test is not None:
        plan["warnings"] += _problem_warnings(test, evaluation=True)
    if len(train) > 1:
        plan["warnings"].append("methods train on different problems: " + "; ".join(
            ", ".join(p["methods"]) for p in train))
    planned: dict[Any, dict[str, Any]] = {}
    for stage in build_stages(config):
        planned[stage] = _planned_stage(stage, planned, selections)
        plan["stages"].append(planned[stage])
    if "validation" in record:
        specs = {spec.name: spec for spec in config.methods}
        plan["problems"]["validation"] = [
            {**describe(selections[VALIDATION + entry["methods"][0]],
                        config.validation_config(specs[entry["methods"][0]], None)),
             "methods": entry["methods"]} for entry in record["validation"]]
    if config.retention:
        plan["problems"]["retention"] = {
            entry.key: describe(selections[RETENTION + entry.key],
                                config.retention_config("origin", None, entry))
            for entry in config.retention if RETENTION + entry.key in selections}
    plan["deviations"] = problem_deviations(train, test) + _run_deviations(config)
    plan["paper_silent"] = _silent_choices(config)
    _add_tokens(plan, config, selections, configs)
    return _finish(plan)


def _planned_stage(stage: Any, planned: dict[Any, dict[str, Any]],
                   selections: dict[str, ProblemSelection]) -> dict[str, Any]:
    """One stage of `dasd run` as the plan shows it: status, why, budget."""
    from dasd.stages import REFERENCES, TRAIN, VALIDATE
    from dasd.training.onpolicy.config import OnPolicyConfig

    upstream = planned[stage.upstream] if stage.upstream is not None else None
    status, why = _marker_status(stage.marker, stage.config, stage.inputs,
                                 upstream["status"] if upstream else REUSE)
    config = stage.config
    if isinstance(config, OnPolicyConfig):  # trains on its own rollouts
        n = len(selections[stage.problems].examples)
        budget = _rollout_budget(config.resolved_trainer(), n)
    elif stage.kind == TRAIN:
        rows = upstream["problems"] * upstream.get("samples", 1)
        used, exact = (_usable_rows(config, stage.inputs[0], rows)
                       if upstream["status"] == REUSE else (rows, False))
        budget = _sft_budget(config.trainer, used, exact)
    elif stage.kind == VALIDATE:  # every checkpoint and the final model
        points = _checkpoint_points(stage.upstream.config, upstream.get("steps_max", 0))
        budget = _decode_budget(len(selections[stage.problems].examples),
                                config.max_new_tokens, getattr(config, "samples", 1))
        budget.update(checkpoints=points, new_tokens_max=budget["new_tokens_max"] * points)
    elif stage.kind == REFERENCES:
        why = f"{why} (the reference solutions)"
        budget = {"problems": len(selections[stage.problems].examples), "new_tokens_max": 0}
    else:  # generate, eval, retention: decoding
        budget = _decode_budget(len(selections[stage.problems].examples),
                                config.max_new_tokens, getattr(config, "samples", 1))
        budget.update(_engine(config))
    return _stage(stage.label, stage.name, status, why, **budget)


def _engine(config: Any) -> dict[str, str]:
    """What decodes a generate stage (a config with a `method`), where it is not the step
    engine: `draft-verify`, `vllm (draft-verify)` or `vllm (lockstep)`."""
    engine = getattr(config, "engine", "step")
    if engine == "step" or not hasattr(config, "method"):
        return {}
    return {"engine": f"vllm ({config.vllm.path})" if engine == "vllm" else engine}


def _checkpoint_points(train_config: Any, steps: int) -> int:
    """How many models validation evaluates: the checkpoints training saves (TRL's
    save_steps: a share of the steps below 1) and the final model."""
    from dasd.training.trl_args import CHECKPOINTS

    trainer = getattr(train_config, "trainer", {}) or {}
    every = trainer.get("save_steps", CHECKPOINTS["save_steps"])
    if not steps:
        return 1
    interval = max(1, math.ceil(every * steps) if every < 1 else int(every))
    return len({*range(interval, steps + 1, interval), steps})


def _usable_rows(config: Any, data: str, bound: int) -> tuple[int, bool]:
    """(rows training will use, exact?): counted with the row filter when the data exists."""
    from dasd.records import read_jsonl

    if not Path(data).is_file():
        return bound, False
    rows = read_jsonl(data)
    if config.rejected != "drop":
        return len(rows), True
    row_filter = config.row_filter()
    return sum(row_filter.reason(row) is None for row in rows), True


def _run_deviations(config: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in config.methods:
        out += method_deviations(spec.name, spec.method, spec.settings)
        if spec.onpolicy:
            out += onpolicy_deviations(config.onpolicy_config(spec), f"train {spec.name}")
        else:
            out += sft_deviations(config.train_config(spec, "x.jsonl"), f"train {spec.name}")
    return _merge_deviations(out)


def _silent_choices(config: Any) -> dict[str, Any]:
    """What the config chose where the paper says nothing (of its first SFT method)."""
    spec = next((s for s in config.methods if not s.onpolicy), None)
    choices: dict[str, Any] = {"generate max_new_tokens": config.generate.max_new_tokens,
                               "eval max_new_tokens": config.eval.max_new_tokens,
                               "prompts": config.generate.prompts or "dasd's built-in"}
    if spec is not None:
        train = config.train_config(spec, "x.jsonl")
        trainer = train.trainer
        choices.update({
            "num_train_epochs": trainer.get("num_train_epochs"),
            "effective batch": trainer.get("per_device_train_batch_size", 8)
            * trainer.get("gradient_accumulation_steps", 1),
            "max_length": trainer.get("max_length"), "lora_r": train.lora_r,
            "lora_alpha": train.lora_alpha, "lora_dropout": train.lora_dropout})
    return choices


def _merge_deviations(deviations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (setting, value, paper), naming every place it occurs."""
    merged: dict[str, dict[str, Any]] = {}
    for d in deviations:
        key = json.dumps([d["setting"], d["value"], d["paper"], d["where"].split()[0]],
                         default=str)
        if key in merged:
            merged[key]["where"] += ", " + d["where"].split(maxsplit=1)[-1]
        else:
            merged[key] = dict(d)
    return list(merged.values())


def _add_tokens(plan: dict[str, Any], config: Any, selections: dict[str, ProblemSelection],
                configs: dict[str, Any]) -> None:
    """Prompt lengths when the tokenizer is on disk, and rows that training would cut."""
    tokenizer, source = local_tokenizer(config.model)
    plan["tokenizer"] = {"available": tokenizer is not None, "source": source}
    if tokenizer is None:
        return
    from dasd.run_config import TEST

    if TEST in selections:
        test = prompt_tokens(tokenizer, selections[TEST], configs[TEST], 0)
        plan["tokenizer"]["test_prompt_tokens"] = {k: v for k, v in test.items()
                                                   if k != "lengths"}
    spec = next((s for s in config.methods if s.name in selections), None)
    if spec is None:
        return
    stats = prompt_tokens(tokenizer, selections[spec.name], configs[spec.name], 1)
    plan["tokenizer"]["train_prompt_tokens"] = {k: v for k, v in stats.items() if k != "lengths"}
    _add_contexts(plan, tokenizer, selections[spec.name], configs[spec.name])
    if spec.decodes:  # a training row is the base prompt + the response: at most this long
        base = prompt_tokens(tokenizer, selections[spec.name], configs[spec.name], 0)["lengths"]
        limit = config.train_config(spec, "x.jsonl").max_length
        budget = configs[spec.name].max_new_tokens
        over = sum(length + budget > limit for length in base)
        if over:
            plan["warnings"].append(
                f"{over} of {len(base)} training rows can exceed train max_length {limit} "
                f"(base prompt + max_new_tokens {budget}): the longest are cut")


def plan_decode(command: str, config: Any) -> dict[str, Any]:
    """The plan of `dasd generate` or `dasd eval`: one stage over one selection."""
    evaluation = command == "eval"
    selection = select_split(config, evaluation=evaluation)
    problems = describe(selection, config)
    n = len(selection.examples)
    samples = getattr(config, "samples", 1)
    status, why = _output_status(config, Path(config.out), {e.id for e in selection.examples},
                                 n * samples)
    name = (config.adapter or "base model") if evaluation else config.method
    plan = {**_header(command, config), "out": config.out,
            "problems": {"test" if evaluation else "train": problems},
            "stages": [_stage(name, command, status, why,
                              **_decode_budget(n, config.max_new_tokens, samples),
                              **_engine(config))],
            "warnings": _problem_warnings(problems, evaluation)}
    plan["deviations"] = problem_deviations([] if evaluation else [problems],
                                            problems if evaluation else None)
    if not evaluation:
        plan["deviations"] += method_deviations(config.method, config.method, config.settings)
    tokenizer, source = local_tokenizer(config.model)
    plan["tokenizer"] = {"available": tokenizer is not None, "source": source}
    if tokenizer is not None:
        stats = prompt_tokens(tokenizer, selection, config, 0 if evaluation else 1)
        plan["tokenizer"]["prompt_tokens"] = {k: v for k, v in stats.items() if k != "lengths"}
        _add_contexts(plan, tokenizer, selection, config,
                      CONTEXTS[:1] if evaluation else CONTEXTS)
    return _finish(plan)


def plan_sft(config: Any) -> dict[str, Any]:
    """The plan of `dasd train` with an SFT method: its data files and the rows they give."""
    missing = [p for p in config.data or [] if not Path(p).is_file()]
    if not config.data or missing:
        raise DasdError(f"data file not found: {(missing or ['(none given)'])[0]}; run `dasd "
                        "generate` first or fix --data")
    rows = sum(_usable_rows(config, path, 0)[0] for path in config.data)
    status, why = _adapter_status(Path(config.out), config.overwrite)
    plan = {"command": "train", "model": config.model, "task": None, "seed": config.seed,
            "writes_nothing": True, "out": config.out, "data": config.data,
            "method": config.method,
            "stages": [_stage(config.method, "train", status, why,
                              **_sft_budget(config.trainer, rows, True))],
            "deviations": sft_deviations(config, f"train {config.method}")
            + method_deviations(config.method, config.method, config.settings),
            "warnings": [] if rows else ["no row passes the filter: training would stop"]}
    return _finish(plan)


def plan_onpolicy(config: Any) -> dict[str, Any]:
    """The plan of `dasd train` with an on-policy method: its problems and rollouts."""
    config = config.resolved()
    selection = select_split(config)
    problems = describe(selection, config)
    status, why = _adapter_status(Path(config.out), config.overwrite)
    plan = {**_header("train", config), "out": config.out, "method": config.method,
            "problems": {"train": problems},
            "stages": [_stage(config.method, "train", status, why,
                              **_rollout_budget(config.trainer, len(selection.examples)))],
            "deviations": onpolicy_deviations(config, f"train {config.method}")
            + method_deviations(config.method, config.method, config.settings),
            "warnings": _problem_warnings(problems, evaluation=False)}
    tokenizer, source = local_tokenizer(config.model)
    plan["tokenizer"] = {"available": tokenizer is not None, "source": source}
    if tokenizer is not None:
        _add_contexts(plan, tokenizer, selection, config)
    return _finish(plan)
