"""The paper's analyses as pure functions: generated rows in, a table (list of dicts) out.

Every function takes `runs`, a mapping of method label -> generated rows, and returns one
row per (method, difficulty level[, series]) with the counts behind each percentage, so a
reader can recompute every number. Levels are strings ("1".."5", "none" for problems
without a level) plus "all" for all problems of the method together. Percentages are in
percent (0-100). The figures in `plots.py` draw exactly these numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dasd.stats import CATEGORY_NAMES, high_ppl_mask, perplexity, phi

Rows = Sequence[dict[str, Any]]
Runs = Mapping[str, Rows]
Table = list[dict[str, Any]]


@dataclass
class Section:
    """One analysis in the report: its figure (if drawn), tables and explanation."""

    key: str
    title: str
    about: str
    tables: dict[str, Table]
    figure: Path | None = None
    note: str | None = None

ALL = "all"
NO_LEVEL = "none"


def level_key(level: Any) -> str:
    return NO_LEVEL if level is None else str(level)


def level_sort_key(key: str) -> tuple[int, float, str]:
    """Numeric levels ascending, then other names, then "none", then "all"."""
    try:
        return (0, float(key), key)
    except ValueError:
        return ({NO_LEVEL: 2, ALL: 3}.get(key, 1), 0.0, key)


def numeric_levels(keys: Sequence[str]) -> list[str]:
    return sorted((k for k in keys if level_sort_key(k)[0] == 0), key=level_sort_key)


def by_level(rows: Rows) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(level, rows) for every level present, in order, then ("all", every row)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(level_key(row.get("level")), []).append(row)
    for key in sorted(groups, key=level_sort_key):
        yield key, groups[key]
    yield ALL, list(rows)


def _percent(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole else None


# 1. High-PPL tokens ------------------------------------------------------------------------

def high_ppl_table(runs: Runs, threshold: float = 2.5) -> Table:
    """Share of response tokens with base-model perplexity exp(-log p_base) > threshold."""
    table = []
    for method, rows in runs.items():
        for level, group in by_level(rows):
            flags = [f for r in group for f in high_ppl_mask(r["tokens"]["p_base"], threshold)]
            table.append({"method": method, "level": level, "samples": len(group),
                          "tokens": len(flags), "high_ppl_tokens": sum(flags),
                          "high_ppl_percent": _percent(sum(flags), len(flags))})
    return table


def high_ppl_gap(table: Table) -> Table:
    """Easy-to-hard gap per method: relative increase of the high-PPL ratio from the
    easiest to the hardest numeric level, 100 * (r_hard - r_easy) / r_easy (percent).

    None when the method has fewer than two numeric levels or r_easy is 0 (undefined).
    """
    gaps = []
    for method in dict.fromkeys(r["method"] for r in table):
        ratios = {r["level"]: r["high_ppl_percent"] for r in table if r["method"] == method}
        levels = [k for k in numeric_levels(list(ratios)) if ratios[k] is not None]
        easy, hard = (levels[0], levels[-1]) if len(levels) >= 2 else (None, None)
        r_easy, r_hard = ratios.get(easy), ratios.get(hard)
        gap = 100.0 * (r_hard - r_easy) / r_easy if easy and r_easy else None
        gaps.append({"method": method, "easy_level": easy, "hard_level": hard,
                     "easy_high_ppl_percent": r_easy, "hard_high_ppl_percent": r_hard,
                     "gap_percent": gap})
    return gaps


# 2. Segment-level PPL ----------------------------------------------------------------------

Segmenter = Callable[[dict[str, Any]], list[tuple[int, int]]]


def line_segments(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Lines: a segment ends with a token whose text holds a newline; a segment with no
    visible text (a blank line) joins the segment before it. Spans are [start, end)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for i, text in enumerate(texts):
        if "\n" in text or i == len(texts) - 1:
            visible = "".join(texts[start:i + 1]).strip()
            if not visible and spans:
                spans[-1] = (spans[-1][0], i + 1)
            else:
                spans.append((start, i + 1))
            start = i + 1
    return spans


def window_segments(n: int, size: int) -> list[tuple[int, int]]:
    """Fixed windows of `size` tokens (the last one may be shorter)."""
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def segment_buckets(edges: Sequence[float]) -> list[str]:
    low, high = edges
    return [f"low (PPL <= {low:g})", f"mid ({low:g} < PPL <= {high:g})",
            f"ultra-high (PPL > {high:g})"]


def bucket_of(ppl: float, edges: Sequence[float]) -> int:
    return 0 if ppl <= edges[0] else 1 if ppl <= edges[1] else 2


def segment_ppl_table(runs: Runs, segmenter: Segmenter,
                      edges: Sequence[float] = (1.5, 3.0)) -> Table:
    """Share of segments whose base-model perplexity exp(mean -log p_base) falls in each
    bucket: low (<= edges[0]), mid, ultra-high (> edges[1])."""
    names = segment_buckets(edges)
    table = []
    for method, rows in runs.items():
        for level, group in by_level(rows):
            counts = [0, 0, 0]
            for row in group:
                p_base = row["tokens"]["p_base"]
                for start, end in segmenter(row):
                    counts[bucket_of(perplexity(p_base[start:end]), edges)] += 1
            total = sum(counts)
            table += [{"method": method, "level": level, "bucket": name, "segments": count,
                       "total_segments": total, "percent": _percent(count, total)}
                      for name, count in zip(names, counts, strict=True)]
    return table


# 3. Alignment statistics -------------------------------------------------------------------

# name -> test on the reference ranks (r1, r2, r3) of the base model's top-3 tokens.
ALIGNMENT_STATS: dict[str, Callable[[Sequence[int]], bool]] = {
    "top-1 agreement": lambda r: r[0] == 1,
    "base top-1 in ref top-3": lambda r: r[0] <= 3,
    "base top-1 in ref top-6": lambda r: r[0] <= 6,
    "base top-3 in ref top-3": lambda r: max(r) <= 3,
    "base top-3 in ref top-6": lambda r: max(r) <= 6,
}


def alignment_table(runs: Runs) -> Table:
    """Per decoding step, where the base model's top tokens sit in the reference ranking.

    "base top-3 in ref top-k" means all three of the base top-3 tokens are within the
    reference top-k (for k=3: the two top-3 sets are equal). The paper measures along
    reference-decoded sequences, i.e. the `sd` rows; other methods are measured along
    their own sequences.
    """
    table = []
    for method, rows in runs.items():
        for level, group in by_level(rows):
            ranks = [r for row in group for r in row["tokens"]["base_top3_ref_rank"]]
            for name, test in ALIGNMENT_STATS.items():
                hits = sum(test(r) for r in ranks)
                table.append({"method": method, "level": level, "statistic": name,
                              "steps": len(ranks), "hits": hits,
                              "percent": _percent(hits, len(ranks))})
    return table


# 4. Token categories -----------------------------------------------------------------------

FILTERED = "filtered"


def category_table(runs: Runs, only_correct: bool = True) -> Table:
    """Share of response tokens per DASD category (consistent / reserved / base-selected /
    hard, plus filtered = base-selected + hard), on correctly answered samples."""
    table = []
    for method, all_rows in runs.items():
        rows = [r for r in all_rows if r.get("correct")] if only_correct else all_rows
        for level, group in by_level(rows):
            counts = dict.fromkeys(CATEGORY_NAMES, 0)
            for row in group:
                for code in row["tokens"]["category"]:
                    counts[CATEGORY_NAMES[code]] += 1
            counts[FILTERED] = counts["base-selected"] + counts["hard"]
            total = sum(counts[c] for c in CATEGORY_NAMES)
            table += [{"method": method, "level": level, "category": name,
                       "samples": len(group), "tokens": count, "total_tokens": total,
                       "percent": _percent(count, total)} for name, count in counts.items()]
    return table


# 5. Accuracy by difficulty -----------------------------------------------------------------

def accuracy_table(summaries: Mapping[str, dict[str, Any]],
                   intervals: Mapping[str, Mapping[str, dict[str, Any]]] | None = None
                   ) -> Table:
    """Held-out accuracy per level of every evaluated model (`eval/<name>.summary.json`),
    with its interval where `intervals[model][level]` has one (`compare_models`).

    `of` is the size of the test split and `subset` says whether the evaluation used fewer
    problems (an eval limit or levels): such a score is not the benchmark's."""
    intervals = intervals or {}
    table = []
    for method, summary in summaries.items():
        levels = sorted(summary["per_level"], key=level_sort_key)
        stats = [(k, summary["per_level"][k]) for k in levels]
        stats.append((ALL, {"n": summary.get("n"), "correct": summary.get("correct"),
                            "accuracy": summary["accuracy"]}))
        drawn = summary.get("problems") or {}
        for level, s in stats:
            table.append({"method": method, "level": level, "n": s.get("n"),
                          "of": drawn.get("of") if level == ALL else None,
                          "subset": bool(drawn.get("subset")),
                          "correct": s.get("correct"), "accuracy": s["accuracy"],
                          "accuracy_percent": 100.0 * s["accuracy"],
                          **_interval_percent(intervals.get(method, {}).get(level))})
    return table


