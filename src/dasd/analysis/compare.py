"""Paired comparisons of evaluated models, with their uncertainty.

Every model of a run answers the same test problems, so two models are compared problem
by problem. Each problem gets a score: its verdict (1 or 0), or with `eval.samples` n > 1
the share of its samples answered correctly (Avg@n's per-problem term). Then

- an accuracy's interval is Wilson's (scipy's `binomtest(...).proportion_ci`) for one
  verdict per problem, else a percentile bootstrap of the mean over problems;
- a difference of accuracies gets a paired percentile bootstrap (scipy's `bootstrap`,
  `paired=True`): problems are resampled, both models' scores of a problem staying
  together, never samples within a problem;
- its p-value is the exact two-sided sign test on the problems where the two scores
  differ (`binomtest(wins, wins + losses, 0.5)`), which on 0/1 verdicts is the exact
  McNemar test on the discordant pairs.

A difference whose interval covers zero is reported as "not distinguishable".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from dasd.errors import DasdError

ALL = "all"
ORIGIN, SD = "origin", "sd"


@dataclass
class CompareSettings:
    """How comparisons are computed (`dasd run` and `dasd analyze`)."""

    confidence: float = field(default=0.95, metadata={
        "help": "confidence level of every interval (accuracy and paired difference)"})
    resamples: int = field(default=10_000, metadata={
        "help": "bootstrap resamples of the paired difference"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap resampling"})

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise DasdError(f"confidence must be in [0.5, 1), e.g. 0.95; got {self.confidence}")
        if self.resamples < 100:
            raise DasdError(f"resamples must be >= 100 (default 10000); got {self.resamples}")


Scores = dict[str, tuple[float, str]]  # problem id -> (score in [0, 1], level)


def problem_scores(rows: Iterable[Mapping[str, Any]]) -> Scores:
    """Per-problem scores of eval rows (`dasd eval`'s JSONL): the verdict, or the share
    of correct samples. Rows of several seeds with the same id are averaged."""
    sums: dict[str, list[float]] = {}
    levels: dict[str, str] = {}
    for row in rows:
        samples = row.get("samples")
        score = (row["n_correct"] / len(samples) if samples else float(bool(row["correct"])))
        sums.setdefault(str(row["id"]), []).append(score)
        levels[str(row["id"])] = "none" if row.get("level") is None else str(row["level"])
    return {i: (sum(v) / len(v), levels[i]) for i, v in sums.items()}


def _binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def accuracy_interval(scores: Sequence[float], settings: CompareSettings) -> dict[str, Any]:
    """Accuracy with its interval: Wilson for 0/1 verdicts, else a bootstrap over problems."""
    values = np.asarray(scores, dtype=float)
    n = len(values)
    if n == 0:
        return {"n": 0, "accuracy": None, "ci_low": None, "ci_high": None, "interval": None}
    if _binary(values):
        ci = stats.binomtest(int(values.sum()), n).proportion_ci(settings.confidence, "wilson")
        low, high, how = ci.low, ci.high, "wilson"
    else:
        low, high = _bootstrap((values,), _mean, settings, paired=False)
        how = "bootstrap"
    return {"n": n, "accuracy": float(values.mean()), "ci_low": float(low),
            "ci_high": float(high), "interval": how}


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def _difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis) - y.mean(axis=axis)


def _bootstrap(data: tuple[np.ndarray, ...], statistic, settings: CompareSettings,
               paired: bool) -> tuple[float, float]:
    if len(data[0]) < 2:
        value = float(statistic(*data))
        return value, value
    result = stats.bootstrap(data, statistic, paired=paired, vectorized=True,
                             n_resamples=settings.resamples, method="percentile",
                             confidence_level=settings.confidence,
                             rng=np.random.default_rng(settings.seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_comparison(a: Scores, b: Scores, settings: CompareSettings,
                      level: str = ALL) -> dict[str, Any] | None:
    """Model a against model b on the problems both answered (of `level`, or all)."""
    ids = sorted(i for i in set(a) & set(b) if level == ALL or a[i][1] == level)
    if not ids:
        return None
    x = np.array([a[i][0] for i in ids])
    y = np.array([b[i][0] for i in ids])
    low, high = _bootstrap((x, y), _difference, settings, paired=True)
    wins, losses = int((x > y).sum()), int((x < y).sum())
    p_value = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"level": level, "n": len(ids), "accuracy_a": float(x.mean()),
            "accuracy_b": float(y.mean()), "difference": float(x.mean() - y.mean()),
            "ci_low": low, "ci_high": high, "a_better": wins, "b_better": losses,
            "p_value": float(p_value),
            "test": "exact McNemar" if _binary(x) and _binary(y) else "exact sign test",
            "distinguishable": not low <= 0.0 <= high}


def verdict(a: str, b: str, comparison: Mapping[str, Any], confidence: float) -> str:
    """The comparison in plain words."""
    n = comparison["n"]
    if not comparison["distinguishable"]:
        return f"{a} is not distinguishable from {b} at n = {n}"
    points = 100 * comparison["difference"]
    direction = "above" if points > 0 else "below"
    return (f"{a} is {abs(points):.1f} points {direction} {b} at n = {n} "
            f"({100 * confidence:g}% interval excludes 0; p = {comparison['p_value']:.2g})")


def default_pairs(names: Sequence[str], extra: Sequence[Sequence[str]] = ()
                  ) -> list[tuple[str, str]]:
    """Each model against origin and against sd (where they were evaluated), then the
    pairs a config names (`compare:`), without repeats."""
    pairs: list[tuple[str, str]] = []
    for baseline in (ORIGIN, SD):
        if baseline in names:
            pairs += [(name, baseline) for name in names if name not in (ORIGIN, baseline)]
    pairs += [(str(p[0]), str(p[1])) for p in extra]
    return list(dict.fromkeys(pairs))


def compare_models(scores: Mapping[str, Scores], pairs: Sequence[tuple[str, str]],
                   settings: CompareSettings) -> dict[str, Any]:
    """Every model's accuracy with its interval, and every pair's paired comparison,
    overall and per level."""
    accuracies = {}
    for name, model in scores.items():
        levels = sorted({lvl for _, lvl in model.values()}, key=_level_key)
        accuracies[name] = {ALL: accuracy_interval([s for s, _ in model.values()], settings)}
        if levels != ["none"]:
            accuracies[name].update({lvl: accuracy_interval(
                [s for s, x in model.values() if x == lvl], settings) for lvl in levels})
    comparisons = []
    for a, b in pairs:
        if a not in scores or b not in scores:
            continue
        levels = sorted({lvl for _, lvl in scores[a].values()}, key=_level_key)
        for level in [ALL] + ([] if levels == ["none"] else levels):
            result = paired_comparison(scores[a], scores[b], settings, level)
            if result is not None:
                comparisons.append({"a": a, "b": b, **result,
                                    "verdict": verdict(a, b, result, settings.confidence)})
    return {"confidence": settings.confidence, "resamples": settings.resamples,
            "seed": settings.seed, "accuracy": accuracies, "comparisons": comparisons}


def _level_key(level: str) -> tuple[bool, int, str]:
    return (not level.isdigit(), int(level) if level.isdigit() else 0, level)
