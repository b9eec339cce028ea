"""What a selection rule returns, the token categories, and deterministic ranking."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Token categories of the paper (Section 3). Stored as small ints in the JSONL rows.
CONSISTENT, RESERVED, BASE_SELECTED, HARD = 0, 1, 2, 3
CATEGORY_NAMES = ("consistent", "reserved", "base-selected", "hard")


@dataclass
class Selection:
    """One step's choice for every active example: token ids [B] and categories [B]."""

    tokens: torch.Tensor
    categories: torch.Tensor


def ranked_top_k(logprobs: torch.Tensor, k: int) -> torch.Tensor:
    """Ids of the k most likely tokens per row, most likely first; ties go to the lower id.

    A stable sort makes the order independent of the backend (torch.topk leaves ties in an
    unspecified order), and agrees with `argmax`, which also returns the first maximum.
    """
    k = min(k, logprobs.shape[-1])
    order = torch.sort(logprobs, dim=-1, descending=True, stable=True).indices
    return order[..., :k]


def label_steps(tokens: torch.Tensor, ref_top1: torch.Tensor, base_top1: torch.Tensor,
                passed: torch.Tensor, fallback_category: int) -> torch.Tensor:
    """DASD's category of each step: consistent, else reserved if a candidate passed,
    else the fallback's category (hard for the forced reference top-1, base-selected)."""
    categories = torch.full_like(tokens, fallback_category)
    categories[passed] = RESERVED
    categories[ref_top1 == base_top1] = CONSISTENT
    return categories
