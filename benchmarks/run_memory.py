"""Peak resident memory of a whole `dasd run`, stage by stage: what a laptop needs.

    python benchmarks/run_memory.py                         # the demo (configs/demo.yaml)
    python benchmarks/run_memory.py configs/demo.yaml --train.per-device-train-batch-size 8 \
        --train.gradient-accumulation-steps 1 --train.activation-checkpointing false

Runs `dasd run CONFIG --out-dir <temporary folder>` (any further arguments are passed on)
in a subprocess, then prints the peak resident memory of every stage (from the run's
results.json: the kernel's high-water mark where a stage raised it, else the largest 20 ms
sample), the whole process's peak (getrusage of the child, the number `/usr/bin/time -v`
prints) and two ratios: the peak against the target (4 GB by default, `--target-mb`) and
against the model's resident weights after loading (the peer every stage must carry).
The run takes as long as the config does (the demo: 12-20 min on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/demo.yaml")
    parser.add_argument("--target-mb", type=float, default=4096.0)
    parser.add_argument("--keep", help="run folder to keep (default: a temporary one)")
    args, passed = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="dasd-memory-") as tmp:
        out = Path(args.keep or Path(tmp) / "run")
        command = [sys.executable, "-m", "dasd.cli", "run", args.config, "--out-dir", str(out),
                   *passed]
        start = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"dasd run failed (exit {done.returncode}): {' '.join(command)}")
        report = json.loads((out / "results.json").read_text())
    whole = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB -> MB (Linux)
    weights = report.get("load_peak_rss_mb")
    rows = [("load model", weights)]
    for name, result in report["methods"].items():
        rows += [(f"{stage} {name}", (result.get(stage) or {}).get("peak_rss_mb"))
                 for stage in ("generate", "train", "eval") if result.get(stage)]
    rows.append(("analysis", report.get("analysis_peak_rss_mb")))
    print(f"{args.config} ({' '.join(passed) or 'as written'}): {seconds:.0f} s")
    print(f"{'stage':<28}{'peak MB':>10}{'/ target':>10}{'/ weights':>11}")
    for stage, peak in rows:
        if peak is not None:
            print(f"{stage:<28}{peak:>10.0f}{peak / args.target_mb:>10.2f}"
                  f"{peak / weights if weights else float('nan'):>11.2f}")
    print(f"{'whole process (ru_maxrss)':<28}{whole:>10.0f}{whole / args.target_mb:>10.2f}"
          f"{whole / weights if weights else float('nan'):>11.2f}")
    print("under the target" if whole <= args.target_mb else "OVER the target")


if __name__ == "__main__":
    main()
