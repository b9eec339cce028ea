"""One name lookup for every registry (tasks, decoding rules, SFT and on-policy methods,
the methods of a run) and for config keys: an unknown name is one line that lists the
choices and the closest spelling."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

from dasd.errors import DasdError

T = TypeVar("T")


def did_you_mean(key: str, choices: Iterable[str], prefix: str = "") -> str:
    """` (did you mean '<prefix><closest>'?)`, or "" when nothing is close."""
    choices = list(choices)
    hint = (difflib.get_close_matches(key, choices, n=1)
            or difflib.get_close_matches(key.lower(), choices, n=1))
    return f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """`registry[name]`; an unknown name raises `unknown <what> '<name>': choose one of
    ...` with a did-you-mean hint."""
    if name in registry:
        return registry[name]
    raise DasdError(f"unknown {what} '{name}': choose one of {', '.join(registry)}"
                    f"{did_you_mean(name, registry)}")
