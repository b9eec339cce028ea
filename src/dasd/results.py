"""The tables of a run's results (`results.md`, the console, the HTML report): accuracy
per method and level with intervals, the paired comparisons, retention."""

from __future__ import annotations

from typing import Any

from dasd.analysis.compare import ALL
from dasd.training.onpolicy import METHODS as ONPOLICY_METHODS


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


CHECKPOINT_LEGEND = ("Checkpoint choice (`validation:`): every checkpoint of a trained model "
                     "and the final model answered held-out training problems (never the test "
                     "split); the best there is chosen (a tie goes to the later step), and "
                     "both the final and the chosen model answered the test split.")


def checkpoint_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per trained model (and training seed): the validation accuracy of each checkpoint,
    the step chosen, and test accuracy of the final and of the chosen model."""
    header = ["model", "validation accuracy by step", "chosen step (final)",
              "validation chosen / final", "test final", "test chosen"]
    rows = []
    for name, result in report["methods"].items():
        runs = ([(f"{name} seed {s}", r) for s, r in result["seeds"].items()]
                if "seeds" in result else [(name, result)])
        for label, run in runs:
            choice = run.get("validation")
            if not choice:
                continue
            chosen, final = choice["chosen"], choice["final"]
            curve = ", ".join(f"{p['step']}: {p['accuracy']:.2f}" for p in choice["points"])
            rows.append([label, curve, f"{chosen['step']} ({final['step']})",
                         f"{chosen['accuracy']:.3f} / {final['accuracy']:.3f}",
                         _accuracy_cell(run.get("eval")), _accuracy_cell(run.get("eval_chosen"))])
    return header, rows


def _accuracy_cell(summary: dict[str, Any] | None) -> str:
    return f"{summary['accuracy']:.3f} ({_problems(summary)})" if summary else "-"


def results_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The results table as header + rows of strings (shared by terminal and Markdown)."""
    levels = _levels(report)
    sampled = any("pass@k" in r.get("eval", {}) for r in report["methods"].values())
    checkers = sorted({name for r in report["methods"].values()
                       for name in r.get("eval", {}).get("other_checks", {})})
    header = (["method", "accuracy (n)"] + ["pass@k", "maj@n"] * sampled
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
            acc += [f"{ev[key]:.3f}" if ev and key in ev else "-" for key in ("pass@k", "maj@k")]
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
        for stage in ("generate", "train", "eval", "validation", "eval_chosen")] + [
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
             RETENTION_LEGEND),
            ("Checkpoint choice", checkpoint_rows(report), CHECKPOINT_LEGEND)):
        if rows:
            lines += ["", f"## {title}", "", *_markdown_table(header, rows), "", legend]
    peak = run_peak_mb(report)
    memory = f"; peak resident memory {peak:.0f} MB" if peak is not None else ""
    lines += ["", f"Total wall time: {report['total_seconds']:.0f} s{memory}. " + TABLE_LEGEND]
    return "\n".join(lines) + "\n"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(row) + " |" for row in rows]]
