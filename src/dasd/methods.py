"""Every method of a comparison in one registry: where its training data comes from, how
it trains, and its own typed settings.

The entries are derived from the registries of the stages, so a new decoding rule
(`decoding/rules`), SFT method (`training/sft_methods`) or on-policy method
(`training/onpolicy`) is a method of `dasd run` as soon as it is registered there:

- a decoding rule (dasd, sd, base, hint) decodes the training rows, then LoRA SFT;
- `reference`: the original reference solutions are the rows, then LoRA SFT;
- an SFT method (mask-ppl, profit) changes which tokens count in the loss; by default it
  trains on the references (the papers' setting), `data_from` points it at other rows;
- an on-policy method (opsd, pw-opsd, da-opsd) trains on the student's own rollouts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from dasd.registry import lookup

DECODE, REFERENCE, ROLLOUTS = "decode", "reference", "rollouts"


@dataclass
class NoSettings:
    """A method without settings of its own."""


@dataclass(frozen=True)
class Method:
    name: str
    source: str      # DECODE: its rule writes the rows; REFERENCE: the references; ROLLOUTS
    settings: type   # its settings dataclass (for DECODE: the rule class itself)
    trainer: str     # the `dasd train --method` it trains with (sft, mask-ppl, ..., opsd)
    summary: str

    @property
    def onpolicy(self) -> bool:
        return self.source == ROLLOUTS


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


@functools.cache
def methods() -> dict[str, Method]:
    from dasd.decoding.rules import RULES
    from dasd.training.onpolicy import METHODS
    from dasd.training.sft_methods import SFT_METHODS

    registry = {name: Method(name, DECODE, rule, "sft", _summary(rule))
                for name, rule in RULES.items()}
    registry[REFERENCE] = Method(REFERENCE, REFERENCE, NoSettings, "sft",
                                 "SFT on the original reference solutions")
    for name, cls in SFT_METHODS.items():
        if name != "sft":
            registry[name] = Method(name, REFERENCE, cls, name, _summary(cls))
    for name, method in METHODS.items():
        registry[name] = Method(name, ROLLOUTS, method.settings, name, method.paper)
    return registry


def get_method(name: str) -> Method:
    """The method called `name`; a typo gets a did-you-mean hint."""
    return lookup(methods(), name, "method")


def all_settings() -> dict[str, type]:
    """{method: settings class}, for flags and for routing flat keys."""
    return {name: m.settings for name, m in methods().items()}
