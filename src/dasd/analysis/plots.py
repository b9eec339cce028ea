"""One figure per analysis, drawn from its table and nothing else.

Each method keeps its colour, hatch, marker and line style in every figure (`method_style`);
hatches, markers and line styles keep the figures readable in grayscale. Every drawn value
carries a `gid` naming its table row ("method|level[|series]"), so tests can read the
numbers back from the figure and compare them with the CSV. Figures are built with
`matplotlib.figure.Figure` (no pyplot state, no display needed).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from dasd.analysis.departures import TOKEN_CLASSES, UNKNOWN
from dasd.analysis.frontier import PAPER, SD, SUBSETS, guard_sweep
from dasd.analysis.tables import (
    ALIGNMENT_STATS,
    ALL,
    Table,
    level_sort_key,
)
from dasd.stats import CATEGORY_NAMES


@dataclass(frozen=True)
class Style:
    color: str
    hatch: str
    marker: str
    linestyle: str


# Okabe-Ito colour-blind-safe colours, one per method of the toolkit.
METHOD_STYLES = {  # also the order of methods in figures and tables: baselines first
    "origin": Style("#999999", "xx", "D", "-."),
    "base": Style("#555555", "..", "s", ":"),
    "sd": Style("#E69F00", "//", "^", "--"),
    "hint": Style("#009E73", "\\\\", "v", (0, (5, 1, 1, 1))),
    "mask-ppl": Style("#D55E00", "++", "P", (0, (3, 1))),
    "profit": Style("#CC79A7", "oo", "X", (0, (1, 1))),
    "opsd": Style("#56B4E9", "--", "*", (0, (5, 2, 1, 2))),
    "pw-opsd": Style("#8C564B", "||", "h", (0, (2, 2))),
    "da-opsd": Style("#7F3C8D", "**", "<", (0, (4, 1, 1, 1, 1, 1))),
    "dasd": Style("#0072B2", "", "o", "-"),
}
_EXTRA = [Style(c, h, m, ls) for c, h, m, ls in [
    ("#1B9E77", "\\\\\\", ">", "--"), ("#E7298A", "///", "p", ":"),
    ("#66A61E", "xxx", "d", "-."), ("#A6761D", "...", "8", "-"),
    ("#E6AB02", "+++", "H", "--"), ("#666666", "ooo", "1", ":")]]

CATEGORY_COLORS = {"consistent": "#CFE8CF", "reserved": "#F6C85F",
                   "base-selected": "#9B59B6", "hard": "#C0392B", "guarded": "#5DADE2"}
CATEGORY_HATCHES = {"consistent": "", "reserved": "..", "base-selected": "xx", "hard": "//",
                    "guarded": "\\\\"}
BUCKET_COLORS = ["#C7E9C0", "#FDAE6B", "#A50F15"]
BUCKET_HATCHES = ["", "..", "//"]


def method_style(method: str) -> Style:
    """The fixed style of a method name (unknown names: a stable pick by name hash)."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    return _EXTRA[zlib.crc32(method.encode()) % len(_EXTRA)]


def method_sort_key(method: str) -> tuple[int, str]:
    """Known methods in `METHOD_STYLES` order, then other names alphabetically."""
    order = list(METHOD_STYLES)
    return (order.index(method) if method in order else len(order), method)


def _methods(table: Table) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in table))


def _levels(table: Table, with_all: bool = True) -> list[str]:
    levels = sorted({r["level"] for r in table}, key=level_sort_key)
    return levels if with_all else [k for k in levels if k != ALL]


def _level_label(level: str) -> str:
    return "all levels" if level == ALL else f"level {level}" if level[:1].isdigit() else level


def _value(table: Table, column: str, **match) -> float | None:
    for row in table:
        if all(row[k] == v for k, v in match.items()):
            return row[column]
    return None


