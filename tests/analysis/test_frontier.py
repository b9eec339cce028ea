"""The DASD-SD frontier and the answer-losing departures, against hand-computed values."""

import pytest
from rich.console import Console

from dasd.analysis import show
from dasd.analysis.departures import (
    FORMAT,
    NUMBER,
    OPERATOR,
    WORD,
    departure_summary,
    departure_table,
    first_departure,
    token_class,
)
from dasd.analysis.frontier import PAPER, SD, beats_sd, describe, frontier_table, pareto
from tests.analysis.test_analyze import row, write_jsonl
from tests.conftest import make_tokenizer


def method_rows(method, correct, p_base, settings=None, categories=None):
    """Rows of one decoding setting; each setting writes its own tokens (ids from its
    p_base list, so settings with other statistics never share a response)."""
    ids = [int(1000 * p) + j for j, p in enumerate(p_base)] + [len(correct)]
    return [row(i, 1, p_base, method=method, correct=c, settings=settings,
                category=categories, ids=ids) for i, c in enumerate(correct)]


def test_frontier_table_by_hand():
    runs = {
        # sd: 3 of 4 kept; tokens 0.9 / 0.3 -> half high-PPL everywhere
        "sd": method_rows("sd", [True, True, True, False], [0.9, 0.3]),
        # paper DASD: 1 of 4 kept, no high-PPL token
        "dasd": method_rows("dasd", [True, False, False, False], [0.9, 0.9]),
        # a guard: sd's kept rate with a quarter high-PPL tokens -> beats sd
        "dasd-g09": method_rows("dasd", [True, True, True, False], [0.9, 0.9, 0.9, 0.1],
                                settings={"guard": 0.9}, categories=[0, 1, 4, 4]),
        # dominated by dasd-g09 (fewer kept, more high-PPL)
        "dasd-g05": method_rows("dasd", [True, True, False, False], [0.9, 0.3],
                                settings={"guard": 0.5}),
        "none-kept": method_rows("dasd", [False, False, False, False], [0.1],
                                 settings={"tau": 0.5}),
    }
    table = {r["method"]: r for r in frontier_table(runs)}
    assert table["sd"]["role"] == SD and table["dasd"]["role"] == PAPER
    assert table["dasd-g09"]["role"] == "" and table["dasd-g09"]["rule"] == "dasd guard 0.9 tau 0.2"
    assert [(m, r["kept_percent"], r["high_ppl_percent_kept"], r["high_ppl_percent_all"])
            for m, r in table.items()] == [
        ("sd", 75.0, 50.0, 50.0), ("dasd", 25.0, 0.0, 0.0), ("dasd-g09", 75.0, 25.0, 25.0),
        ("dasd-g05", 50.0, 50.0, 50.0), ("none-kept", 0.0, None, 100.0)]
    assert table["dasd-g09"]["guarded_percent"] == 50.0
    assert {m for m, r in table.items() if r["pareto_kept"]} == {"dasd", "dasd-g09"}
    assert {m for m, r in table.items() if r["pareto_all"]} == {"dasd", "dasd-g09"}
    assert beats_sd(list(table.values())) == ["dasd-g09"]
    assert beats_sd(list(table.values()), "all") == ["dasd-g09"]
    assert beats_sd([r for m, r in table.items() if m != "sd"]) == []


def test_pareto_keeps_ties_and_drops_strictly_worse_points():
    table = [{"kept_percent": k, "x": p} for k, p in [(50, 10), (50, 10), (40, 10), (60, 20),
                                                        (None, 5), (70, None)]]
    assert pareto(table, "x") == [True, True, False, True, False, False]


def test_describe_names_the_settings_that_place_a_method():
    assert describe([{"method": "sd", "settings": {"tau": 0.2}}]) == "sd"
    assert describe([{"method": "dasd", "settings": {}}]) == "dasd guard 1 tau 0.2"
    assert describe([{"method": "dasd-sample", "settings": {
        "top_k": 9, "fallback": "base", "temperature": 0.7, "guard": 0.95}}]) == (
        "dasd-sample guard 0.95 tau 0.2 K 9 base fallback T 0.7")


@pytest.mark.parametrize("text, expected", [
    (" 42", NUMBER), ("3.", NUMBER), ("x2", NUMBER), (" +", OPERATOR), ("=", OPERATOR),
    (" $", OPERATOR), ("\\times", OPERATOR), ("(", OPERATOR), (" apples", WORD), ("ing", WORD),
    ("\n\n", FORMAT), (" ", FORMAT), (".", FORMAT), ("**", FORMAT), ("\\boxed", FORMAT)])
