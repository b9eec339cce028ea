"""`dasd run`: generate -> filter -> train -> evaluate for every method, then one table.

The untrained model ("origin") and every method are evaluated on the same held-out
problems. The stages come from `dasd.stages` (the list `--plan` reports); each leaves a
marker with a fingerprint of its settings and inputs: a stage whose marker matches is
reused, one whose settings or inputs changed runs again, and an interrupted generation or
evaluation resumes where it stopped. The results: `results.json`, `results.md`
(`dasd.results`), and the analysis.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dasd.analysis import frontier
from dasd.analysis.compare import ORIGIN, compare_models, default_pairs, problem_scores
from dasd.config import write_resolved_config
from dasd.memory import peak_memory
from dasd.records import check_writable, read_jsonl
from dasd.results import results_markdown
from dasd.run_config import RunConfig, problems_record, select_problems
from dasd.stages import CHOSEN, GENERATE, REFERENCES, VALIDATE, Stage, build_stages, usable_rows
from dasd.stats import summarize

log = logging.getLogger(__name__)

# The key of a stage's summary among a model's results, where it is not the stage's kind.
RESULT_KEYS = {VALIDATE: "validation", CHOSEN: "eval_chosen", REFERENCES: "generate"}


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
    if "eval_chosen" in runs[0]:
        result["eval_chosen"] = pooled([r["eval_chosen"] for r in runs])
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
    stages = build_stages(config)
    results = collect_results(config, stages, execute(stages, model, tokenizer))
    report = {"name": config.name, "model": config.model, "task": config.task,
              "total_seconds": time.perf_counter() - start,
              "load_peak_rss_mb": load_memory["peak_rss_mb"],
              "problems": problems_record(selections), "methods": results,
              "comparison": compare_run(config, results),
              "retention": retention_run(config, results),
              "distance_from_sd": distance_from_sd(config, results)}
    (root / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (root / "results.md").write_text(results_markdown(report))
    if config.analyze and not any(spec.decodes for spec in config.methods):
        log.info("no analysis: no method of this run decodes, so no rows carry per-token "
                 "statistics (on-policy and reference methods write none)")
    elif config.analyze:
        from dasd.analysis import AnalyzeConfig, analyze

        with peak_memory() as memory:
            report["analysis"] = analyze(AnalyzeConfig(path=str(root)))["report"]
        report["analysis_peak_rss_mb"] = memory["peak_rss_mb"]
        (root / "results.json").write_text(json.dumps(report, indent=2, default=str))
        log.info("analysis report: %s", report["analysis"])
    return report


def execute(stages: list[Stage], model: Any, tokenizer: Any) -> dict[Stage, dict[str, Any]]:
    """Run (or reuse) every stage in order: {stage: its summary}. A training stage whose
    own data kept no usable row is skipped, with the stages that read its output."""
    done: dict[Stage, dict[str, Any]] = {}
    skipped: set[Stage] = set()
    for stage in stages:
        if stage.upstream in skipped:
            skipped.add(stage)
            continue
        if stage.upstream in done and usable_rows(stage, done[stage.upstream]) == 0:
            log.warning("%s: no correct samples to train on; skipping train and eval",
                        stage.label)
            skipped.add(stage)
            continue
        done[stage] = stage.execute(model, tokenizer)
    return done


def collect_results(config: RunConfig, stages: list[Stage], done: dict[Stage, dict[str, Any]]
                    ) -> dict[str, Any]:
    """{model: its stages' summaries}: `generate` (or `data_from`), `train`, `eval` and
    `retention` {task: summary}; with `seeds`, pooled over the seeds, each seed's under
    `seeds` (and the pooled evaluation written beside the seeds' folders)."""
    results: dict[str, Any] = {ORIGIN: {}} if config.origin and not config.generate_only else {}
    for spec in config.methods:
        results[spec.name] = {"data_from": spec.data_from} if spec.data_from else {}
    per_seed: dict[str, dict[int | None, dict[str, Any]]] = {}
    for stage in (s for s in stages if s in done):
        if stage.kind in (GENERATE, REFERENCES) and stage.seed is None:
            results[stage.model]["generate"] = done[stage]
            continue
        trained = per_seed.setdefault(stage.model, {}).setdefault(stage.seed, {})
        if stage.retention is not None:
            trained.setdefault("retention", {})[stage.retention.key] = done[stage]
        else:
            trained[RESULT_KEYS.get(stage.kind, stage.kind)] = done[stage]
    for name, seeds in per_seed.items():
        if None in seeds:
            results[name].update(seeds[None])
            continue
        if "generate" in next(iter(seeds.values())):  # sampled rows: one draw per seed
            results[name]["generate"] = pool_generations(config, name, list(seeds))
        trained = {seed: run for seed, run in seeds.items() if "eval" in run}
        pooled = pool_seeds(trained) if trained else {}
        if pooled:
            summary = Path(config.eval_config(name, None).out).with_suffix(".summary.json")
            summary.write_text(json.dumps(pooled["eval"], indent=2, default=str))  # analysis
        results[name].update({**pooled, "seeds": {str(k): v for k, v in seeds.items()}})
    return results


def pool_generations(config: RunConfig, name: str, seeds: list[int]) -> dict[str, Any]:
    """A sampled method's rows of every training seed, summarised together (kept-at-n:
    problems with a correct sample in any seed's draw), with the seeds' costs."""
    spec = next(s for s in config.methods if s.name == name)
    summaries = [json.loads(Path(config.data_path(spec, seed)).with_suffix(".summary.json")
                            .read_text()) for seed in seeds]
    rows = [row for seed in seeds for row in read_jsonl(config.data_path(spec, seed))]
    threshold = config.data_config(spec).high_ppl_threshold
    return {**summaries[0], **summarize(rows, threshold), **_stage_costs(summaries),
            "sample_seeds": seeds}


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
