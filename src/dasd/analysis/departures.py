"""Where answers are lost: the first token where a method left the reference top-1, on the
problems it got wrong and plain self-distillation (`sd`) got right.

DASD emits the reference top-1 until the first step where another candidate passes tau
(or the base fallback fires); up to that step its response is exactly `sd`'s (same
prompts, same tokens), so that step is where the two responses part. When DASD's answer
is wrong and sd's right, that departure is the first place the answer can have been lost.
Each departure is classified by the text of the token DASD emitted there, and of the
reference top-1 it replaced (sd's token at the same position):

- digit/number: the token holds a digit;
- operator/symbol: arithmetic and other symbols (= + - * / ^ % $ ( ) <, LaTeX \\times ...);
- word piece: a piece of a word (letters);
- whitespace/format: spaces, newlines, punctuation and markup (. , : * # \\boxed ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dasd.stats import split_sample_id

Rows = Sequence[dict[str, Any]]
Table = list[dict[str, Any]]

NUMBER, OPERATOR, WORD, FORMAT = ("digit/number", "operator/symbol", "word piece",
                                  "whitespace/format")
TOKEN_CLASSES = (NUMBER, OPERATOR, WORD, FORMAT)
UNKNOWN = "unknown (no tokenizer)"
MATH_COMMANDS = {"times", "cdot", "div", "frac", "dfrac", "tfrac", "pm", "mp", "le", "leq",
                 "ge", "geq", "neq", "ne", "sqrt", "approx", "equiv", "sum", "prod", "int",
                 "infty", "pi", "circ", "lt", "gt", "log", "ln", "sin", "cos", "tan"}
FORMAT_CHARS = set(".,:;!?'\"`*#_~|[]{}\\")


def token_class(text: str | None) -> str:
    """The class of one token's text (see the module docstring)."""
    if text is None:
        return UNKNOWN
    stripped = text.strip()
    if not stripped:
        return FORMAT
    if any(c.isdigit() for c in stripped):
        return NUMBER
    if stripped.startswith("\\") and stripped[1:].isalpha():
        return OPERATOR if stripped[1:] in MATH_COMMANDS else FORMAT
    if any(c.isalpha() for c in stripped):
        return WORD
    if all(c in FORMAT_CHARS for c in stripped):
        return FORMAT
    return OPERATOR


def first_departure(row: dict[str, Any]) -> int | None:
    """The first position whose token is not the reference top-1 (reference rank > 1)."""
    ranks = row["tokens"].get("ref_rank")
    return next((i for i, rank in enumerate(ranks or []) if rank != 1), None)


TextOf = Callable[[dict[str, Any]], Sequence[str] | None]


def departure_table(runs: Mapping[str, Rows], sd_rows: Rows, text_of: TextOf) -> Table:
    """One row per (method, sample) that is wrong where sd's sample of its problem is right,
    at the method's first departure from the reference top-1. `text_of(row)` gives a row's
    token texts (None: the tokenizer is unavailable, classes are "unknown")."""
    sd_right = {r["id"]: r for r in sd_rows if r.get("correct")}
    table = []
    for method, rows in runs.items():
        for row in rows:
            sd = sd_right.get(split_sample_id(row["id"])[0])
            at = first_departure(row)
            if row.get("correct") or sd is None or at is None:
                continue
            table.append({"method": method, "id": row["id"], "level": row.get("level"),
                          "position": at, **_token(row, at, text_of, ""),
                          **_token(sd, at, text_of, "sd_"),
                          "same_prefix": row["completion_ids"][:at] == sd["completion_ids"][:at]})
    return table


def _token(row: dict[str, Any], at: int, text_of: TextOf, prefix: str) -> dict[str, Any]:
    stats = row["tokens"]
    if at >= len(row["completion_ids"]):  # sd's response ended before the departure
        return {f"{prefix}{k}": None for k in ("token", "class", "p_ref", "p_base")}
    texts = text_of(row)
    text = texts[at] if texts is not None else None
    return {f"{prefix}token": text if text is not None else f"<{row['completion_ids'][at]}>",
            f"{prefix}class": token_class(text),
            f"{prefix}p_ref": stats["p_ref"][at] if "p_ref" in stats else None,
            f"{prefix}p_base": stats["p_base"][at]}


def departure_summary(table: Table) -> Table:
    """Per method and token class: the answer-losing departures whose emitted token (and,
    separately, the reference top-1 it replaced) is of that class, their share, and the
    mean p_ref and p_base of the emitted token."""
    summary = []
    for method in dict.fromkeys(r["method"] for r in table):
        rows = [r for r in table if r["method"] == method]
        classes = [*TOKEN_CLASSES, *([UNKNOWN] if any(r["class"] == UNKNOWN for r in rows)
                                     else [])]
        for name in classes:
            mine = [r for r in rows if r["class"] == name]
            replaced = sum(r["sd_class"] == name for r in rows)
            summary.append({
                "method": method, "token_class": name, "departures": len(mine),
                "percent": 100.0 * len(mine) / len(rows),
                "replaced_reference_tokens": replaced,
                "replaced_percent": 100.0 * replaced / len(rows),
                "mean_p_ref": _mean([r["p_ref"] for r in mine]),
                "mean_p_base": _mean([r["p_base"] for r in mine]),
                "mean_sd_p_ref": _mean([r["sd_p_ref"] for r in mine])})
    return summary


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
