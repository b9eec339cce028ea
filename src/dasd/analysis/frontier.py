"""The DASD-SD frontier: how many samples a decoding method keeps against how far its
tokens are from the base model.

Plain self-distillation (`sd`) keeps the reference's answers but writes many tokens the
base model finds unlikely; the paper's DASD writes fewer of them but, on a weak base model,
loses answers. The confidence guard (`guard` gamma) and tau move between the two. For every
method of a folder this table gives the kept rate (correct / total samples) and the
high-PPL ratio of the kept rows (the training data) and of all rows, marks `sd` and the
paper's DASD (K 6, tau 0.2, ref fallback, no guard), and flags the Pareto-optimal methods:
no other method keeps at least as many samples with a high-PPL ratio at least as low,
better in one of the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dasd.stats import CATEGORY_NAMES, category_shares, high_ppl_ratio, kept_problems

Rows = Sequence[dict[str, Any]]
Table = list[dict[str, Any]]

PAPER_DASD = {"top_k": 6, "tau": 0.2, "fallback": "ref", "guard": 1.0}
SD, PAPER = "sd", "paper dasd"
SUBSETS = ("kept", "all")  # high-PPL ratio of the kept rows, of all rows


def role(rows: Rows) -> str:
    """"sd", "paper dasd" or "" for a method's rows (by the rule and settings they record)."""
    first = rows[0] if rows else {}
    method, settings = first.get("method"), first.get("settings") or {}
    if method == "sd":
        return SD
    if method == "dasd" and all(settings.get(k, v) == v for k, v in PAPER_DASD.items()):
        return PAPER
    return ""


def describe(rows: Rows) -> str:
    """The rule and the settings that place a method on the frontier, e.g.
    'dasd guard 0.9 tau 0.2'; other rules by name only (sd's tau only labels steps)."""
    first = rows[0] if rows else {}
    method = str(first.get("method", "?"))
    if not method.startswith("dasd"):
        return method
    settings = {**PAPER_DASD, **(first.get("settings") or {})}
    shown = [f"guard {settings['guard']:g}", f"tau {settings['tau']:g}"]
    shown += [f"K {settings['top_k']}"] if settings["top_k"] != PAPER_DASD["top_k"] else []
    shown += [f"{settings['fallback']} fallback"] if settings["fallback"] != "ref" else []
    shown += [f"T {settings['temperature']:g}"] if "temperature" in settings else []
    return " ".join([method, *shown])


def identical_rows_percent(rows: Rows, other: Rows) -> float | None:
    """Share of `rows` whose response is token for token the response of `other`'s row of
    the same id (over the ids both have); None when they share no id with token ids."""
    theirs = {r["id"]: r.get("completion_ids") for r in other}
    pairs = [(r.get("completion_ids"), theirs[r["id"]]) for r in rows
             if theirs.get(r["id"]) is not None and r.get("completion_ids") is not None]
    return 100.0 * sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def departed_tokens_percent(rows: Rows) -> float | None:
    """Share of the tokens that are not the reference top-1 at their position: where sd,
    given the same prefix, would have emitted another token (from `tokens.ref_rank`)."""
    ranks = [k for r in rows for k in (r.get("tokens") or {}).get("ref_rank") or []]
    return 100.0 * sum(k != 1 for k in ranks) / len(ranks) if ranks else None


def distance_from(runs: Mapping[str, Rows], wanted: str) -> Rows | None:
    """The rows of the method whose role is `wanted` (sd, paper dasd), if one ran."""
    return next((rows for rows in runs.values() if role(rows) == wanted), None)


def frontier_table(runs: Mapping[str, Rows], threshold: float = 2.5) -> Table:
    """One row per method: kept rate, kept-at-n, high-PPL ratio of kept and of all rows,
    token categories (all rows), its role, how far it is from sd (rows token-identical to
    sd's and to the paper's DASD's, tokens that are not the reference top-1), whether it
    equals sd (then it is no point of its own), and whether it is Pareto-optimal per
    subset."""
    sd_rows, paper_rows = distance_from(runs, SD), distance_from(runs, PAPER)
    table = []
    for method, rows in runs.items():
        kept = [r for r in rows if r.get("correct")]
        solved, problems = kept_problems(rows)
        shares = category_shares(rows)
        settings = {**PAPER_DASD, **((rows[0].get("settings") or {}) if rows else {})}
        dasd_family = bool(rows) and str(rows[0].get("method", "")).startswith("dasd")
        table.append({
            "method": method, "rule": describe(rows), "role": role(rows),
            "guard": settings["guard"] if dasd_family else None,
            "tau": settings["tau"] if dasd_family else None,
            "samples": len(rows), "kept": len(kept),
            "kept_percent": 100.0 * len(kept) / len(rows) if rows else None,
            "problems": problems, "kept_problems": solved,
            "kept_problems_percent": 100.0 * solved / problems if problems else None,
            "high_ppl_percent_kept": high_ppl_ratio(kept, threshold) if kept else None,
            "high_ppl_percent_all": high_ppl_ratio(rows, threshold) if rows else None,
            **{f"{name}_percent": shares[name] for name in CATEGORY_NAMES},
            **_distances(rows, sd_rows, paper_rows)})
    for subset in SUBSETS:
        for row, optimal in zip(table, pareto(table, f"high_ppl_percent_{subset}"), strict=True):
            row[f"pareto_{subset}"] = optimal
    return table


def _distances(rows: Rows, sd_rows: Rows | None, paper_rows: Rows | None) -> dict[str, Any]:
    same_sd = identical_rows_percent(rows, sd_rows) if sd_rows is not None else None
    return {"same_as_sd_percent": same_sd,
            "same_as_paper_dasd_percent": identical_rows_percent(rows, paper_rows)
            if paper_rows is not None else None,
            "departed_tokens_percent": departed_tokens_percent(rows),
            "equals_sd": same_sd == 100.0 and role(rows) != SD}


def pareto(table: Table, ppl_column: str) -> list[bool]:
    """Per row: not dominated (another row keeps >= and has high-PPL <=, one strictly).
    Rows without a value (no kept rows) and rows equal to sd's (not a point of their own)
    are never optimal."""
    points = [(None, None) if r.get("equals_sd") else (r["kept_percent"], r[ppl_column])
              for r in table]

    def dominated(kept: float, ppl: float) -> bool:
        return any(k is not None and p is not None and k >= kept and p <= ppl and
                   (k > kept or p < ppl) for k, p in points)

    return [k is not None and p is not None and not dominated(k, p) for k, p in points]


def beats_sd(table: Table, subset: str = "kept") -> list[str]:
    """The methods that keep at least sd's share of samples with a lower high-PPL ratio
    (of the kept rows, or of all rows) than sd's; [] when there is no sd."""
    sd = next((r for r in table if r["role"] == SD), None)
    column = f"high_ppl_percent_{subset}"
    if sd is None or sd[column] is None:
        return []
    return [r["method"] for r in table if r["role"] != SD and r[column] is not None
            and r["kept_percent"] >= sd["kept_percent"] and r[column] < sd[column]]


def guard_sweep(table: Table) -> Table:
    """The greedy `dasd` rows that differ from the paper only in the guard, by guard from
    1 (the paper) down: the curve from the paper's DASD towards sd's tokens."""
    def paper_but_guard(r: dict[str, Any]) -> bool:
        return (r["rule"].startswith("dasd guard ") and r["tau"] == PAPER_DASD["tau"]
                and " K " not in r["rule"] and "fallback" not in r["rule"])
    return sorted((r for r in table if paper_but_guard(r)), key=lambda r: -r["guard"])
