"""Which generated rows become training rows, and what replaces the rejected ones.

Two filtering policies exist in the literature:
- DASD (and most self-distillation work): keep a row only if its final answer is correct;
  rejected rows are dropped (`rejected="drop"`).
- Plain self-distillation as its authors ran it (Yang et al., ACL 2024; sail-sg/sdft,
  `eval/gen_distilled_data.py`): a rewrite is kept only if its answer is correct *and* it
  does not mention the reference ("reference answer", "your response", ...); otherwise the
  **original reference** is trained on in its place (`rejected="reference"`), so no problem
  is lost.

With several samples per problem (`dasd generate --samples n`, ids `<id>#s<k>`), a problem
gives one training row by default, its first correct sample (`per_problem="first"`), or
every correct sample (`"all"`); a rejected sample is replaced by the reference only when
no sample of its problem is kept, and then once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dasd.errors import DasdError
from dasd.stats import split_sample_id

# sail-sg/sdft's ban list (matched case-insensitively), plus "reference solution", the
# words of this project's own reference prompt.
SDFT_BANNED_PHRASES = ("reference answer", "reference solution", "your response",
                       "my response", "your own response", "now it's your turn")
SDFT_BANNED_PREFIXES = ("Your turn",)
REJECTED_POLICIES = ("drop", "reference")
PER_PROBLEM = ("first", "all")

# Why a row was rejected, in the words of the setting responsible.
REJECT_REASONS = {
    "not_correct": "not correct (only_correct=true)",
    "length_capped": "length-capped (drop_length_capped=true)",
    "mentions_reference": "mentioning the reference (reject_mentions=true)",
    "extra_sample": "further samples of a problem already kept or replaced (per_problem=first, "
                    "or rejected=reference)",
}


@dataclass(frozen=True)
class RowFilter:
    only_correct: bool = True
    drop_length_capped: bool = False
    reject_mentions: bool = False
    banned_phrases: tuple[str, ...] = SDFT_BANNED_PHRASES
    rejected: Literal["drop", "reference"] = "drop"
    per_problem: Literal["first", "all"] = "first"

    def __post_init__(self) -> None:
        if self.rejected not in REJECTED_POLICIES:
            raise DasdError(f"rejected must be one of {', '.join(REJECTED_POLICIES)} "
                            f"(drop: DASD recipe; reference: Yang et al. 2024); "
                            f"got {self.rejected!r}")
        if self.per_problem not in PER_PROBLEM:
            raise DasdError(f"per_problem must be one of {', '.join(PER_PROBLEM)} (first: the "
                            f"first correct sample of a problem; all: every one); "
                            f"got {self.per_problem!r}")

    def reason(self, row: dict[str, Any]) -> str | None:
        """Why `row` is rejected (a key of REJECT_REASONS), or None to keep it."""
        if self.only_correct and row.get("correct") is not True:
            return "not_correct"
        if self.drop_length_capped and row.get("finish_reason") == "length":
            return "length_capped"
        if self.reject_mentions and mentions_reference(row.get("completion", ""),
                                                       self.banned_phrases):
            return "mentions_reference"
        return None


def mentions_reference(text: str, phrases: Sequence[str] = SDFT_BANNED_PHRASES) -> bool:
    """True when `text` contains a banned phrase (any case) or starts with "Your turn"."""
    lowered = text.lower()
    return (any(phrase.lower() in lowered for phrase in phrases)
            or text.lstrip().startswith(SDFT_BANNED_PREFIXES))


def apply_filter(rows: Sequence[tuple[str, dict[str, Any]]], row_filter: RowFilter,
                 to_reference: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 ) -> tuple[list[tuple[str, dict[str, Any]]], Counter, Counter]:
    """(kept (source, row) pairs, rejected counts by reason, replaced counts by reason).

    Rows are grouped by problem (the samples of one problem in one file). A problem keeps
    its accepted rows (the first only, with `per_problem="first"`); with
    `rejected="reference"` a problem with none is trained once on `to_reference(row)` of
    its first row, the same problem with its original reference as the completion, in
    that row's place. With one sample per problem every row is its own group.
    """
    if row_filter.rejected == "reference" and to_reference is None:
        raise ValueError("rejected='reference' needs a to_reference function")
    reasons = [row_filter.reason(row) for _, row in rows]
    decided: dict[int, tuple[str, dict[str, Any]]] = {}
    rejected, replaced = Counter(), Counter()
    for members in _problems(rows):
        accepted = [i for i in members if reasons[i] is None]
        if row_filter.per_problem == "first":
            rejected["extra_sample"] += len(accepted[1:])
            accepted = accepted[:1]
        for i in accepted:
            decided[i] = rows[i]
        refused = [i for i in members if reasons[i] is not None]
        if not accepted and row_filter.rejected == "reference":
            first, *others = refused
            replaced[reasons[first]] += 1
            decided[first] = (rows[first][0], to_reference(rows[first][1]))
            rejected["extra_sample"] += len(others)
        else:
            rejected.update(reasons[i] for i in refused)
    kept = [decided[i] for i in sorted(decided)]
    return kept, +rejected, replaced


def _problems(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[list[int]]:
    """Indices of the rows of each problem: the samples of one id in one file (a file
    given twice, or a sample number seen again, starts a new group)."""
    groups: dict[tuple[str, str], list[tuple[set[int], list[int]]]] = {}
    for i, (source, row) in enumerate(rows):
        problem, k = split_sample_id(row["id"]) if "id" in row else (f"\x00row {i}", 1)
        runs = groups.setdefault((source, problem), [])
        if not runs or k in runs[-1][0]:
            runs.append((set(), []))
        runs[-1][0].add(k)
        runs[-1][1].append(i)
    return sorted((members for runs in groups.values() for _, members in runs),
                  key=lambda members: members[0])
