"""`dasd analyze`: the paper's analyses of generated data, as figures, CSVs and one HTML page.

Reads every generated JSONL under a run folder (or one JSONL), computes the tables of
`tables.py`, draws them with `plots.py`, and writes to the report folder:
`<analysis>.png/.pdf` per figure, `<table>.csv` per table, `analysis.json` (every table,
the settings and notes) and `report.html` (self-contained: figures inlined as PNG, no
external scripts or styles) with a token-by-token browser of the examples.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dasd import __version__
from dasd.analysis import departures, frontier, onpolicy, plots, tables
from dasd.analysis.compare import ORIGIN, compare_models, default_pairs, problem_scores
from dasd.analysis.data import (
    GeneratedFile,
    find_generated,
    load_checkpoint_choices,
    load_comparison_request,
    load_eval_rows,
    load_eval_summaries,
    load_generated,
    load_retention_rows,
    load_tokenizer_offline,
    load_training_levels,
    load_training_logs,
    token_texts,
)
from dasd.analysis.report_html import render_report
from dasd.analysis.tables import Section
from dasd.analysis.tokens import hover, p_base_band, token_records
from dasd.errors import DasdError

log = logging.getLogger(__name__)


@dataclass
class AnalyzeConfig:
    path: str | None = field(default=None, metadata={
        "help": "run folder (every generated JSONL inside it) or one generated JSONL"})
    out: str | None = field(default=None, metadata={
        "help": "report folder (default: <run folder>/analysis, or <file>.analysis/)"})
    high_ppl_threshold: float = field(default=2.5, metadata={
        "help": "a token is high-PPL when exp(-log p_base) exceeds this (paper: 2.5)"})
    only_correct: bool = field(default=False, metadata={
        "help": "high-PPL, segment, alignment and phi analyses on correctly answered samples "
                "only (the training data); token categories always use only those"})
    segment: Literal["auto", "line", "window"] = field(default="auto", metadata={
        "help": "segments for segment-level PPL: lines (needs the tokenizer), fixed token "
                "windows, or auto (lines when the tokenizer loads offline)"})
    segment_window: int = field(default=16, metadata={
        "help": "tokens per segment when segmenting by windows"})
    segment_ppl_edges: list[float] = field(default_factory=lambda: [1.5, 3.0], metadata={
        "help": "segment PPL buckets: low <= first, mid <= second, ultra-high above"})
    phi_bins: int = field(default=40, metadata={"help": "histogram bins of phi"})
    tokenizer: str | None = field(default=None, metadata={
        "help": "model whose tokenizer turns token ids into text (default: the 'model' in "
                "the config beside each JSONL); 'none' shows ids"})
    browse_limit: int = field(default=200, metadata={
        "help": "examples per method in the report's token browser"})

    def __post_init__(self) -> None:
        if not self.path:
            raise DasdError("give a run folder or generated JSONL to analyze, e.g. "
                            "`dasd analyze runs/demo`")
        if self.high_ppl_threshold <= 1:
            raise DasdError(f"high_ppl_threshold must be > 1; got {self.high_ppl_threshold}")
        edges = self.segment_ppl_edges
        if len(edges) != 2 or not 1 <= edges[0] < edges[1]:
            raise DasdError(f"segment_ppl_edges must be two increasing values >= 1; got {edges}")
        for name in ("segment_window", "phi_bins", "browse_limit"):
            if getattr(self, name) < 1:
                raise DasdError(f"{name} must be >= 1; got {getattr(self, name)}")

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        path = Path(self.path)
        return path / "analysis" if path.is_dir() else path.with_name(f"{path.stem}.analysis")


def write_csv(path: Path, table: tables.Table) -> None:
    """Numbers as Python writes them (repr), so they read back to the same floats."""
    columns = list(dict.fromkeys(k for row in table for k in row))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in table)


def _texts(files: list[GeneratedFile], config: AnalyzeConfig) -> dict[int, list[str]] | None:
    """Token texts of every row (keyed by id(row)); None when a tokenizer is missing."""
    texts: dict[int, list[str]] = {}
    for f in files:
        tokenizer = load_tokenizer_offline(config.tokenizer or f.model)
        if tokenizer is None:
            return None
        for row in f.rows:
            texts[id(row)] = token_texts(tokenizer, row["completion_ids"])
    return texts


def _segmenter(config: AnalyzeConfig, texts: dict[int, list[str]] | None
               ) -> tuple[tables.Segmenter, str]:
    mode = config.segment
    if mode == "auto":
        mode = "line" if texts is not None else "window"
    if mode == "line":
        if texts is None:
            raise DasdError("segment=line needs token text but the tokenizer is not available "
                            "offline: pass --tokenizer MODEL or use --segment window")
        return (lambda row: tables.line_segments(texts[id(row)])), "segments = lines"
    size = config.segment_window
    return ((lambda row: tables.window_segments(len(row["completion_ids"]), size)),
            f"segments = windows of {size} tokens")


def _with_keys(files: list[GeneratedFile], keys: set[str], rows_of) -> tuple[dict, list[str]]:
    runs = {f.label: rows_of(f) for f in files if keys <= f.token_keys}
    missing = [f.label for f in files if not keys <= f.token_keys]
    return runs, missing


def frontier_section(files: list[GeneratedFile], threshold: float) -> Section:
    table = frontier.frontier_table({f.label: f.rows for f in files}, threshold)
    verdict = None
    if any(r["role"] == frontier.SD for r in table):
        verdict = " ".join(
            f"Keeping at least sd's share of samples with a lower high-PPL ratio of {which} "
            f"than sd's: {', '.join(better) or 'no method'}."
            for which, better in (("the kept rows", frontier.beats_sd(table, "kept")),
                                  ("all rows", frontier.beats_sd(table, "all"))))
        same = [r["method"] for r in table if r["equals_sd"]]
        if same:
            verdict += (f" Token for token sd's rows (sd with other labels, no point of their "
                        f"own): {', '.join(same)}.")
    return Section(
        "frontier", "4b. The DASD-SD frontier",
        "Per method: kept rate (correct samples / samples) against the high-PPL ratio "
        f"(base PPL > {threshold:g}) of its kept rows (the training data) and of all its "
        "rows; kept_problems = problems with at least one correct sample (kept-at-n with n "
        "samples per problem). SD = plain self-distillation, paper DASD = K 6, tau 0.2, ref "
        "fallback, no guard; Pareto-optimal = no other method keeps as many samples with a "
        "ratio as low, better in one. Distance from sd: same_as_sd_percent = rows whose "
        "response is token for token sd's on the same problem (same_as_paper_dasd_percent: "
        "the paper DASD's), departed_tokens_percent = tokens that are not the reference "
        "top-1 at their position (where sd, given the same prefix, would have emitted "
        "another token); a method whose rows all equal sd's is sd under another name and is "
        "never Pareto-optimal. A guard sweep (`guard` gamma between 1 = the paper and 0 = "
        "sd's tokens, and tau) is one `dasd run` config with one entry per setting.",
        {"frontier": table}, note=verdict)


def departures_section(files: list[GeneratedFile], texts: dict[int, list[str]] | None
                       ) -> Section:
    sd = next((f for f in files if frontier.role(f.rows) == frontier.SD), None)
    runs = {f.label: f.rows for f in files if f is not sd and
            f.rows[0].get("method") not in ("sd", "base")}
    table = departures.departure_table(runs, sd.rows if sd else [],
                                       lambda row: texts[id(row)] if texts else None)
    note = None
    if sd is None:
        note = "no sd rows in this folder: answer-losing departures need them"
    elif not table:
        note = "no sample is wrong where sd's sample of the same problem is right"
    return Section(
        "departures", "4c. Where answers are lost",
        "For every sample that is wrong where sd's sample of the same problem is right: the "
        "first token where the method left the reference top-1 (up to there its response "
        "is sd's), classified as digit/number, operator/symbol, word piece or "
        "whitespace/format, with the p_ref and p_base of the token it emitted and of the "
        "reference top-1 it replaced (sd's token there). The token browser marks the "
        "position.",
        {"departures": departures.departure_summary(table), "departure_tokens": table},
        note=note)


def build_sections(files: list[GeneratedFile], config: AnalyzeConfig, root: Path, out: Path,
                   segmenter: tables.Segmenter, segmentation: str,
                   texts: dict[int, list[str]] | None = None) -> list[Section]:
    """Compute every table (pure functions) and say what each one means."""
    subset = "correctly answered samples" if config.only_correct else "all samples"

    def rows_of(f: GeneratedFile) -> list[dict[str, Any]]:
        return [r for r in f.rows if r.get("correct")] if config.only_correct else f.rows

    runs = {f.label: rows_of(f) for f in files}
    threshold = config.high_ppl_threshold
    high = tables.high_ppl_table(runs, threshold)
    sections = [Section(
        "high_ppl", "1. High-PPL tokens by difficulty",
        f"Share of response tokens whose base-model perplexity exp(-log p_base) exceeds "
        f"{threshold:g} ({subset}). Easy-to-hard gap = relative increase from the easiest to "
        "the hardest level present, 100 * (r_hard - r_easy) / r_easy. Paper (MATH): plain SD "
        "10.59% vs DASD 4.09%; gap 43% vs 7%.",
        {"high_ppl": high, "high_ppl_gap": tables.high_ppl_gap(high)})]
    edges = config.segment_ppl_edges
    sections.append(Section(
        "segment_ppl", "2. Segment-level PPL by difficulty",
        f"{segmentation.capitalize()} (a line ends at a token whose text contains a newline; "
        "blank lines join the line before). Segment PPL = exp(mean -log p_base over its "
        f"tokens); buckets low <= {edges[0]:g} < mid <= {edges[1]:g} < ultra-high ({subset}).",
        {"segment_ppl": tables.segment_ppl_table(runs, segmenter, edges)}))
    align_runs, missing = _with_keys(files, {"base_top3_ref_rank"}, rows_of)
    sections.append(Section(
        "alignment", "3. Alignment statistics by difficulty",
        "At every decoding step, the reference ranks of the base model's top-3 tokens: top-1 "
        "agreement (base top-1 is reference top-1), base top-1 within reference top-3/6, and "
        "all three base top-3 tokens within reference top-3/6. The paper measures them along "
        "reference-decoded sequences (the sd rows); other methods along their own. Paper: "
        f"top-1 agreement 93.11% (level 1) to 90.79% (level 5). {subset.capitalize()}.",
        {"alignment": tables.alignment_table(align_runs)},
        note=f"no base_top3_ref_rank recorded for: {', '.join(missing)}" if missing else None))
    sections.append(Section(
        "categories", "4. DASD token categories",
        "Share of response tokens per category, on correctly answered samples: consistent "
        "(reference top-1 = base top-1), reserved (a reference candidate passed tau), filtered "
        "(no candidate passed; base-selected or hard = forced reference top-1), guarded "
        "(DASD's confidence guard kept the reference top-1 where the paper's rule would not "
        "have). Paper (Llama-3.2-3B, MATH): 92.54 / 5.25 / 2.21%.",
        {"categories": tables.category_table({f.label: f.rows for f in files})}))
    sections += [frontier_section(files, threshold), departures_section(files, texts)]
    found = load_eval_summaries(root, exclude=out) if root.is_dir() else {}
    summaries = {k: found[k] for k in sorted(found, key=plots.method_sort_key)}
    comparison = compare_run_folder(root, list(summaries))
    sections.append(Section(
        "accuracy", "5. Accuracy by difficulty",
        "Held-out accuracy per difficulty level of each evaluated model (origin = untrained; "
        "others trained on the named method's data), from eval/*.summary.json of `dasd run`, "
        f"with {100 * comparison['confidence']:g}% intervals (Wilson; a bootstrap over "
        "problems for sampled evaluation) from the per-problem verdicts (eval/*.jsonl).",
        {"accuracy": tables.accuracy_table(summaries, comparison["accuracy"])},
        note=None if summaries else f"no evaluation results (eval/*.summary.json) under {root}; "
        "run `dasd run` to get accuracy by difficulty"))
    sections.append(Section(
        "comparisons", "5a. Paired comparisons",
        "Each model against origin and sd (and the run's `compare` pairs), problem by "
        "problem: the difference of accuracies (a - b, points) with a paired bootstrap "
        f"interval ({comparison['resamples']} resamples of the problems, seed "
        f"{comparison['seed']}), the problems only a or only b got right, and the exact "
        "McNemar p-value on them (the exact sign test on per-problem accuracies with "
        "eval.samples n > 1). An interval covering 0: the two are not distinguishable on "
        "these problems.",
        {"comparisons": tables.comparison_table(comparison["comparisons"])},
        note=None if comparison["comparisons"] else "no two evaluated models to compare "
        "(eval/*.jsonl)"))
    retention = retention_table(root)
    sections.append(Section(
        "retention", "5b. Retention: what training cost on other tasks",
        "Origin and every trained model on tasks they were not trained on (`retention:` of "
        "`dasd run`), problem by problem: accuracy before and after training, the "
        "difference with its paired bootstrap interval, the problems lost (right->wrong: "
        "forgetting) and gained (wrong->right), and the exact McNemar p-value. The paper's "
        "second claim is that DASD forgets less than plain SD.",
        {"retention": retention},
        note=None if retention else "no retention evaluations (retention/<task>/*.jsonl): "
        "give `dasd run` a `retention:` list of tasks"))
    choices = tables.checkpoint_table(load_checkpoint_choices(root))
    sections.append(Section(
        "checkpoints", "5c. Checkpoint choice",
        "Every checkpoint of every trained model, and the final model, on training problems "
        "its training did not use (`validation:` of `dasd run`; never the test split): "
        "validation accuracy against the step, the chosen checkpoint (the best, a tie going "
        "to the later step) marked. The run's results give test accuracy of the final and "
        "of the chosen model.",
        {"checkpoints": choices},
        note=None if choices else "no checkpoint choice (validation/*/choice.json): give "
        "`dasd run` a `validation: {problems: N}`"))
    by_training = tables.training_level_table(summaries, load_training_levels(root))
    sections.append(Section(
        "training_level", "5d. Accuracy vs training difficulty",
        "Held-out accuracy (all test levels) of models trained on data of one difficulty "
        "level, per decoding method (the paper's Figures 1 and 6): give each method in "
        "`dasd run` a `levels: [k]` to train per level.",
        {"training_level": by_training},
        note=None if by_training else "no model trained on a single level (methods with "
        "`levels: [k]` in `dasd run`): accuracy vs training difficulty skipped"))
    logs = load_training_logs(root)
    loss = tables.training_loss_table({k: logs[k] for k in sorted(logs, key=plots.method_sort_key)})
    sections.append(Section(
        "training_loss", "5e. Training loss",
        "Loss per optimizer step of every trained model, from train/<name>/train_log.jsonl: "
        "SFT's mean token NLL on its training rows; the on-policy methods' loss on their own "
        "rollouts (OPSD's clipped divergence, PW-OPSD's position-weighted one, DA-OPSD's "
        "signed one, which falls below zero by design); `divergence` is the plain clipped "
        "divergence, comparable across the on-policy methods.",
        {"training_loss": loss},
        note=None if loss else f"no training logs (train/*/train_log.jsonl) under {root}"))
    sections.append(onpolicy.onpolicy_section(logs))
    phi_runs, missing = _with_keys(files, {"base_entropy"}, rows_of)
    sections.append(Section(
        "phi", "6. Distribution fit phi",
        "phi = log p_base(token) + H(p_base) in nats, per token: above 0 the token is more "
        "likely than the base model's typical token (probability > exp(-H)). Histogram on "
        f"shared bins, as % of each method's tokens ({subset}).",
        {"phi_hist": tables.phi_table(phi_runs, config.phi_bins),
         "phi_summary": tables.phi_summary(phi_runs)},
        note=f"no base_entropy recorded for: {', '.join(missing)}" if missing else None))
    return sections


def retention_table(root: Path) -> tables.Table:
    """The paired comparisons of every trained model against origin on each retention
    task of a run folder, with the task in front."""
    settings, _ = load_comparison_request(root)
    table = []
    for task, rows in load_retention_rows(root).items():
        scores = {name: problem_scores(r) for name, r in rows.items()}
        names = sorted(scores, key=plots.method_sort_key)
        pairs = [(name, ORIGIN) for name in names if name != ORIGIN]
        result = compare_models(scores, pairs, settings)
        table += [{"task": task, **row} for row in tables.comparison_table(result["comparisons"])]
    return table


def compare_run_folder(root: Path, names: list[str]) -> dict[str, Any]:
    """`compare_models` over the eval rows of a run folder, with the run's settings."""
    settings, extra = load_comparison_request(root)  # (defaults for a single JSONL)
    scores = {name: problem_scores(r) for name, r in load_eval_rows(root, names).items()}
    return compare_models(scores, default_pairs(list(scores), extra), settings)


