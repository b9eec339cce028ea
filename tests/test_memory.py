"""Peak resident memory per stage, without resetting the kernel's mark."""

import time

import numpy as np

from dasd.memory import lifetime_peak_mb, peak_memory, resident_mb

MB = 2**20 // 8  # float64 values per MB


def test_a_stage_that_sets_a_new_peak_reports_the_kernels_mark():
    with peak_memory() as mem:
        block = np.ones(int(lifetime_peak_mb() + 60) * MB)  # past the process's mark
        del block
    assert mem["exact"] and mem["peak_rss_mb"] == round(lifetime_peak_mb(), 1)


def test_a_smaller_stage_after_it_reports_its_own_peak_and_keeps_the_mark():
    block = np.ones(int(resident_mb() + 200) * MB)  # an earlier stage's higher peak
    del block
    mark = lifetime_peak_mb()
    with peak_memory() as mem:
        block = np.ones(40 * MB)
        time.sleep(0.1)  # a few samples while it is resident
        del block
    assert not mem["exact"]
    assert resident_mb() + 30 <= mem["peak_rss_mb"] < mark - 100  # its own, not the mark
    assert lifetime_peak_mb() == mark  # never reset: /usr/bin/time -v still sees it
