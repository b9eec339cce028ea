"""What a selection rule returns, the token categories, and deterministic ranking."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dasd.stats import BASE_SELECTED, CATEGORY_NAMES, CONSISTENT, GUARDED, HARD, RESERVED

__all__ = ["BASE_SELECTED", "CATEGORY_NAMES", "CONSISTENT", "GUARDED", "HARD", "RESERVED",
           "Selection", "label_emitted", "label_steps", "ranked_top_k"]


@dataclass
class Selection:
    """One step's choice for every active example: token ids [B] and categories [B]."""

    tokens: torch.Tensor
    categories: torch.Tensor


def ranked_top_k(logprobs: torch.Tensor, k: int) -> torch.Tensor:
    """Ids of the k most likely tokens per row, most likely first; ties go to the lower id.

    The order agrees with `argmax` (which returns the first maximum) and does not depend on
    the backend: `torch.topk` leaves ties in an unspecified order, so its k winners are
    re-sorted by (value, id), and rows where a tie straddles the k-th place (rare) fall
    back to a full stable sort.
    """
    k = min(k, logprobs.shape[-1])
    values, ids = torch.topk(logprobs, k, dim=-1)
    by_id = ids.argsort(dim=-1)
    values, ids = values.gather(-1, by_id), ids.gather(-1, by_id)
    by_value = torch.sort(values, dim=-1, descending=True, stable=True).indices
    ids = ids.gather(-1, by_value)
    straddling = (logprobs >= values.min(-1, keepdim=True).values).sum(-1) > k
    if straddling.any():
        full = torch.sort(logprobs[straddling], dim=-1, descending=True, stable=True).indices
        ids[straddling] = full[..., :k]
    return ids


def label_steps(tokens: torch.Tensor, ref_top1: torch.Tensor, base_top1: torch.Tensor,
                passed: torch.Tensor, fallback_category: int) -> torch.Tensor:
    """DASD's category of each step: consistent, else reserved if a candidate passed,
    else the fallback's category (hard for the forced reference top-1, base-selected)."""
    categories = torch.full_like(tokens, fallback_category)
    categories[passed] = RESERVED
    categories[ref_top1 == base_top1] = CONSISTENT
    return categories


def label_emitted(tokens: torch.Tensor, ref_logprobs: torch.Tensor,
                  base_logprobs: torch.Tensor, tau: float) -> torch.Tensor:
    """DASD's category vocabulary applied to the token actually emitted.

    consistent: it is both top-1s; base-selected: it is the base top-1 only; reserved:
    otherwise the base model gives it >= tau; hard: the base model finds it unlikely
    (< tau), the tokens DASD would have filtered. With beta 0 and temperature 0 this is
    exactly the `sd` rule's labelling; with lambda 1 and temperature 0 the `base` rule's.
    """
    ref_top1, base_top1 = ref_logprobs.argmax(-1), base_logprobs.argmax(-1)
    p_base = base_logprobs.gather(-1, tokens[:, None]).squeeze(-1).exp()
    categories = torch.where(p_base >= tau, RESERVED, HARD)
    categories = torch.where(tokens == base_top1, BASE_SELECTED, categories)
    return torch.where((tokens == ref_top1) & (tokens == base_top1), CONSISTENT, categories)
