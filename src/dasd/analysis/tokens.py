"""The token view shared by the HTML report and `dasd show`: one colour per category or
per base-probability band, and the per-token hover text."""

from __future__ import annotations

from typing import Any

from dasd.analysis.plots import CATEGORY_COLORS
from dasd.stats import CATEGORY_NAMES

# Base-probability bands: upper bounds (exclusive; the last includes 1) and colours. The
# 0.4 boundary is the high-PPL threshold 2.5 (p_base < 0.4 <=> PPL > 2.5).
P_BASE_BANDS = [(0.2, "#C0392B"), (0.4, "#E67E22"), (0.6, "#F6C85F"), (0.8, "#B7DFA0"),
                (float("inf"), "#E3F2E1")]
P_BASE_LABELS = ["p_base < 0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", ">= 0.8"]
DARK = {"#C0392B", "#9B59B6"}  # backgrounds that need white text

COLOR_BY = ("category", "p_base")


def p_base_band(p: float) -> int:
    return next(i for i, (upper, _) in enumerate(P_BASE_BANDS) if p < upper)


def legend(color_by: str) -> list[tuple[str, str]]:
    """(label, background colour) pairs of the colouring."""
    if color_by == "category":
        return [(name, CATEGORY_COLORS[name]) for name in CATEGORY_NAMES]
    return [(label, color) for label, (_, color) in zip(P_BASE_LABELS, P_BASE_BANDS,
                                                        strict=True)]


def background(color_by: str, category: int, p_base: float) -> str:
    if color_by == "category":
        return CATEGORY_COLORS[CATEGORY_NAMES[category]]
    return P_BASE_BANDS[p_base_band(p_base)][1]


def foreground(bg: str) -> str:
    return "#FFFFFF" if bg in DARK else "#000000"


def token_records(row: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    """Per token: text, category name, p_base, p_ref and reference rank (when recorded)."""
    stats = row["tokens"]
    n = len(row["completion_ids"])
    return [{"text": texts[i], "category": int(stats["category"][i]),
             "p_base": stats["p_base"][i],
             "p_ref": stats["p_ref"][i] if "p_ref" in stats else None,
             "ref_rank": stats["ref_rank"][i] if "ref_rank" in stats else None}
            for i in range(n)]


def hover(token: dict[str, Any]) -> str:
    parts = [f"p_base {token['p_base']:.4f}"]
    if token["p_ref"] is not None:
        parts.append(f"p_ref {token['p_ref']:.4f}")
    if token["ref_rank"] is not None:
        parts.append(f"ref rank {token['ref_rank']}")
    parts.append(CATEGORY_NAMES[token["category"]])
    return " | ".join(parts)
