"""Peak resident memory of a stage: what a laptop needs to run it.

The kernel keeps the process's high-water mark (VmHWM on Linux, ru_maxrss elsewhere).
When a stage raises it, the new mark is that stage's peak, exactly. When it does not (an
earlier stage peaked higher), a thread sampling the resident size every 20 ms gives the
stage's peak; a spike shorter than that can slip between samples. The mark is never
reset, so outside tools (`/usr/bin/time -v`) still see the process's true peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import resource
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATUS = Path("/proc/self/status")
SAMPLE_SECONDS = 0.02


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


def lifetime_peak_mb() -> float:
    """The process's peak resident memory so far, in MB."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes / kB


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True, name="dasd-peak-memory")
        self.peak = resident_mb() or 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, resident_mb() or 0.0)


def step_peak_mb(device: Any) -> float:
    """Peak memory of the steps since the last call, in MB: on a GPU, the most CUDA's
    allocator held (its counter is then reset); elsewhere, the process's resident peak so
    far (a high-water mark that never falls, so the largest step sets it)."""
    import torch

    if getattr(device, "type", None) == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return round(peak, 1)
    return round(lifetime_peak_mb(), 1)


@contextmanager
def peak_memory() -> Iterator[dict[str, float | bool]]:
    """`with peak_memory() as mem:` sets mem["peak_rss_mb"] when the block ends, and
    mem["exact"]: True when the stage raised the process's high-water mark (the value is
    the mark), False when it is the largest sample."""
    before = lifetime_peak_mb()
    sampler = _Sampler() if resident_mb() is not None else None
    if sampler:
        sampler.start()
    mem: dict[str, float | bool] = {}
    try:
        yield mem
    finally:
        after = lifetime_peak_mb()
        if sampler:
            sampler.stop.set()
            sampler.join()
        exact = after > before or sampler is None
        peak = after if exact else max(sampler.peak, resident_mb() or 0.0)
        mem["peak_rss_mb"], mem["exact"] = round(peak, 1), exact


def release_free_memory() -> None:
    """Hand memory a finished stage freed back to the system: collect the Python cycles
    that hold tensors (a trainer and its callbacks), then ask glibc to return its free
    pages (tensors under its mmap threshold live in the heap, which it never shrinks on
    its own), so the next stage does not start on the last one's high-water mark."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
