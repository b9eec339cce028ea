"""Peak resident memory of a stage: what a laptop needs to run it.

On Linux the kernel's high-water mark of the process (VmHWM) is reset before a stage
(`/proc/self/clear_refs` 5) and read after it, so each stage reports its own peak; where
that is unavailable the process's lifetime peak (getrusage) stands in, marked as such.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def resident_mb() -> float | None:
    """The process's resident memory now, in MB (Linux), else None."""
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _lifetime_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes / kB


@contextmanager
def peak_memory() -> Iterator[dict[str, float | bool]]:
    """`with peak_memory() as mem:` fills mem["peak_rss_mb"] (and "since_start": False
    when it is this stage's own peak, True when only the process's lifetime peak was
    available) when the block ends."""
    own = _reset_peak()
    mem: dict[str, float | bool] = {}
    try:
        yield mem
    finally:
        peak = _status_mb("VmHWM") if own else None
        mem["peak_rss_mb"] = round(peak if peak is not None else _lifetime_peak_mb(), 1)
        mem["since_start"] = peak is None
