"""Selection rules: one small object per method, picked by name from `RULES`.

A rule maps one step's reference and base log-probabilities ([B, V] each) to the emitted
tokens and their categories. The engine owns caches and stopping and never branches on
the rule.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Protocol

import torch

from dasd.decoding.rules.base import BaseRule
from dasd.decoding.rules.common import CATEGORY_NAMES, Selection, ranked_top_k
from dasd.decoding.rules.dasd import DASDRule
from dasd.decoding.rules.hint import HintRule
from dasd.decoding.rules.sd import SDRule
from dasd.errors import DasdError


class SelectionRule(Protocol):
    """Optional hooks for stateful rules (e.g. `hint`): `start(keys, decode)` and
    `keep(indices)`; the engine calls them when present (see `decoding/engine.py`)."""

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection: ...


RULES: dict[str, type] = {"dasd": DASDRule, "sd": SDRule, "base": BaseRule, "hint": HintRule}


def rule_settings(rule: Any) -> dict[str, Any]:
    return dataclasses.asdict(rule)


def build_rule(method: str, **settings: Any) -> SelectionRule:
    """Build the rule named `method`, taking from `settings` only the fields it has."""
    if method not in RULES:
        hint = difflib.get_close_matches(method, RULES, n=1)
        did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise DasdError(f"unknown method '{method}': choose one of {', '.join(RULES)}"
                        f"{did_you_mean}")
    cls = RULES[method]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in names})


__all__ = ["CATEGORY_NAMES", "RULES", "Selection", "SelectionRule", "build_rule",
           "ranked_top_k", "rule_settings"]
