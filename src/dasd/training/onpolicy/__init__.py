"""On-policy self-distillation (`dasd train --method opsd|pw-opsd|da-opsd|...`).

A method is a registry entry (`METHODS`): its loss (a pure function from
`dasd.training.losses`) and its paper's default settings. The loop is TRL's
`SDPOTrainer` (student rollouts scored by the task's checker, privileged teacher = the
same weights with the LoRA adapter disabled); `trainer.py` swaps in the method's loss,
the project's prompts and, with a method's `reward_weight`, TRL's GRPO loss beside it.
"""

from __future__ import annotations

import difflib

from dasd.errors import DasdError
from dasd.training.onpolicy import direction, direction_loss_only, opsd, pw_opsd
from dasd.training.onpolicy.base import Method

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (opsd, pw_opsd, direction,
                                                                 direction_loss_only)}


def get_method(name: str) -> Method:
    """The method called `name`; a typo gets a did-you-mean hint."""
    if name in METHODS:
        return METHODS[name]
    hint = difflib.get_close_matches(name, METHODS, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise DasdError(f"unknown on-policy method '{name}': choose one of "
                    f"{', '.join(METHODS)}{suggestion}")


def __getattr__(name: str):
    # The config and trainer import TRL lazily; keep `import dasd.training.onpolicy` light.
    if name == "OnPolicyConfig":
        from dasd.training.onpolicy.config import OnPolicyConfig
        return OnPolicyConfig
    if name == "train_onpolicy":
        from dasd.training.onpolicy.trainer import train_onpolicy
        return train_onpolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "Method", "OnPolicyConfig", "get_method", "train_onpolicy"]
