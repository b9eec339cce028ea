"""Analyses of generated data (high-PPL tokens, segment PPL, alignment, token categories,
accuracy by level, phi), the report (`analyze`) and the terminal token view (`show`).

`analyze`, `AnalyzeConfig` and `show` load lazily so that importing `dasd.stats`
(as `dasd generate` does) does not pull in matplotlib.
"""

from typing import Any

__all__ = ["AnalyzeConfig", "analyze", "show"]


def __getattr__(name: str) -> Any:
    if name in ("AnalyzeConfig", "analyze"):
        from dasd.analysis import report

        return getattr(report, name)
    if name == "show":
        from dasd.analysis.view import show

        return show
    raise AttributeError(f"module 'dasd.analysis' has no attribute '{name}'")
