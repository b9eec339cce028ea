"""5f. On-policy training per step: the task reward and the direction routing.

Read from each on-policy model's `train/<name>/train_log.jsonl` (the trainer logs one row
per step): the mean reward of the step's rollouts under the task's checker, the plain
clipped divergence to the teacher (comparable across methods), and for the
direction-adaptive methods the shares of rollout tokens pulled toward / pushed away from
the teacher and the signed divergence mean_t omega_t D_t. Methods that pull every token
(OPSD, PW-OPSD) show pulled 100%, pushed 0%.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from dasd.analysis.plots import method_sort_key, method_style
from dasd.analysis.tables import Section
from dasd.training.rewards import REWARD_LOG_KEY

Table = list[dict[str, Any]]
PANELS = (("reward", "reward (mean over the step's rollouts)"),
          ("divergence", "divergence to the teacher (nats)"),
          ("pushed_percent", "tokens pushed away (%)"),
          ("signed_divergence", "signed divergence (nats)"))


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def onpolicy_table(logs: Mapping[str, Sequence[dict[str, Any]]]) -> Table:
    """One row per (on-policy model, step): loss, reward, divergence, pulled/pushed share
    (%) and signed divergence; models whose log has no `divergence` (SFT) are left out."""
    table = []
    for name in sorted(logs, key=method_sort_key):
        rows = [r for r in logs[name] if "loss" in r and "step" in r]
        if not any("divergence" in r for r in rows):
            continue
        routed = any("direction/pushed" in r for r in rows)
        for row in rows:
            table.append({
                "method": name, "step": row["step"], "loss": row["loss"],
                "reward": row.get(REWARD_LOG_KEY), "divergence": row.get("divergence"),
                "pulled_percent": _percent(row.get("direction/pulled")) if routed else 100.0,
                "pushed_percent": _percent(row.get("direction/pushed")) if routed else 0.0,
                "signed_divergence": row.get("direction/signed_divergence")})
    return table


def onpolicy_section(logs: Mapping[str, Sequence[dict[str, Any]]]) -> Section:
    table = onpolicy_table(logs)
    return Section(
        "onpolicy", "5f. On-policy reward and direction",
        "Per optimizer step of every on-policy model, from train/<name>/train_log.jsonl: "
        "the mean reward of the step's rollouts (1 when the task's checker accepts the "
        "answer), the plain clipped divergence to the teacher, the share of rollout tokens "
        "pushed away from the teacher (direction-adaptive methods: those above the "
        "rollout's entropy quantile; OPSD and PW-OPSD pull every token) and the signed "
        "divergence mean omega_t D_t, below zero when the pushed tokens outweigh the "
        "pulled. A divergence that keeps growing while the reward falls is a collapse.",
        {"onpolicy": table},
        note=None if table else "no on-policy training logs (train/*/train_log.jsonl with "
        "a divergence column): reward and direction per step skipped")


def plot_onpolicy(table: Table) -> Figure:
    """Reward, divergence, pushed share and signed divergence per step, one line per
    on-policy model."""
    fig = Figure(figsize=(14, 3.4), layout="constrained")
    axes = fig.subplots(1, len(PANELS))
    methods = list(dict.fromkeys(r["method"] for r in table))
    for ax, (column, title) in zip(axes, PANELS, strict=True):
        for method in methods:
            points = [(r["step"], r[column]) for r in table
                      if r["method"] == method and r[column] is not None]
            if not points:
                continue
            style = method_style(method)
            (line,) = ax.plot(*zip(*points, strict=True), label=method, color=style.color,
                              linestyle=style.linestyle, marker=style.marker, markersize=3)
            line.set_gid(method)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[-1].axhline(0, color="black", linewidth=0.8, linestyle=":")
    lines = {line.get_gid(): line for ax in axes for line in ax.get_lines() if line.get_gid()}
    fig.legend(list(lines.values()), list(lines), title="method", fontsize=8,
               title_fontsize=8, loc="outside right upper")
    fig.suptitle("On-policy training: reward and direction per step")
    return fig
