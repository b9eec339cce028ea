"""Analyses against hand-computed values, figures against their CSVs, the report page, the
terminal token view, and bad input."""

import csv
import json
import math
import re
from pathlib import Path

import pytest
from matplotlib.patches import Rectangle, StepPatch
from rich.console import Console

from dasd.analysis import AnalyzeConfig, analyze, show
from dasd.analysis import tables as T
from dasd.analysis.data import token_texts
from dasd.analysis.plots import METHOD_STYLES, method_style, plot_training_levels
from dasd.analysis.report import build_sections, draw
from dasd.errors import DasdError
from dasd.stats import P_FLOOR, perplexity, phi
from tests.conftest import make_tokenizer


def row(i, level, p_base, *, method="dasd", category=None, correct=True, ranks=None,
        entropy=None, ids=None, reference="ref solution", ref_rank=None, settings=None):
    n = len(p_base)
    return {
        "id": f"arith-train-{i:05d}", "task": "arith", "split": "train", "level": level,
        "method": method, "settings": settings or {}, "question": f"question {i}?",
        "reference": reference,
        "gold_answer": "7", "prompt": "", "ref_prompt": "", "prompt_ids": [], "ref_prompt_ids": [],
        "completion": f"answer of {method} {i}", "completion_ids": ids or list(range(100, 100 + n)),
        "finish_reason": "eos", "correct": correct, "extracted_answer": "7",
        "answer_how": "final-answer",
        "tokens": {"category": category or [0] * n, "p_base": p_base, "p_ref": [0.9] * n,
                   "ref_rank": ref_rank or [1] * n, "base_entropy": entropy or [0.5] * n,
                   "base_top3_ref_rank": ranks or [[1, 2, 3]] * n}}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pick(table, column, **match):
    (value,) = [r[column] for r in table if all(r[k] == v for k, v in match.items())]
    return value


# --- analyses against hand-computed values ------------------------------------------------

SD_ROWS = [row(0, 1, [0.9, 0.3, 0.9, 0.9], method="sd"),      # 1 of 4 tokens high-PPL
           row(1, 3, [0.1, 0.2, 0.9, 0.41], method="sd"),     # 2 of 4 (0.41: PPL 2.44)
           row(2, 3, [0.9, 0.9, 0.9, 0.9], method="sd")]      # 0 of 4


def test_high_ppl_ratio_per_level_and_gap():
    table = T.high_ppl_table({"sd": SD_ROWS}, threshold=2.5)
    assert pick(table, "high_ppl_percent", level="1") == 25.0
    assert pick(table, "high_ppl_percent", level="3") == 100 * 2 / 8
    assert pick(table, "high_ppl_percent", level="all") == 100 * 3 / 12
    assert pick(table, "tokens", level="3") == 8 and pick(table, "samples", level="3") == 2
    (gap,) = T.high_ppl_gap(table)
    assert (gap["easy_level"], gap["hard_level"]) == ("1", "3")
    assert gap["gap_percent"] == 0.0  # 25% -> 25%
    table = T.high_ppl_table({"sd": SD_ROWS[:2]}, threshold=2.5)
    assert T.high_ppl_gap(table)[0]["gap_percent"] == pytest.approx(100.0)  # 25% -> 50%
    # threshold 1.5 means p_base < 2/3: 0.41 now counts too
    table = T.high_ppl_table({"sd": SD_ROWS[1:2]}, threshold=1.5)
    assert pick(table, "high_ppl_percent", level="all") == 75.0


def test_gap_is_undefined_without_two_levels_or_with_a_zero_easy_ratio():
    one_level = T.high_ppl_table({"m": [row(0, 2, [0.1])]})
    assert T.high_ppl_gap(one_level)[0]["gap_percent"] is None
    zero_easy = T.high_ppl_table({"m": [row(0, 1, [0.9]), row(1, 5, [0.1])]})
    assert T.high_ppl_gap(zero_easy)[0]["gap_percent"] is None