def draw(section: Section, config: AnalyzeConfig, segmentation: str):
    """The figure of a section, or None when its table is empty."""
    subset = "correct samples" if config.only_correct else "all samples"
    main = next(iter(section.tables.values()))
    if not main:
        return None
    if section.key == "high_ppl":
        return plots.plot_high_ppl(main, section.tables["high_ppl_gap"],
                                   config.high_ppl_threshold, subset)
    if section.key == "segment_ppl":
        return plots.plot_segments(main, tables.segment_buckets(config.segment_ppl_edges),
                                   segmentation, subset)
    if section.key == "alignment":
        return plots.plot_alignment(main, subset)
    if section.key == "categories":
        return plots.plot_categories(main)
    if section.key == "frontier":
        return plots.plot_frontier(main, config.high_ppl_threshold)
    if section.key == "departures":
        return plots.plot_departures(main)
    if section.key == "accuracy":
        return plots.plot_accuracy(main)
    if section.key in ("comparisons", "retention"):
        return plots.plot_comparisons(main)
    if section.key == "checkpoints":
        return plots.plot_checkpoints(main)
    if section.key == "training_level":
        return plots.plot_training_levels(main)
    if section.key == "training_loss":
        return plots.plot_training_loss(main)
    if section.key == "onpolicy":
        return onpolicy.plot_onpolicy(main)
    return plots.plot_phi(main, subset)