def _interval_percent(interval: dict[str, Any] | None) -> dict[str, Any]:
    if not interval or interval.get("ci_low") is None:
        return {"ci_low_percent": None, "ci_high_percent": None}
    return {"ci_low_percent": 100.0 * interval["ci_low"],
            "ci_high_percent": 100.0 * interval["ci_high"]}


def comparison_table(comparisons: list[dict[str, Any]]) -> Table:
    """Paired comparisons (`compare_models`), in points, per level."""
    return [{"a": c["a"], "b": c["b"], "level": c["level"], "n": c["n"],
             "accuracy_a_percent": 100.0 * c["accuracy_a"],
             "accuracy_b_percent": 100.0 * c["accuracy_b"],
             "difference_points": 100.0 * c["difference"],
             "ci_low_points": 100.0 * c["ci_low"], "ci_high_points": 100.0 * c["ci_high"],
             "a_better": c["a_better"], "b_better": c["b_better"], "p_value": c["p_value"],
             "test": c["test"], "distinguishable": c["distinguishable"],
             "verdict": c["verdict"]} for c in comparisons]


def training_level_table(summaries: Mapping[str, dict[str, Any]],
                         trained_on: Mapping[str, tuple[str, list[int] | None]]) -> Table:
    """Held-out accuracy (all test levels) of every model trained on a single difficulty
    level, by decoding method and training level (the paper's Figures 1 and 6).

    `trained_on[name] = (method, levels)` comes from the generate config of each model.
    """
    table = []
    for name, summary in summaries.items():
        method, levels = trained_on.get(name, (None, None))
        if method is None or not levels or len(levels) != 1:
            continue
        table.append({"method": method, "train_level": str(levels[0]), "model": name,
                      "n": summary.get("n"), "correct": summary.get("correct"),
                      "accuracy": summary["accuracy"],
                      "accuracy_percent": 100.0 * summary["accuracy"]})
    return sorted(table, key=lambda r: (r["method"], level_sort_key(r["train_level"])))


