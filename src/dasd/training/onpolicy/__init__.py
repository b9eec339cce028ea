"""On-policy self-distillation (`dasd train --method opsd|pw-opsd|da-opsd|...`).

A method is a registry entry (`METHODS`): its loss (a pure function from
`dasd.training.losses`) and its paper's default settings. The loop is TRL's
`SDPOTrainer` (student rollouts scored by the task's checker, privileged teacher = the
same weights with the LoRA adapter disabled); `trainer.py` swaps in the method's loss,
the project's prompts and, with a method's `reward_weight`, TRL's GRPO loss beside it.
"""

from __future__ import annotations

from dasd.registry import lookup
from dasd.training.onpolicy import da_opsd, da_opsd_loss_only, opsd, pw_opsd
from dasd.training.onpolicy.method import OnPolicyMethod

METHODS: dict[str, OnPolicyMethod] = {m.METHOD.name: m.METHOD
                                      for m in (opsd, pw_opsd, da_opsd, da_opsd_loss_only)}


def get_onpolicy_method(name: str) -> OnPolicyMethod:
    """The on-policy method called `name`; a typo gets a did-you-mean hint."""
    return lookup(METHODS, name, "on-policy method")


__all__ = ["METHODS", "OnPolicyMethod", "get_onpolicy_method"]