def test_levels_sort_numerically_with_none_and_all_last():
    rows = [row(0, 10, [0.9]), row(1, None, [0.9]), row(2, 2, [0.9])]
    assert [lvl for lvl, _ in T.by_level(rows)] == ["2", "10", "none", "all"]


def test_category_shares_on_correct_samples_only():
    rows = [row(0, 1, [0.9] * 4, category=[0, 0, 1, 3]),
            row(1, 1, [0.9] * 4, category=[3, 3, 3, 3], correct=False),
            row(2, 2, [0.9] * 4, category=[0, 0, 0, 2])]
    table = T.category_table({"dasd": rows})
    assert pick(table, "percent", level="1", category="consistent") == 50.0
    assert pick(table, "percent", level="1", category="hard") == 25.0
    assert pick(table, "samples", level="1", category="hard") == 1
    assert pick(table, "percent", level="all", category="consistent") == 62.5
    assert pick(table, "percent", level="all", category="reserved") == 12.5
    assert pick(table, "percent", level="all", category="base-selected") == 12.5
    assert pick(table, "percent", level="all", category="filtered") == 25.0
    assert pick(table, "total_tokens", level="all", category="filtered") == 8
    empty = T.category_table({"dasd": rows[1:2]})
    assert pick(empty, "percent", level="all", category="consistent") is None


def test_alignment_statistics_from_ranks():
    ranks = [[1, 2, 3], [2, 1, 3], [1, 4, 2], [7, 1, 2]]
    table = T.alignment_table({"sd": [row(0, 1, [0.9] * 4, ranks=ranks)]})
    expected = {"top-1 agreement": 50.0, "base top-1 in ref top-3": 75.0,
                "base top-1 in ref top-6": 75.0, "base top-3 in ref top-3": 50.0,
                "base top-3 in ref top-6": 75.0}
    for stat, percent in expected.items():
        assert pick(table, "percent", level="1", statistic=stat) == percent
        assert pick(table, "steps", level="all", statistic=stat) == 4


def test_phi_values():
    assert phi([0.5, 1.0], [1.0, 0.0]) == pytest.approx([math.log(0.5) + 1.0, 0.0])
    assert phi([0.0], [2.0]) == [math.log(P_FLOOR) + 2.0]
    table = T.phi_table({"m": [row(0, 1, [0.5, 1.0], entropy=[1.0, 0.0])]}, bins=4)
    assert sum(r["tokens"] for r in table) == 2
    # edges from floor(0.0) to ceil(0.307) in half nats: 0, .125, .25, .375, .5
    assert table[0]["bin_left"] == 0.0 and table[-1]["bin_right"] == 0.5
    assert [r["tokens"] for r in table] == [1, 0, 1, 0]
    assert [r["percent"] for r in table] == [50.0, 0.0, 50.0, 0.0]
    (summary,) = T.phi_summary({"m": [row(0, 1, [0.5, 1.0], entropy=[1.0, 0.0])]})
    assert summary["mean"] == pytest.approx((math.log(0.5) + 1.0) / 2)