def browser_data(files: list[GeneratedFile], texts: dict[int, list[str]] | None,
                 limit: int, marks: dict[tuple[str, str], int] | None = None) -> dict[str, Any]:
    """What the token browser shows: per method, up to `limit` examples with their tokens
    (text, category, p_base band, hover text), reference and base-only answer, and the
    position of an answer-losing departure (`marks[(method, id)]`), which it marks and
    jumps to; examples with one are shown even beyond `limit`."""
    marks = marks or {}
    base_answers = {r["id"]: r.get("completion", "") for f in files for r in f.rows
                    if r.get("method") == "base"}
    examples = {}
    for f in files:
        examples[f.label] = []
        later = [r for r in f.rows[limit:] if (f.label, r["id"]) in marks]
        for row in f.rows[:limit] + later:
            shown = texts[id(row)] if texts else token_texts(None, row["completion_ids"])
            tokens = token_records(row, shown)
            examples[f.label].append({
                "id": row["id"], "level": tables.level_key(row.get("level")),
                "correct": bool(row.get("correct")), "question": row.get("question", ""),
                "reference": row.get("reference", ""), "gold": str(row.get("gold_answer")),
                "extracted": str(row.get("extracted_answer")),
                "base": base_answers.get(row["id"]),
                "dep": marks.get((f.label, row["id"])),
                "t": [[t["text"], t["category"], p_base_band(t["p_base"]), hover(t)]
                      for t in tokens]})
    return {"methods": list(examples), "examples": examples}


