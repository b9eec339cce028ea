"""Which generated rows become training rows, and what replaces the rejected ones.

Two filtering policies exist in the literature:
- DASD (and most self-distillation work): keep a row only if its final answer is correct;
  rejected rows are dropped (`rejected="drop"`).
- Plain self-distillation as its authors ran it (Yang et al., ACL 2024; sail-sg/sdft,
  `eval/gen_distilled_data.py`): a rewrite is kept only if its answer is correct *and* it
  does not mention the reference ("reference answer", "your response", ...); otherwise the
  **original reference** is trained on in its place (`rejected="reference"`), so no problem
  is lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dasd.errors import DasdError

# sail-sg/sdft's ban list (matched case-insensitively), plus "reference solution", the
# words of this project's own reference prompt.
SDFT_BANNED_PHRASES = ("reference answer", "reference solution", "your response",
                       "my response", "your own response", "now it's your turn")
SDFT_BANNED_PREFIXES = ("Your turn",)
REJECTED_POLICIES = ("drop", "reference")

# Why a row was rejected, in the words of the setting responsible.
REJECT_REASONS = {
    "not_correct": "not correct (only_correct=true)",
    "length_capped": "length-capped (drop_length_capped=true)",
    "mentions_reference": "mentioning the reference (reject_mentions=true)",
}


@dataclass(frozen=True)
class RowFilter:
    only_correct: bool = True
    drop_length_capped: bool = False
    reject_mentions: bool = False
    banned_phrases: tuple[str, ...] = SDFT_BANNED_PHRASES
    rejected: Literal["drop", "reference"] = "drop"

    def __post_init__(self) -> None:
        if self.rejected not in REJECTED_POLICIES:
            raise DasdError(f"rejected must be one of {', '.join(REJECTED_POLICIES)} "
                            f"(drop: DASD recipe; reference: Yang et al. 2024); "
                            f"got {self.rejected!r}")

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

    With `rejected="reference"` every rejected row is replaced by `to_reference(row)`, the
    same problem with its original reference as the completion, in the row's place.
    """
    if row_filter.rejected == "reference" and to_reference is None:
        raise ValueError("rejected='reference' needs a to_reference function")
    kept, rejected, replaced = [], Counter(), Counter()
    for source, row in rows:
        reason = row_filter.reason(row)
        if reason is None:
            kept.append((source, row))
        elif row_filter.rejected == "reference":
            replaced[reason] += 1
            kept.append((source, to_reference(row)))
        else:
            rejected[reason] += 1
    return kept, rejected, replaced
