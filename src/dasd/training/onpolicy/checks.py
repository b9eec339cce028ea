"""Range checks shared by the on-policy methods' settings."""

from __future__ import annotations

from dasd.errors import DasdError


def check_divergence(beta: float, clip: float | None) -> None:
    if not 0 <= beta <= 1:
        raise DasdError(f"beta must be in [0, 1]; got {beta}")
    if clip is not None and not clip > 0:
        raise DasdError(f"clip must be > 0, or none for no cap; got {clip}")


def check_unit(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise DasdError(f"{name} must be in [0, 1]; got {value}")


def check_weight(name: str, value: float) -> None:
    if not value >= 0:
        raise DasdError(f"{name} must be >= 0; got {value}")