def test_token_classes(text, expected):
    assert token_class(text) == expected


def departure_rows():
    sd = [row(i, 1, [0.9] * 4, method="sd", correct=i != 2) for i in range(3)]
    dasd = [row(0, 1, [0.9, 0.8, 0.6, 0.9], correct=False, ref_rank=[1, 1, 3, 1],
                ids=[100, 101, 7, 103]),  # departs at 2, sd right: lost
            row(1, 1, [0.9] * 4, correct=True, ref_rank=[1, 2, 1, 1]),  # right: not lost
            row(2, 1, [0.9] * 4, correct=False, ref_rank=[2, 1, 1, 1])]  # sd wrong too
    for r in dasd:
        r["tokens"]["p_ref"] = [0.9, 0.9, 0.25, 0.9]
    return sd, dasd


def test_answer_losing_departures_by_hand():
    sd, dasd = departure_rows()
    assert [first_departure(r) for r in dasd] == [2, 1, 0]
    texts = {100: "The", 101: " answer", 102: " 12", 103: ".", 7: " about"}
    table = departure_table({"dasd": dasd}, sd,
                            lambda r: [texts.get(i, "?") for i in r["completion_ids"]])
    assert table == [{
        "method": "dasd", "id": "arith-train-00000", "level": 1, "position": 2,
        "token": " about", "class": WORD, "p_ref": 0.25, "p_base": 0.6,
        "sd_token": " 12", "sd_class": NUMBER, "sd_p_ref": 0.9, "sd_p_base": 0.9,
        "same_prefix": True}]
    summary = {r["token_class"]: r for r in departure_summary(table)}
    assert summary[WORD]["departures"] == 1 and summary[WORD]["percent"] == 100.0
    assert summary[NUMBER]["replaced_reference_tokens"] == 1
    assert summary[WORD]["mean_sd_p_ref"] == 0.9 and summary[NUMBER]["mean_p_ref"] is None
    unknown = departure_table({"dasd": dasd}, sd, lambda r: None)
    assert unknown[0]["class"] == "unknown (no tokenizer)" and unknown[0]["token"] == "<7>"


def test_show_marks_the_answer_losing_departure(tmp_path):
    tokenizer = make_tokenizer()
    ids = tokenizer("ab12", add_special_tokens=False)["input_ids"]
    other = tokenizer("abxy", add_special_tokens=False)["input_ids"]
    write_jsonl(tmp_path / "sd.jsonl", [row(0, 1, [0.9] * 4, method="sd", ids=ids)])
    lost = row(0, 1, [0.9, 0.9, 0.5, 0.9], correct=False, ref_rank=[1, 1, 2, 1], ids=other)
    write_jsonl(tmp_path / "dasd.jsonl", [lost])
    console = Console(record=True, width=120)
    show(tmp_path, "0", tokenizer=tokenizer, console=console)
    text = console.export_text()
    assert "ab[x]y" in text and "answer-losing departure at token 2 [x] (word piece" in text
    assert text.count("answer-losing departure") == 1  # not on sd's own row


def test_distance_from_sd_counts_identical_rows_and_departed_tokens():
    from dasd.analysis.frontier import frontier_table

    def rows(method, settings, ids_tokens, ranks):
        return [{"id": i, "method": method, "settings": settings, "completion_ids": toks,
                 "correct": True, "level": 1,
                 "tokens": {"category": [0] * len(toks), "p_base": [0.9] * len(toks),
                            "ref_rank": rk}}
                for (i, toks), rk in zip(ids_tokens, ranks, strict=True)]

    sd = rows("sd", {}, [("a", [1, 2]), ("b", [3, 4])], [[1, 1], [1, 1]])
    twin = rows("dasd", {"guard": 0.1}, [("a", [1, 2]), ("b", [3, 4])], [[1, 1], [1, 1]])
    paper = rows("dasd", {}, [("a", [1, 5]), ("b", [3, 4])], [[1, 2], [1, 1]])
    table = {r["method"]: r for r in frontier_table({"sd": sd, "dasd-g0.1": twin,
                                                     "dasd": paper})}
    assert table["dasd"]["same_as_sd_percent"] == 50.0
    assert table["dasd"]["departed_tokens_percent"] == 25.0
    assert table["dasd-g0.1"]["same_as_sd_percent"] == 100.0
    assert table["dasd-g0.1"]["same_as_paper_dasd_percent"] == 50.0
    assert table["dasd-g0.1"]["equals_sd"] and not table["sd"]["equals_sd"]
    assert not table["dasd-g0.1"]["pareto_kept"]  # sd under another name: no point of its own