def test_segments_are_lines_and_segment_ppl_buckets():
    texts = ["a", "b\n", "\n", "c", "d\n", "e"]
    assert T.line_segments(texts) == [(0, 3), (3, 5), (5, 6)]
    assert T.window_segments(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert perplexity([0.5, 0.5]) == pytest.approx(2.0)
    r = row(0, 1, [1.0, 1.0, 1.0, 0.5, 0.5, 0.1])   # PPL 1 (low), 2 (mid), 10 (ultra-high)
    table = T.segment_ppl_table({"m": [r]}, lambda _: T.line_segments(texts), (1.5, 3.0))
    buckets = T.segment_buckets((1.5, 3.0))
    assert [pick(table, "segments", level="1", bucket=b) for b in buckets] == [1, 1, 1]
    assert pick(table, "percent", level="all", bucket=buckets[2]) == 100 / 3
    # bucket edges are inclusive on the low side: PPL exactly 1.5 is low
    assert T.bucket_of(1.5, (1.5, 3.0)) == 0 and T.bucket_of(3.0, (1.5, 3.0)) == 1


def test_accuracy_table_from_eval_summaries():
    summary = {"n": 4, "correct": 3, "accuracy": 0.75,
               "per_level": {"2": {"n": 2, "correct": 1, "accuracy": 0.5},
                             "1": {"n": 2, "correct": 2, "accuracy": 1.0}}}
    table = T.accuracy_table({"dasd": summary})
    assert [r["level"] for r in table] == ["1", "2", "all"]
    assert pick(table, "accuracy_percent", level="2") == 50.0


def test_method_styles_are_fixed_and_distinct():
    assert method_style("dasd") == METHOD_STYLES["dasd"]
    assert method_style("dasd-tau0.1") == method_style("dasd-tau0.1")
    colors = [s.color for s in METHOD_STYLES.values()]
    hatches = [s.hatch for s in METHOD_STYLES.values()]
    assert len(set(colors)) == len(colors) and len(set(hatches)) == len(hatches)


# --- the whole report ---------------------------------------------------------------------

def make_run(tmp_path, with_eval=True):
    """A run folder: sd, dasd and base generations over two levels, eval summaries."""
    root = tmp_path / "runs" / "demo"
    gen = root / "generate"
    sd = [row(i, 1 + i % 2, [0.9, 0.3, 0.95, 0.1 + 0.1 * i], method="sd",
              category=[0, 1, 0, 3], correct=i != 1,
              ranks=[[1, 2, 3], [2, 1, 4], [1, 3, 2], [5, 1, 2]]) for i in range(4)]
    # dasd loses the answer of problem 0 (which sd gets right) at its token 1
    dasd = [row(i, 1 + i % 2, [0.9, 0.6, 0.95, 0.5], category=[0, 1, 0, 2],
                ranks=[[1, 2, 3], [1, 2, 7], [1, 3, 2], [2, 1, 3]], entropy=[0.2, 1.0, 0.1, 2.0],
                correct=i != 0, ref_rank=[1, 2, 1, 1] if i == 0 else None)
            for i in range(4)]
    base = [row(i, 1 + i % 2, [0.9, 0.9], method="base") for i in range(2)]
    write_jsonl(gen / "sd.jsonl", sd)
    write_jsonl(gen / "dasd.jsonl", dasd)
    write_jsonl(gen / "base.jsonl", base)
    # training logs: SFT's (with TRL's closing summary line) and an on-policy method's
    write_jsonl(root / "train" / "sd" / "train_log.jsonl",
                [{"loss": 1.5, "step": 1}, {"loss": 1.25, "step": 2},
                 {"train_loss": 1.375, "step": 2}])
    write_jsonl(root / "train" / "opsd" / "train_log.jsonl",
                [{"loss": 0.03, "divergence": 0.03, "step": 1},
                 {"loss": 0.02, "divergence": 0.02, "step": 2}])
    if with_eval:
        for name, acc in (("origin", (0.5, 0.0)), ("sd", (0.5, 0.5)), ("dasd", (1.0, 0.5))):
            summary = {"n": 4, "correct": int(2 * sum(acc)), "accuracy": sum(acc) / 2,
                       "per_level": {str(k + 1): {"n": 2, "correct": int(2 * a), "accuracy": a}
                                     for k, a in enumerate(acc)}}
            # the per-problem verdicts behind it (evaluation rows have no per-token
            # statistics: the generated-data analyses must skip them)
            write_jsonl(root / "eval" / f"{name}.jsonl", [
                {"id": f"p{i}", "level": 1 + i // 2, "response": "7",
                 "correct": i % 2 < 2 * acc[i // 2]} for i in range(4)])
            (root / "eval" / f"{name}.summary.json").write_text(json.dumps(summary))
    return root


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _num(text):
    return None if text == "" else float(text)


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """One analysed run folder shared by the report tests (analyze takes ~2 s)."""
    root = make_run(tmp_path_factory.mktemp("report"))
    config = AnalyzeConfig(path=str(root), tokenizer="none")
    return root, config, analyze(config)


def test_figures_draw_exactly_the_csv_numbers(analyzed):
    root, config, result = analyzed
    out = root / "analysis"
    assert {f.split("/")[-1] for f in result["figures"]} == {
        f"{k}.png" for k in ("high_ppl", "segment_ppl", "alignment", "categories", "frontier",
                             "departures", "accuracy", "comparisons", "training_loss",
                             "onpolicy", "phi")}
    assert all((out / f"{k}.pdf").is_file() for k in ("high_ppl", "phi"))
    assert [i["method"] for i in result["inputs"]] == ["base", "sd", "dasd"]

    from dasd.analysis.report import _segmenter

    segmenter, segmentation = _segmenter(config, None)
    sections = build_sections(result_files(root), config, root, out, segmenter, segmentation)
    checked = 0
    for section in sections:
        name = next(iter(section.tables))
        if not section.tables[name]:  # nothing to draw (no figure, checked above)
            assert draw(section, config, segmentation) is None
            continue
        csv_rows = read_csv(out / f"{name}.csv")
        fig = draw(section, config, segmentation)
        drawn = fig.findobj(lambda a: a.get_gid() is not None)
        if name in ("frontier", "departures"):
            checked += check_frontier_or_departures(name, csv_rows, drawn)
            continue
        if name == "onpolicy":  # four panels per method: tests/test_analysis_onpolicy.py
            continue
        if name in ("accuracy", "comparisons"):
            checked += check_intervals(name, csv_rows, drawn)
            drawn = [a for a in drawn if not a.get_gid().endswith("|interval")]
            if name == "comparisons":
                continue
        plotted = {"high_ppl": "high_ppl_percent", "segment_ppl": "percent",
                   "categories": "percent"}
        if name in plotted:  # every bar of the CSV is drawn (filtered = a sum, not a bar)
            assert len(drawn) == sum(r[plotted[name]] != "" and r.get("category") != "filtered"
                                     for r in csv_rows)
        else:  # one line / histogram per method (and statistic)
            groups = {(r["method"], r.get("statistic")) for r in csv_rows}
            assert len(drawn) == len(groups)
        for artist in drawn:
            keys = artist.get_gid().split("|")
            if isinstance(artist, Rectangle):
                column = {"high_ppl": "high_ppl_percent"}.get(name, "percent")
                series = {"segment_ppl": "bucket", "categories": "category"}.get(name)
                match = dict(zip(["method", "level", series], keys, strict=False))
                (expected,) = [_num(r[column]) for r in csv_rows
                               if all(r[k] == v for k, v in match.items())]
                assert artist.get_height() == expected
            elif isinstance(artist, StepPatch):
                expected = [_num(r["percent"]) for r in csv_rows if r["method"] == keys[0]]
                assert list(artist.get_data().values) == expected
            elif name == "training_loss":  # a line: loss per step
                assert list(artist.get_xdata()) == [int(r["step"]) for r in csv_rows
                                                    if r["method"] == keys[0]]
                assert list(artist.get_ydata()) == [_num(r["loss"]) for r in csv_rows
                                                    if r["method"] == keys[0]]
            else:  # a line: alignment statistic or accuracy, one point per numeric level
                column = "accuracy_percent" if name == "accuracy" else "percent"
                expected = [_num(r[column]) for r in csv_rows if r["method"] == keys[0]
                            and r["level"] != "all"
                            and (len(keys) == 1 or r["statistic"] == keys[1])]
                assert list(artist.get_ydata()) == expected
            checked += 1
    assert checked > 40


def check_intervals(name, csv_rows, drawn):
    """Every error bar spans its CSV interval: accuracy per model and level (points are
    shifted apart in x, never in y), and each paired difference (all levels)."""
    checked = 0
    for artist in drawn:
        if name == "accuracy" and artist.get_gid().endswith("|interval"):
            method = artist.get_gid().split("|")[0]
            rows = [r for r in csv_rows if r["method"] == method and r["level"] != "all"]
            spans = [sorted(seg[:, 1]) for seg in artist.get_segments()]
            assert spans == [pytest.approx([_num(r["ci_low_percent"]),
                                            _num(r["ci_high_percent"])], abs=1e-9) for r in rows]
            checked += 1
        elif name == "comparisons":
            a, b = artist.get_gid().split("-")
            (row,) = [r for r in csv_rows if (r["a"], r["b"], r["level"]) == (a, b, "all")]
            assert list(artist.get_xdata()) == [_num(row["difference_points"])]
            checked += 1
    expected = len({r["method"] for r in csv_rows}) if name == "accuracy" else \
        sum(r["level"] == "all" for r in csv_rows)
    assert checked == expected
    return checked


def check_frontier_or_departures(name, csv_rows, drawn):
    """Every frontier point (kept rate vs high-PPL ratio of kept / all rows) and every
    departure bar is drawn at its CSV values; returns how many were checked."""
    if name == "frontier":
        points = {a.get_gid(): a for a in drawn}
        expected = {f"{r['method']}|{subset}": (_num(r[f"high_ppl_percent_{subset}"]),
                                                _num(r["kept_percent"]))
                    for r in csv_rows for subset in ("kept", "all")
                    if r[f"high_ppl_percent_{subset}"] != ""}
        assert points.keys() == expected.keys()
        for gid, (x, y) in expected.items():
            assert (list(points[gid].get_xdata()), list(points[gid].get_ydata())) == ([x], [y])
        return len(points)
    for bar in drawn:
        method, token_class, column = bar.get_gid().split("|")
        (expected,) = [_num(r[column]) for r in csv_rows
                       if r["method"] == method and r["token_class"] == token_class]
        assert bar.get_width() == expected
    assert len(drawn) == 2 * len(csv_rows)
    return len(drawn)


def result_files(root):
    from dasd.analysis.data import find_generated, load_generated

    return load_generated(find_generated(root, exclude=root / "analysis"))


def test_report_is_self_contained_with_figures_and_token_browser(analyzed):
    root, _, result = analyzed
    page = (root / "analysis" / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(images) == len(result["figures"]) == 11
    assert 'id="tb-data"' in page and 'id="tb-tokens"' in page
    data = json.loads(re.search(r'id="tb-data">(.*?)</script>', page, re.S).group(1))
    assert data["methods"] == ["base", "sd", "dasd"]
    first = data["examples"]["sd"][0]
    assert first["t"][0][0] == "⟨100⟩" and "p_base 0.9000" in first["t"][0][3]
    assert first["base"] == "answer of base 0" and first["reference"] == "ref solution"
    assert data["examples"]["sd"][2]["base"] is None  # no base row with that id
    # dasd's answer-losing departure (token 1 of problem 0) is marked for the browser
    assert [ex["dep"] for ex in data["examples"]["dasd"]] == [1, None, None, None]
    assert "tb-dep" in page and "scrollIntoView" in page
    summary = {s["method"]: s for s in result["summary"]}
    assert summary["sd"]["high_ppl_percent"] == pick(result["tables"]["high_ppl"],
                                                     "high_ppl_percent", method="sd",
                                                     level="all")
    for name in ("high_ppl", "high_ppl_gap", "segment_ppl", "alignment", "categories",
                 "accuracy", "training_loss", "phi_hist", "phi_summary"):
        assert (root / "analysis" / f"{name}.csv").is_file()
    saved = json.loads((root / "analysis" / "analysis.json").read_text())
    assert saved["tables"]["categories"] == result["tables"]["categories"]


def test_run_without_eval_results_skips_accuracy_with_a_note(tmp_path):
    root = make_run(tmp_path, with_eval=False)
    result = analyze(AnalyzeConfig(path=str(root), tokenizer="none", out=str(tmp_path / "r")))
    assert not any("accuracy" in f for f in result["figures"])
    assert any("no evaluation results" in n for n in result["notes"])
    assert "no evaluation results" in (tmp_path / "r" / "report.html").read_text()


def test_single_file_and_labels_of_files_sharing_a_method(tmp_path):
    one = write_jsonl(tmp_path / "a" / "dasd-tau0.1.jsonl", [row(0, 1, [0.9])])
    write_jsonl(tmp_path / "a" / "dasd.jsonl", [row(0, 1, [0.3])])
    result = analyze(AnalyzeConfig(path=str(tmp_path / "a"), tokenizer="none"))
    assert [i["method"] for i in result["inputs"]] == ["dasd", "dasd-tau0.1"]
    result = analyze(AnalyzeConfig(path=str(one), tokenizer="none"))
    assert result["out"] == str(tmp_path / "a" / "dasd-tau0.1.analysis")


def test_line_segments_with_a_tokenizer(tmp_path):
    tokenizer = make_tokenizer()
    ids = tokenizer("x=1\ny=2\n\nz", add_special_tokens=False)["input_ids"]
    texts = token_texts(tokenizer, ids)
    assert "".join(texts) == "x=1\ny=2\n\nz"
    assert T.line_segments(texts) == [(0, 4), (4, 9), (9, 10)]


def test_show_prints_coloured_tokens_and_a_legend(tmp_path):
    tokenizer = make_tokenizer()
    ids = tokenizer("Hello\nworld", add_special_tokens=False)["input_ids"]
    path = write_jsonl(tmp_path / "dasd.jsonl",
                       [row(17, 2, [0.9] * len(ids), ids=ids, category=[0, 1] + [0] * 9)])
    console = Console(record=True, width=100, force_terminal=True, color_system="truecolor")
    show(path, "17", tokenizer=tokenizer, console=console)
    text = console.export_text(clear=False)
    assert "Hello\nworld" in text and "arith-train-00017" in text
    assert "consistent" in text and "reserved" in text and "ref solution" in text
    styled = console.export_text(styles=True)
    assert "\x1b[" in styled  # coloured
    console = Console(record=True, width=100)
    show(path, "arith-train-00017", color_by="p_base", tokenizer="none", console=console)
    text = console.export_text()
    assert f"⟨{ids[0]}⟩" in text and "p_base < 0.2" in text


@pytest.mark.parametrize("make, message", [
    (lambda p: AnalyzeConfig(path=str(p / "missing")), "path not found"),
    (lambda p: AnalyzeConfig(path=str(write_jsonl(p / "eval.jsonl", [{"id": "x"}]))),
     "no per-token statistics"),
    (lambda p: AnalyzeConfig(path=str(p)), "no generated JSONL"),
    (lambda p: AnalyzeConfig(path=None), "give a run folder"),
    (lambda p: AnalyzeConfig(path=str(p), segment_ppl_edges=[3.0, 1.5]), "segment_ppl_edges"),
    (lambda p: AnalyzeConfig(path=str(p), high_ppl_threshold=0.5), "high_ppl_threshold"),
])
def test_bad_input_is_a_one_line_error(tmp_path, make, message):
    with pytest.raises(DasdError, match=message) as err:
        analyze(make(tmp_path))
    assert "\n" not in str(err.value)


def test_bad_rows_and_unknown_example_are_one_line_errors(tmp_path):
    bad = row(0, 1, [0.9, 0.9])
    del bad["tokens"]["p_base"]
    path = write_jsonl(tmp_path / "x.jsonl", [row(1, 1, [0.9]), bad])
    with pytest.raises(DasdError, match="row 2 lacks") as err:
        analyze(AnalyzeConfig(path=str(path)))
    assert "\n" not in str(err.value)
    good = write_jsonl(tmp_path / "g" / "dasd.jsonl", [row(1, 1, [0.9])])
    with pytest.raises(DasdError, match="no example with id '99'"):
        show(good, "99", tokenizer="none", console=Console(record=True))
    with pytest.raises(DasdError, match="color_by"):
        show(good, "1", color_by="rainbow")
    with pytest.raises(DasdError, match="segment=line"):
        analyze(AnalyzeConfig(path=str(good), tokenizer="none", segment="line"))


def test_accuracy_vs_training_level_table_and_figure(tmp_path):
    import yaml

    root = tmp_path / "run"
    (root / "eval").mkdir(parents=True)
    (root / "generate").mkdir()
    accuracy = {("sd", 1): 0.5, ("sd", 3): 0.25, ("dasd", 1): 0.75, ("dasd", 3): 0.5}
    for (method, level), acc in accuracy.items():
        name = f"{method}-L{level}"
        write_jsonl(root / "generate" / f"{name}.jsonl",
                    [row(i, level, [0.9, 0.3], method=method) for i in range(2)])
        (root / "generate" / f"{name}.config.yaml").write_text(
            yaml.safe_dump({"method": method, "levels": [level]}))
        (root / "eval" / f"{name}.summary.json").write_text(json.dumps(
            {"n": 4, "correct": int(4 * acc), "accuracy": acc,
             "per_level": {"1": {"n": 4, "correct": int(4 * acc), "accuracy": acc}}}))
    result = analyze(AnalyzeConfig(path=str(root), tokenizer="none"))
    out = Path(result["out"])
    with open(out / "training_level.csv") as fh:
        table = list(csv.DictReader(fh))
    got = {(r["method"], int(r["train_level"])): float(r["accuracy"]) for r in table}
    assert got == accuracy
    assert (out / "training_level.png").is_file()
    fig = plot_training_levels(
        [{**r, "accuracy_percent": float(r["accuracy_percent"])} for r in table])
    drawn = {line.get_gid(): list(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert drawn == {"dasd": [75.0, 50.0], "sd": [50.0, 25.0]}


def test_training_loss_table_reads_each_models_log(analyzed):
    root, _, result = analyzed
    table = result["tables"]["training_loss"]
    assert [(r["method"], r["step"], r["loss"]) for r in table] == [
        ("sd", 1, 1.5), ("sd", 2, 1.25), ("opsd", 1, 0.03), ("opsd", 2, 0.02)]
    assert {r["method"]: r["loss_kind"] for r in table} == {
        "sd": "token NLL", "opsd": "divergence loss"}


def test_retention_section_compares_each_trained_model_with_origin(tmp_path):
    root = make_run(tmp_path)
    verdicts = {"origin": [1, 1, 0, 1], "sd": [0, 1, 1, 0], "dasd": [1, 1, 0, 1]}
    for name, bits in verdicts.items():
        write_jsonl(root / "retention" / "arc" / f"{name}.jsonl",
                    [{"id": f"q{i}", "level": None, "correct": bool(b)}
                     for i, b in enumerate(bits)])
    result = analyze(AnalyzeConfig(path=str(root), tokenizer="none"))
    rows = {(r["a"], r["level"]): r for r in read_csv(root / "analysis" / "retention.csv")}
    assert set(rows) == {("sd", "all"), ("dasd", "all")}
    sd = rows[("sd", "all")]
    assert (sd["task"], sd["b"], int(sd["a_better"]), int(sd["b_better"])) == ("arc", "origin",
                                                                               1, 2)
    assert _num(sd["difference_points"]) == -25.0 and sd["distinguishable"] == "False"
    assert _num(rows[("dasd", "all")]["p_value"]) == 1.0
    assert any(f.endswith("retention.png") for f in result["figures"])
