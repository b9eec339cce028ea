"""5f. On-policy reward and direction per step: the table from train logs, its figure, and
its place in `dasd analyze`."""

import csv

import pytest

from dasd.analysis.onpolicy import PANELS, onpolicy_section, onpolicy_table, plot_onpolicy
from dasd.analysis.report import AnalyzeConfig, analyze
from dasd.training.rewards import REWARD_LOG_KEY
from tests.analysis.test_analyze import make_run
from tests.conftest import write_jsonl

LOGS = {
    "sd": [{"loss": 1.5, "step": 1}],  # SFT: no divergence, not on-policy
    "da-opsd": [{"loss": -0.1, "step": 1, "divergence": 0.03, REWARD_LOG_KEY: 0.25,
                 "direction/pulled": 0.2, "direction/pushed": 0.75,
                 "direction/signed_divergence": -0.02},
                {"loss": 0.2, "step": 2, "divergence": 0.04, REWARD_LOG_KEY: 0.5,
                 "direction/pulled": 0.25, "direction/pushed": 0.7,
                 "direction/signed_divergence": -0.01},
                {"train_loss": 0.05, "step": 2}],  # TRL's closing summary line
    "opsd": [{"loss": 0.03, "step": 1, "divergence": 0.03, REWARD_LOG_KEY: 0.0}],
}


def test_table_has_one_row_per_on_policy_step():
    table = onpolicy_table(LOGS)
    assert [(r["method"], r["step"]) for r in table] == [
        ("opsd", 1), ("da-opsd", 1), ("da-opsd", 2)]
    da = table[1]
    assert (da["reward"], da["divergence"], da["signed_divergence"]) == (0.25, 0.03, -0.02)
    assert (da["pulled_percent"], da["pushed_percent"]) == pytest.approx((20.0, 75.0))
    # OPSD pulls every token and has no signed divergence
    assert (table[0]["pulled_percent"], table[0]["pushed_percent"],
            table[0]["signed_divergence"]) == (100.0, 0.0, None)


def test_figure_draws_the_table_and_empty_logs_leave_a_note():
    table = onpolicy_table(LOGS)
    fig = plot_onpolicy(table)
    for ax, (column, _) in zip(fig.axes, PANELS, strict=True):
        for line in [a for a in ax.get_lines() if a.get_gid()]:
            rows = [r for r in table if r["method"] == line.get_gid() and r[column] is not None]
            assert list(line.get_xdata()) == [r["step"] for r in rows]
            assert list(line.get_ydata()) == [r[column] for r in rows]
    assert {a.get_gid() for a in fig.axes[3].get_lines() if a.get_gid()} == {"da-opsd"}
    section = onpolicy_section({"sd": LOGS["sd"]})
    assert section.tables["onpolicy"] == [] and "no on-policy training logs" in section.note


def test_analyze_writes_the_section(tmp_path):
    root = make_run(tmp_path, with_eval=False)
    (root / "train" / "da-opsd").mkdir(parents=True)
    write_jsonl(root / "train" / "da-opsd" / "train_log.jsonl", LOGS["da-opsd"])
    result = analyze(AnalyzeConfig(path=str(root), tokenizer="none", out=str(tmp_path / "a")))
    assert any(f.endswith("onpolicy.png") for f in result["figures"])
    with open(tmp_path / "a" / "onpolicy.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["opsd", "opsd", "da-opsd", "da-opsd"]
    assert "5f. On-policy reward and direction" in (tmp_path / "a" / "report.html").read_text()
