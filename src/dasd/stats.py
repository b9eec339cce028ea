"""Summary numbers of generated rows: kept samples, token categories, high-PPL ratio.

Shared by generation (each output's summary) and the analyses, so it lives below both.

A token is high-PPL when its perplexity under the base context, exp(-log p_base), exceeds
the threshold (paper: 2.5, i.e. p_base < 0.4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Token categories of the paper (Section 3), stored as small ints in the JSONL rows, plus
# `guarded` (DASD's confidence guard emitted the reference top-1 where the paper's rule
# would not have). New categories only ever get new ints, so older files still read.
CONSISTENT, RESERVED, BASE_SELECTED, HARD, GUARDED = 0, 1, 2, 3, 4
CATEGORY_NAMES = ("consistent", "reserved", "base-selected", "hard", "guarded")

# Several samples per problem (`dasd generate --samples n`): sample 1 keeps the problem's
# id, so its row is the one a single-sample run writes; sample k >= 2 is "<id>#s<k>".
SAMPLE_MARK = "#s"


def sample_id(problem: str, k: int) -> str:
    """The row id of sample `k` (1-based) of `problem`."""
    return problem if k == 1 else f"{problem}{SAMPLE_MARK}{k}"


def split_sample_id(row_id: str) -> tuple[str, int]:
    """(problem id, sample number) of a row id; ids without the mark are sample 1."""
    problem, mark, k = str(row_id).rpartition(SAMPLE_MARK)
    if mark and k.isdigit() and int(k) >= 2:
        return problem, int(k)
    return str(row_id), 1


def high_ppl_mask(p_base: Sequence[float], threshold: float = 2.5) -> list[bool]:
    return [p <= 0 or -math.log(p) > math.log(threshold) for p in p_base]


def category_shares(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Percentage of all response tokens in each category (sums to 100 when any token)."""
    counts = dict.fromkeys(CATEGORY_NAMES, 0)
    for row in rows:
        for code in row["tokens"]["category"]:
            counts[CATEGORY_NAMES[code]] += 1
    total = sum(counts.values())
    return {name: (100.0 * c / total if total else 0.0) for name, c in counts.items()}


def high_ppl_ratio(rows: Sequence[dict[str, Any]], threshold: float = 2.5) -> float:
    """Percentage of response tokens whose base-model perplexity exceeds `threshold`."""
    flags = [f for row in rows for f in high_ppl_mask(row["tokens"]["p_base"], threshold)]
    return 100.0 * sum(flags) / len(flags) if flags else 0.0


def kept_problems(rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(problems with at least one correct sample, problems): kept-at-n."""
    problems: dict[str, bool] = {}
    for row in rows:
        problem = split_sample_id(row["id"])[0]
        problems[problem] = problems.get(problem, False) or bool(row.get("correct"))
    return sum(problems.values()), len(problems)


def summarize(rows: Sequence[dict[str, Any]], threshold: float = 2.5) -> dict[str, Any]:
    kept = [r for r in rows if r["correct"]]
    n_tokens = sum(len(r["completion_ids"]) for r in rows)
    solved, problems = kept_problems(rows)
    return {
        "samples": len(rows),
        "kept": len(kept),
        "kept_percent": 100.0 * len(kept) / len(rows) if rows else 0.0,
        "sampled_problems": problems,  # < samples with several samples per problem
        "kept_problems": solved,       # kept-at-n: problems with a correct sample
        "length_capped": sum(r["finish_reason"] == "length" for r in rows),
        "tokens": n_tokens,
        "mean_tokens": n_tokens / len(rows) if rows else 0.0,
        "categories_percent": category_shares(rows),
        "categories_percent_kept": category_shares(kept),
        "high_ppl_threshold": threshold,
        "high_ppl_percent": high_ppl_ratio(rows, threshold),
        "high_ppl_percent_kept": high_ppl_ratio(kept, threshold),
    }


# Per-token quantities of the analyses. A recorded p_base of 0 (float underflow) is read as
# P_FLOOR so that logs stay finite; such a token is high-PPL under any threshold.
P_FLOOR = 1e-30


def neg_log(p: float) -> float:
    """-log p in nats, with p floored at P_FLOOR."""
    return -math.log(max(p, P_FLOOR))


def perplexity(p_values: Sequence[float]) -> float:
    """exp(mean -log p) over a run of tokens (a segment's base-model perplexity)."""
    if not p_values:
        raise ValueError("perplexity of an empty segment")
    return math.exp(sum(neg_log(p) for p in p_values) / len(p_values))


def phi(p_base: Sequence[float], base_entropy: Sequence[float]) -> list[float]:
    """Distribution fit of each token under the base model: log p_base(token) + H(p_base).

    Positive: the token is more likely than the base distribution's typical token
    (probability above exp(-H)); negative: less likely (Hint-decoding paper's phi_t).
    """
    return [-neg_log(p) + h for p, h in zip(p_base, base_entropy, strict=True)]
