"""Paired comparisons: each number against an independent hand computation."""

import math

import pytest

from dasd.analysis.compare import (
    CompareSettings,
    accuracy_interval,
    compare_models,
    default_pairs,
    paired_comparison,
    problem_scores,
)
from dasd.errors import DasdError

SETTINGS = CompareSettings()


def verdicts(bits: str, level: str = "1") -> dict[str, tuple[float, str]]:
    return {f"p{i}": (float(b), level) for i, b in enumerate(bits)}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: twice the smaller binomial tail of b in b + c, at most 1."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(0, min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_interval_matches_the_formula():
    for k, n in [(2, 50), (4, 50), (0, 20), (20, 20), (208, 500)]:
        got = accuracy_interval([1.0] * k + [0.0] * (n - k), SETTINGS)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx(wilson(k, n), abs=1e-12)
        assert got["accuracy"] == k / n and got["interval"] == "wilson"


def test_a_distinguishable_pair_matches_mcnemar_by_hand():
    # a right where b is wrong on 14 problems, the reverse on 2, 34 concordant
    a = verdicts("1" * 14 + "0" * 2 + "1" * 10 + "0" * 24)
    b = verdicts("0" * 14 + "1" * 2 + "1" * 10 + "0" * 24)
    got = paired_comparison(a, b, SETTINGS)
    assert (got["a_better"], got["b_better"], got["n"]) == (14, 2, 50)
    assert got["p_value"] == pytest.approx(mcnemar_exact(14, 2), rel=1e-12)
    assert got["p_value"] < 0.01 and got["test"] == "exact McNemar"
    assert got["difference"] == pytest.approx(12 / 50)
    assert 0 < got["ci_low"] < 0.24 < got["ci_high"] and got["distinguishable"]


def test_a_pair_that_is_not_distinguishable():
    # the demo's shape: 2 of 50 against 4 of 50
    a = verdicts("11" + "0" * 48)
    b = verdicts("0011" + "11" + "0" * 44)
    got = paired_comparison(a, b, SETTINGS)
    assert (got["a_better"], got["b_better"]) == (2, 4)
    assert got["p_value"] == pytest.approx(mcnemar_exact(2, 4), rel=1e-12)
    assert got["ci_low"] < 0 < got["ci_high"] and not got["distinguishable"]


def test_identical_models_are_not_distinguishable_and_p_is_one():
    a = verdicts("1010" * 10)
    got = paired_comparison(a, a, SETTINGS)
    assert (got["ci_low"], got["ci_high"], got["p_value"]) == (0.0, 0.0, 1.0)
    assert not got["distinguishable"]


def test_the_bootstrap_is_seeded_and_resamples_problems():
    a = verdicts("1100101" * 7)
    b = verdicts("1010100" * 7)
    first, again = paired_comparison(a, b, SETTINGS), paired_comparison(a, b, SETTINGS)
    assert first == again
    other = paired_comparison(a, b, CompareSettings(seed=1))
    assert other["ci_low"] != first["ci_low"] or other["ci_high"] != first["ci_high"]


def test_sampled_evaluation_scores_problems_not_samples():
    rows = [{"id": "a", "level": 1, "correct": True, "samples": [{}] * 4, "n_correct": 3},
            {"id": "b", "level": 2, "correct": False, "samples": [{}] * 4, "n_correct": 0}]
    scores = problem_scores(rows)
    assert scores == {"a": (0.75, "1"), "b": (0.0, "2")}
    got = accuracy_interval([s for s, _ in scores.values()], SETTINGS)
    assert got["interval"] == "bootstrap" and got["accuracy"] == 0.375
    other = {"a": (0.25, "1"), "b": (0.0, "2")}
    assert paired_comparison(scores, other, SETTINGS)["test"] == "exact sign test"


def test_seeds_of_one_problem_are_pooled_into_one_score():
    rows = [{"id": "a", "level": None, "correct": c} for c in (True, False, True)]
    assert problem_scores(rows) == {"a": (pytest.approx(2 / 3), "none")}


def test_pairs_per_level_and_the_default_pairs():
    names = ["origin", "sd", "dasd"]
    assert default_pairs(names, [["dasd", "dasd-g"]]) == [
        ("sd", "origin"), ("dasd", "origin"), ("dasd", "sd"), ("dasd", "dasd-g")]
    scores = {"origin": {**verdicts("10", "1"), **{"q": (0.0, "2")}},
              "dasd": {**verdicts("11", "1"), **{"q": (1.0, "2")}}}
    result = compare_models(scores, [("dasd", "origin")], SETTINGS)
    assert [(c["level"], c["n"]) for c in result["comparisons"]] == [("all", 3), ("1", 2),
                                                                    ("2", 1)]
    assert set(result["accuracy"]["dasd"]) == {"all", "1", "2"}
    assert "not distinguishable from origin at n = 3" in result["comparisons"][0]["verdict"]


@pytest.mark.parametrize("kwargs, message", [
    ({"confidence": 1.0}, "confidence must be in"), ({"confidence": 0.1}, "confidence"),
    ({"resamples": 10}, "resamples must be >= 100")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(DasdError, match=message):
        CompareSettings(**kwargs)
