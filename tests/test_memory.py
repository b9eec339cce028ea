"""Peak resident memory per stage, without resetting the kernel's mark.

Each case runs in a fresh interpreter: in a long test process, freed heap pages already
resident would absorb a new allocation without raising the resident size."""

import json
import subprocess
import sys

SCRIPT = """
import json, time
import numpy as np
from dasd.memory import lifetime_peak_mb, peak_memory, resident_mb
MB = 2**20 // 8
out = {}
with peak_memory() as mem:                       # a stage that sets a new peak
    block = np.ones(int(lifetime_peak_mb() + 60) * MB)
    del block
out["first"] = {**mem, "mark": round(lifetime_peak_mb(), 1)}
mark = lifetime_peak_mb()
with peak_memory() as mem:                       # a smaller stage after it
    block = np.ones(40 * MB)
    time.sleep(0.1)                              # a few samples while it is resident
    del block
out["second"] = {**mem, "mark_before": mark, "mark_after": lifetime_peak_mb(),
                 "resident": resident_mb()}
print(json.dumps(out))
"""


def measure() -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def test_stage_peaks_are_their_own_and_the_kernels_mark_is_never_reset():
    result = measure()
    first, second = result["first"], result["second"]
    assert first["exact"] and first["peak_rss_mb"] == first["mark"]
    assert not second["exact"]  # below the first stage's mark: the sampler's value
    assert second["resident"] + 30 <= second["peak_rss_mb"] < second["mark_before"] - 20
    assert second["mark_after"] == second["mark_before"]  # /usr/bin/time -v still sees it
