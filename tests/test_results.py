"""The results table and the analysis mark an evaluation on a subset of the split."""

from __future__ import annotations


def report(**eval_summary):
    ev = {"accuracy": 0.412, "n": 100, "correct": 41, "per_level": {}, **eval_summary}
    return {"name": "r", "model": "m", "task": "math", "total_seconds": 1, "methods": {
        "origin": {"eval": ev},
        "sd": {"generate": {"kept": 3, "samples": 10, "high_ppl_percent_kept": 5.0},
               "train": {"rows": {"read": 10, "used": 10, "replaced_by_reference": {}}},
               "eval": ev}}}


def test_the_results_table_marks_a_subset_and_shows_the_rows_trained_on():
    from dasd.results import results_markdown, results_rows

    subset = {"problems": {"n": 100, "of": 500, "subset": True}}
    header, rows = results_rows(report(**subset))
    assert rows[0][1] == "0.412 (100 of 500)"
    sd = dict(zip(header, rows[1], strict=True))
    assert (sd["correct/total"], sd["trained on"]) == ("3/10", "10")  # only_correct: false
    assert "100 of 500" in results_markdown(report(**subset))
    whole = {"problems": {"n": 100, "of": 100, "subset": False}}
    assert results_rows(report(**whole))[1][0][1] == "0.412 (100)"


def test_the_analysis_marks_a_subset():
    from dasd.analysis.tables import accuracy_table

    summary = {"n": 4, "correct": 3, "accuracy": 0.75, "per_level": {},
               "problems": {"n": 4, "of": 10, "subset": True}}
    (row,) = accuracy_table({"dasd": summary})
    assert (row["n"], row["of"], row["subset"]) == (4, 10, True)


# --- reproducibility ------------------------------------------------------------------------