# 5e. training loss per step --------------------------------------------------------------

def checkpoint_table(choices: Mapping[str, dict[str, Any]]) -> Table:
    """One row per (model, checkpoint): its validation accuracy, and whether it is the
    final model and the one chosen (`dasd run` with `validation:`)."""
    return [{"method": name, "step": point["step"], "accuracy": point["accuracy"],
             "n": point["n"], "final": point["final"],
             "chosen": point["step"] == choice["chosen"]["step"]}
            for name, choice in choices.items() for point in choice["points"]]


def training_loss_table(logs: Mapping[str, Sequence[dict[str, Any]]]) -> Table:
    """One row per (model, logged step) with its loss, from each model's train_log.jsonl.

    `loss_kind` tells SFT's token NLL from an on-policy method's divergence (rows that log
    one); `divergence` is the plain clipped divergence on-policy trainers log beside it."""
    table = []
    for name, rows in logs.items():
        kind = "divergence loss" if any("divergence" in r for r in rows) else "token NLL"
        for row in rows:
            if "loss" in row and "step" in row:
                table.append({"method": name, "step": row["step"], "loss": row["loss"],
                              "divergence": row.get("divergence"), "loss_kind": kind})
    return table


# 6. phi = log p_base + H(p_base) -----------------------------------------------------------

def phi_values(rows: Rows) -> list[float]:
    return [v for r in rows for v in phi(r["tokens"]["p_base"], r["tokens"]["base_entropy"])]


def phi_edges(runs: Runs, bins: int = 40) -> np.ndarray:
    """Shared bin edges: `bins` equal bins from the floor to the ceiling (in 0.5 nats) of
    every method's phi values."""
    values = [v for rows in runs.values() for v in phi_values(rows)]
    if not values:
        return np.linspace(-1.0, 1.0, bins + 1)
    low, high = math.floor(2 * min(values)) / 2, math.ceil(2 * max(values)) / 2
    return np.linspace(low, high if high > low else low + 0.5, bins + 1)


def phi_table(runs: Runs, bins: int = 40) -> Table:
    """Histogram of phi per method, on shared bins: tokens and percent of the method's
    tokens per bin [left, right) (the last bin includes its right edge)."""
    edges = phi_edges(runs, bins)
    table = []
    for method, rows in runs.items():
        values = phi_values(rows)
        counts, _ = np.histogram(values, bins=edges)
        table += [{"method": method, "bin_left": float(edges[i]), "bin_right": float(edges[i + 1]),
                   "tokens": int(c), "percent": _percent(int(c), len(values))}
                  for i, c in enumerate(counts)]
    return table


def phi_summary(runs: Runs) -> Table:
    table = []
    for method, rows in runs.items():
        values = phi_values(rows)
        table.append({"method": method, "tokens": len(values),
                      "mean": float(np.mean(values)) if values else None,
                      "median": float(np.median(values)) if values else None,
                      "negative_percent": _percent(sum(v < 0 for v in values), len(values))})
    return table