def save_figure(fig: Figure, out_dir: Path, name: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"png": out_dir / f"{name}.png", "pdf": out_dir / f"{name}.pdf"}
    fig.savefig(paths["png"], dpi=150, metadata={"Software": None})
    fig.savefig(paths["pdf"], metadata={"CreationDate": None})
    return paths


def _grouped_bars(ax, table: Table, column: str, levels: list[str], labels: dict[str, str]):
    methods = _methods(table)
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        style = method_style(method)
        for j, level in enumerate(levels):
            value = _value(table, column, method=method, level=level)
            if value is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            (bar,) = ax.bar(x, value, width, color=style.color, hatch=style.hatch,
                            edgecolor="black", linewidth=0.6,
                            label=labels.get(method, method) if j == 0 else None)
            bar.set_gid(f"{method}|{level}")
            ax.annotate(f"{value:.1f}", (x, value), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(levels)), [_level_label(k) for k in levels])


def plot_high_ppl(table: Table, gaps: Table, threshold: float, subset: str) -> Figure:
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    labels = {}
    for g in gaps:
        gap = g["gap_percent"]
        labels[g["method"]] = (f"{g['method']} (L{g['easy_level']}->L{g['hard_level']} gap "
                               f"{gap:+.0f}%)" if gap is not None else g["method"])
    _grouped_bars(ax, table, "high_ppl_percent", _levels(table), labels)
    ax.set_title(f"High-PPL tokens (base-model PPL > {threshold:g}) by difficulty, "
                 f"{subset}")
    ax.set_xlabel("difficulty level")
    ax.set_ylabel("high-PPL tokens (% of response tokens)")
    ax.set_ylim(0, max([r["high_ppl_percent"] or 0 for r in table] + [1]) * 1.18)
    ax.legend(title="method (relative easy-to-hard gap)", fontsize=8, title_fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _stacked_panels(table: Table, series_column: str, series: Sequence[str],
                    colors: Sequence[str], hatches: Sequence[str], title: str, ylabel: str,
                    legend_title: str, count: tuple[str, str]) -> tuple[Figure, list]:
    """One panel per method; per level a bar stacking the series' percentages. `count` =
    (column, unit) of the number printed under each level, e.g. ("samples", "samples")."""
    methods = _methods(table)
    levels = _levels(table)
    fig = Figure(figsize=(max(0.75 * len(levels) * len(methods) + 2.5, 7), 4.4),
                 layout="constrained")
    axes = fig.subplots(1, max(len(methods), 1), sharey=True, squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=False):
        bottoms = [0.0] * len(levels)
        for name, color, hatch in zip(series, colors, hatches, strict=True):
            for j, level in enumerate(levels):
                value = _value(table, "percent", method=method, level=level,
                               **{series_column: name})
                if value is None:
                    continue
                (bar,) = ax.bar(j, value, 0.7, bottom=bottoms[j], color=color, hatch=hatch,
                                edgecolor="black", linewidth=0.6)
                bar.set_gid(f"{method}|{level}|{name}")
                bottoms[j] += value
        ticks = [f"{_level_label(k)}\n{_value(table, count[0], method=method, level=k) or 0}"
                 f" {count[1]}" for k in levels]
        ax.set_xticks(range(len(levels)), ticks, fontsize=8)
        ax.set_title(method, color=method_style(method).color, fontweight="bold")
        ax.set_xlabel("difficulty level")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel(ylabel)
    handles = [Patch(facecolor=c, hatch=h, edgecolor="black", label=n)
               for n, c, h in zip(series, colors, hatches, strict=True)]
    fig.legend(handles=handles, title=legend_title, loc="outside right center", fontsize=8,
               title_fontsize=8)
    fig.suptitle(title)
    return fig, list(axes)


def plot_segments(table: Table, buckets: Sequence[str], segmentation: str,
                  subset: str) -> Figure:
    fig, _ = _stacked_panels(table, "bucket", buckets, BUCKET_COLORS, BUCKET_HATCHES,
                             f"Segment-level base-model PPL by difficulty ({segmentation}; "
                             f"{subset})", "segments (% of the level's segments)",
                             "segment PPL", ("total_segments", "segm."))
    return fig


def plot_categories(table: Table) -> Figure:
    fig, axes = _stacked_panels(table, "category", CATEGORY_NAMES,
                                [CATEGORY_COLORS[c] for c in CATEGORY_NAMES],
                                [CATEGORY_HATCHES[c] for c in CATEGORY_NAMES],
                                "DASD token categories by difficulty (correctly answered "
                                "samples)", "tokens (% of response tokens)", "category",
                                ("samples", "correct"))
    for ax, method in zip(axes, _methods(table), strict=False):
        share = {c: _value(table, "percent", method=method, level=ALL, category=c)
                 for c in (*CATEGORY_NAMES, "filtered")}
        if share["consistent"] is None:
            ax.text(0.5, 0.5, "no correctly answered samples", ha="center",
                    transform=ax.transAxes)
            continue
        guarded = f", guarded {share['guarded']:.2f}%" if share["guarded"] else ""
        ax.text(0.02, 0.03, f"all levels: consistent {share['consistent']:.2f}%\n"
                f"reserved {share['reserved']:.2f}%, filtered {share['filtered']:.2f}%\n"
                f"(base-selected {share['base-selected']:.2f}%, hard {share['hard']:.2f}%)"
                f"{guarded}",
                transform=ax.transAxes, fontsize=7, va="bottom",
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
    return fig


def _lines(ax, table: Table, column: str, levels: list[str], method: str, gid: str,
           label: str | None) -> None:
    style = method_style(method)
    xs, ys = [], []
    for j, level in enumerate(levels):
        value = _value(table, column, method=method, level=level)
        if value is not None:
            xs.append(j)
            ys.append(value)
    (line,) = ax.plot(xs, ys, color=style.color, marker=style.marker,
                      linestyle=style.linestyle, label=label, markeredgecolor="black",
                      markeredgewidth=0.5)
    line.set_gid(gid)


def plot_alignment(table: Table, subset: str) -> Figure:
    stats = list(ALIGNMENT_STATS)
    levels = _levels(table, with_all=False)
    fig = Figure(figsize=(3.3 * len(stats), 3.9), layout="constrained")
    axes = fig.subplots(1, len(stats), sharey=False)
    for k, (ax, stat) in enumerate(zip(axes, stats, strict=True)):
        part = [r for r in table if r["statistic"] == stat]
        for method in _methods(part):
            _lines(ax, part, "percent", levels, method, f"{method}|{stat}",
                   method if k == 0 else None)
        ax.set_xticks(range(len(levels)), [_level_label(x) for x in levels], rotation=30)
        ax.set_title(stat, fontsize=10)
        ax.set_xlabel("difficulty level")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% of decoding steps")
    fig.legend(loc="outside right center", title="method", fontsize=8, title_fontsize=8)
    fig.suptitle(f"Alignment of base and reference next-token rankings by difficulty "
                 f"({subset})")
    return fig


def plot_accuracy(table: Table) -> Figure:
    """Accuracy per level, one line per model, with its interval as error bars (models
    shifted apart a little so their bars do not cover each other)."""
    levels = _levels(table, with_all=False)
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    methods = _methods(table)
    for k, method in enumerate(methods):
        overall = _value(table, "accuracy_percent", method=method, level=ALL)
        low = _value(table, "ci_low_percent", method=method, level=ALL)
        high = _value(table, "ci_high_percent", method=method, level=ALL)
        span = f" [{low:.1f}, {high:.1f}]" if low is not None else ""
        _lines(ax, table, "accuracy_percent", levels, method, method,
               f"{method} (all levels {overall:.1f}%{span})")
        _error_bars(ax, table, levels, method, 0.06 * (k - (len(methods) - 1) / 2))
    _accuracy_axes(ax, levels, "Held-out accuracy by difficulty level",
                   "difficulty level of the test problem", "accuracy (% of problems)",
                   "model (training data)")
    return fig


def _error_bars(ax, table: Table, levels: list[str], method: str, shift: float) -> None:
    points = [(j + shift, r) for j, level in enumerate(levels) for r in table
              if r["method"] == method and r["level"] == level
              and r.get("ci_low_percent") is not None]
    if not points:
        return
    xs = [x for x, _ in points]
    ys = [r["accuracy_percent"] for _, r in points]
    below = [r["accuracy_percent"] - r["ci_low_percent"] for _, r in points]
    above = [r["ci_high_percent"] - r["accuracy_percent"] for _, r in points]
    bars = ax.errorbar(xs, ys, yerr=[below, above], fmt="none", capsize=3, linewidth=1,
                       ecolor=method_style(method).color, alpha=0.8)
    for part in bars.lines[2]:
        part.set_gid(f"{method}|interval")


def plot_comparisons(table: Table) -> Figure:
    """Paired differences (all levels) with their intervals; the zero line is 'no
    difference'."""
    rows = [r for r in table if r["level"] == ALL]
    retention = any("task" in r for r in rows)
    fig = Figure(figsize=(7, 0.9 + 0.45 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    for y, r in enumerate(rows):
        color = method_style(r["a"]).color if r["distinguishable"] else "0.55"
        ax.errorbar([r["difference_points"]], [y],
                    xerr=[[r["difference_points"] - r["ci_low_points"]],
                          [r["ci_high_points"] - r["difference_points"]]],
                    fmt="o", color=color, capsize=4)[0].set_gid(
            (f"{r['task']}|" if retention else "") + f"{r['a']}-{r['b']}")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [(f"{r['task']}: " if retention else "")
                                     + f"{r['a']} - {r['b']} (n = {r['n']}, p = "
                                     f"{r['p_value']:.2g})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy difference a - b (points), paired bootstrap interval")
    ax.set_title(("Retention: trained - origin on other tasks" if retention else
                  "Paired comparisons") + " (grey: interval covers 0)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_training_levels(table: Table) -> Figure:
    """Accuracy vs the difficulty level of the training data, one line per method."""
    by_level = [{**r, "level": r["train_level"]} for r in table]
    levels = _levels(by_level, with_all=False)
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for method in _methods(by_level):
        _lines(ax, by_level, "accuracy_percent", levels, method, method, method)
    _accuracy_axes(ax, levels, "Held-out accuracy vs difficulty of the training data",
                   "difficulty level of the training problems",
                   "accuracy on all test levels (% of problems)", "training data from")
    return fig


def _accuracy_axes(ax, levels: list[str], title: str, xlabel: str, ylabel: str,
                   legend_title: str) -> None:
    ax.set_xticks(range(len(levels)), [_level_label(x) for x in levels])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(title=legend_title, fontsize=8, title_fontsize=8)


def plot_phi(table: Table, subset: str) -> Figure:
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    for method in _methods(table):
        rows = [r for r in table if r["method"] == method]
        style = method_style(method)
        edges = [rows[0]["bin_left"], *[r["bin_right"] for r in rows]]
        values = [r["percent"] or 0.0 for r in rows]
        step = ax.stairs(values, edges, label=method, color=style.color,
                         linestyle=style.linestyle, linewidth=1.8)
        step.set_gid(method)
    ax.set_yscale("log")  # the tails (poorly fitting tokens) are where methods differ
    ax.axvline(0, color="black", linewidth=0.8, linestyle=":")
    ax.set_title(f"Distribution fit phi = log p_base(token) + H(p_base) ({subset})")
    ax.set_xlabel("phi (nats); > 0: more likely than the base model's typical token")
    ax.set_ylabel("tokens (% of the method's tokens, log scale)")
    ax.legend(title="method", fontsize=8, title_fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_training_loss(table: Table) -> Figure:
    """Loss per optimizer step, one panel per trained model: SFT (token NLL) and on-policy
    losses (divergences, DA-OPSD's signed) live on different scales."""
    methods = _methods(table)
    columns = min(4, len(methods))
    rows = -(-len(methods) // columns)
    fig = Figure(figsize=(3.2 * columns, 2.6 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, method in zip(axes, methods, strict=False):
        points = [r for r in table if r["method"] == method]
        style = method_style(method)
        (line,) = ax.plot([r["step"] for r in points], [r["loss"] for r in points],
                          color=style.color, linestyle=style.linestyle, marker=style.marker,
                          markersize=3)
        line.set_gid(method)
        ax.set_title(f"{method} ({points[0]['loss_kind']})", fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    fig.suptitle("Training loss per step")
    return fig


def plot_checkpoints(table: Table) -> Figure:
    """Validation accuracy against the training step, one line per trained model; the
    chosen checkpoint ringed."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for method in _methods(table):
        points = [r for r in table if r["method"] == method]
        style = method_style(method.split()[0])
        (line,) = ax.plot([r["step"] for r in points], [r["accuracy"] for r in points],
                          color=style.color, linestyle=style.linestyle, marker=style.marker,
                          label=method)
        line.set_gid(method)
        chosen = [r for r in points if r["chosen"]]
        ax.scatter([r["step"] for r in chosen], [r["accuracy"] for r in chosen], s=160,
                   facecolors="none", edgecolors=style.color, linewidths=1.5)
    ax.set_xlabel("optimizer step (the last point: the final model)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Checkpoint choice on held-out training problems (ringed: chosen)")
    return fig


def plot_frontier(table: Table, threshold: float) -> Figure:
    """Kept rate against the high-PPL ratio of the kept rows (left) and of all rows (right),
    one point per method; Pareto-optimal methods filled and joined, sd and the paper's
    DASD named."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, subset in zip(axes, SUBSETS, strict=True):
        column = f"high_ppl_percent_{subset}"
        front = sorted((r for r in table if r[f"pareto_{subset}"]), key=lambda r: r[column])
        if len(front) > 1:
            ax.plot([r[column] for r in front], [r["kept_percent"] for r in front],
                    color="black", linewidth=0.8, linestyle="--", zorder=1,
                    label="Pareto front")
        sweep = [r for r in guard_sweep(table) if r[column] is not None]
        if len(sweep) > 1:
            ax.plot([r[column] for r in sweep], [r["kept_percent"] for r in sweep],
                    color="#0072B2", linewidth=2.5, alpha=0.25, zorder=0,
                    label="guard sweep (gamma 1 -> 0, tau 0.2)")
        labels = _frontier_labels(table, column)
        for row in table:
            if row[column] is None:
                continue
            style = method_style(row["method"])
            optimal = row[f"pareto_{subset}"]
            (point,) = ax.plot(row[column], row["kept_percent"], marker=style.marker,
                               markersize=11 if row["role"] else 8, linestyle="none",
                               markerfacecolor=style.color if optimal else "white",
                               markeredgecolor=style.color if not optimal else "black",
                               markeredgewidth=1.6, zorder=2)
            point.set_gid(f"{row['method']}|{subset}")
            if row["method"] in labels:
                text, offset = labels[row["method"]]
                ax.annotate(text, (row[column], row["kept_percent"]), xytext=(6, offset),
                            textcoords="offset points", fontsize=7.5,
                            fontweight="bold" if row["role"] else "normal")
        which = "kept (correct) rows" if subset == "kept" else "all rows"
        ax.set_xlabel(f"high-PPL tokens of {which} (% with base PPL > {threshold:g})")
        ax.set_title(f"vs high-PPL ratio of {which}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("kept rate (correct samples, % of samples)")
    axes[0].set_ylim(-3, 103)
    if any(r["pareto_kept"] or r["pareto_all"] for r in table):
        axes[0].plot([], [], marker="o", linestyle="none", markerfacecolor="grey",
                     markeredgecolor="black", label="Pareto-optimal (filled)")
    if axes[0].get_legend_handles_labels()[0]:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3,
                   fontsize=8)
    fig.suptitle("The DASD-SD frontier: samples kept against distance from the base model")
    return fig


def _frontier_labels(table: Table, column: str) -> dict[str, tuple[str, int]]:
    """One label per drawn point, {method: (text, vertical offset in points)}: methods on
    the same point share one label ("SD = dasd-g0"), and labels of nearby points are
    stacked downwards instead of overprinting each other."""
    points = [r for r in table if r[column] is not None]
    if not points:
        return {}
    xs = [r[column] for r in points]
    span = (max(xs) - min(xs)) or 1.0
    groups: dict[tuple[float, float], list[dict]] = {}
    for r in points:
        groups.setdefault((r[column], r["kept_percent"]), []).append(r)
    placed: list[tuple[float, float]] = []
    labels = {}
    for (x, y), rows in sorted(groups.items(), key=lambda item: -item[0][1]):
        rows.sort(key=lambda r: (not r["role"], r["method"]))
        text = " = ".join({SD: "SD", PAPER: "paper DASD"}.get(r["role"], r["method"])
                          + (" (sd's rows)" if r.get("equals_sd") else "") for r in rows)
        near = sum(abs(x - px) / span < 0.12 and abs(y - py) < 6 for px, py in placed)
        labels[rows[0]["method"]] = (text, 4 - 9 * near)
        placed.append((x, y))
    return labels


CLASS_COLORS = ["#D55E00", "#F0E442", "#56B4E9", "#CCCCCC", "#FFFFFF"]
CLASS_HATCHES = ["//", "xx", "", "..", ""]


def plot_departures(table: Table) -> Figure:
    """Answer-losing departures by token class: per method one bar split by the class of
    the token it emitted (left) and of the reference top-1 it replaced (right), in % of its
    departures, with the count in each part."""
    methods = _methods(table)
    classes = [c for c in (*TOKEN_CLASSES, UNKNOWN) if any(r["token_class"] == c
                                                             for r in table)]
    fig = Figure(figsize=(11, 1.6 + 0.42 * len(methods)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (column, count, title) in zip(axes, [
            ("percent", "departures", "token emitted at the departure"),
            ("replaced_percent", "replaced_reference_tokens", "reference top-1 it replaced")],
            strict=True):
        for i, method in enumerate(methods):
            left = 0.0
            for name in classes:
                row = next(r for r in table if r["method"] == method and r["token_class"] == name)
                k = (*TOKEN_CLASSES, UNKNOWN).index(name)
                (bar,) = ax.barh(i, row[column], 0.7, left=left, color=CLASS_COLORS[k],
                                 hatch=CLASS_HATCHES[k], edgecolor="black", linewidth=0.6,
                                 label=name if i == 0 else None)
                bar.set_gid(f"{method}|{name}|{column}")
                if row[count]:
                    ax.text(left + row[column] / 2, i, str(row[count]), ha="center",
                            va="center", fontsize=7,
                            bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.5,
                                  "edgecolor": "none"})
                left += row[column]
        total = {m: sum(r["departures"] for r in table if r["method"] == m) for m in methods}
        ax.set_yticks(range(len(methods)), [f"{m} (n={total[m]})" for m in methods],
                      fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("% of the method's answer-losing departures (count in the bar)")
    axes[0].invert_yaxis()  # (shared: both panels) the first method on top
    fig.legend(*axes[0].get_legend_handles_labels(), title="token class",
               loc="outside lower center", ncol=len(classes), fontsize=8, title_fontsize=8)
    fig.suptitle("Answer-losing departures by token class (samples wrong where sd's is "
                 "right; the first token off the reference top-1)")
    return fig