def method_summary(sections: list[Section], files: list[GeneratedFile]) -> list[dict[str, Any]]:
    """The key numbers per method (all levels), for the terminal and the report's top."""
    t = {name: table for s in sections for name, table in s.tables.items()}

    def pick(table: str, column: str, method: str, **match) -> Any:
        return next((r[column] for r in t[table] if r["method"] == method and
                     all(r[k] == v for k, v in match.items())), None)

    out = []
    for f in files:
        m = f.label
        out.append({
            "method": m, "samples": len(f.rows), "correct": sum(bool(r.get("correct"))
                                                                 for r in f.rows),
            "high_ppl_percent": pick("high_ppl", "high_ppl_percent", m, level=tables.ALL),
            "gap_percent": pick("high_ppl_gap", "gap_percent", m),
            "top1_agreement_percent": pick("alignment", "percent", m, level=tables.ALL,
                                           statistic="top-1 agreement"),
            **{f"{c}_percent": pick("categories", "percent", m, level=tables.ALL, category=c)
               for c in ("consistent", "reserved", "filtered", "guarded")},
            "kept_problems": pick("frontier", "kept_problems", m),
            "phi_mean": pick("phi_summary", "mean", m)})
    return out


def analyze(config: AnalyzeConfig) -> dict[str, Any]:
    """Run every analysis; write figures, CSVs, analysis.json and report.html; return the
    key numbers, the notes and where everything went."""
    root, out = Path(config.path), config.out_dir()
    files = load_generated(find_generated(root, exclude=out))
    if not files:
        raise DasdError(f"every generated JSONL under {root} is empty")
    files.sort(key=lambda f: plots.method_sort_key(f.label))
    out.mkdir(parents=True, exist_ok=True)
    texts = _texts(files, config) if config.tokenizer != "none" else None
    segmenter, segmentation = _segmenter(config, texts)
    sections = build_sections(files, config, root, out, segmenter, segmentation, texts)
    for section in sections:
        for name, table in section.tables.items():
            write_csv(out / f"{name}.csv", table)
        fig = draw(section, config, segmentation)
        if fig is not None:
            section.figure = plots.save_figure(fig, out, section.key)["png"]
    notes = [s.note for s in sections if s.note]
    if texts is None:
        notes.append("token text unavailable (tokenizer not found offline): the browser "
                     "shows token ids")
    summary = method_summary(sections, files)
    inputs = [{"path": str(f.path), "method": f.label, "rows": len(f.rows), "model": f.model}
              for f in files]
    result = {"dasd_version": __version__, "created": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                    time.gmtime()),
              "path": str(root), "out": str(out), "settings": vars(config).copy(),
              "inputs": inputs, "segmentation": segmentation, "notes": notes,
              "summary": summary, "tables": {n: t for s in sections for n, t in s.tables.items()}}
    (out / "analysis.json").write_text(json.dumps(result, indent=1))
    marks = {(r["method"], r["id"]): r["position"] for s in sections
             for r in s.tables.get("departure_tokens", [])}
    page = render_report(result, sections, browser_data(files, texts, config.browse_limit,
                                                        marks))
    (out / "report.html").write_text(page, encoding="utf-8")
    log.info("analysis of %d file(s) written to %s", len(files), out)
    result["report"] = str(out / "report.html")
    result["figures"] = [str(s.figure) for s in sections if s.figure]
    return result

