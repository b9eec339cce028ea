"""Selection rules: one small object per method, picked by name from `RULES`.

A rule maps one step's reference and base log-probabilities ([B, V] each) to the emitted
tokens and their categories. The engine owns caches and stopping and never branches on
the rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch

from dasd.config import build_settings, omitted
from dasd.decoding.rules.base import BaseRule
from dasd.decoding.rules.common import CATEGORY_NAMES, Selection, ranked_top_k
from dasd.decoding.rules.dasd import DASDRule
from dasd.decoding.rules.dasd_sample import SampledDASDRule
from dasd.decoding.rules.hint import HintRule
from dasd.decoding.rules.sd import SDRule
from dasd.registry import lookup


class SelectionRule(Protocol):
    """Optional hooks for stateful rules (e.g. `hint`): `start(keys, decode)` and
    `keep(indices)`; the engine calls them when present (see `decoding/engine.py`)."""

    def select(self, ref_logprobs: torch.Tensor, base_logprobs: torch.Tensor) -> Selection: ...


RULES: dict[str, type] = {"dasd": DASDRule, "sd": SDRule, "base": BaseRule, "hint": HintRule,
                          "dasd-sample": SampledDASDRule}


def rule_settings(rule: Any) -> dict[str, Any]:
    """Every setting of a rule (the stage's seed too), as recorded in each row; settings
    newer than the format are left out at their default (`dasd.config.omitted`)."""
    return {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule)
            if f.init and not omitted(f, getattr(rule, f.name))}


def get_rule(method: str) -> type:
    """The rule class called `method`; a typo gets a did-you-mean hint."""
    return lookup(RULES, method, "decoding method")


def build_rule(method: str, seed: int = 0, **settings: Any) -> SelectionRule:
    """The rule named `method` with its own `settings` (an unknown one is an error); a
    rule that samples gets the stage's `seed`."""
    cls = get_rule(method)
    rule = build_settings(cls, settings, f"method '{method}'")
    if "seed" in {f.name for f in dataclasses.fields(cls)}:
        rule = dataclasses.replace(rule, seed=seed)
    return rule


__all__ = ["CATEGORY_NAMES", "RULES", "Selection", "SelectionRule", "build_rule", "get_rule",
           "ranked_top_k", "rule_settings"]
