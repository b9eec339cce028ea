"""Which problems a `limit` takes from a split: a seeded sample stratified by level and subject.

The hub's MATH training split is concatenated subject by subject, so its first 2,000 rows
are algebra and counting & probability only. A limit therefore draws a sample instead:

- the problems are grouped into strata by (level, subject) (MATH's `type`); a task without
  levels or subjects is one stratum;
- each stratum is shuffled with a generator seeded by (seed, stratum), and its r-th problem
  gets the position (r + 1/2) / N_s on [0, 1], N_s the stratum's size;
- the sample of size n is the n problems with the smallest positions (ties: a seeded
  order of the strata).

Every stratum then holds its share n * N_s / N of the sample, give or take one problem
(the positions below any cut-off t are the first round(t * N_s) of each stratum), and a
sample is a prefix of every larger one of the same seed: raising a limit adds problems and
keeps the ones already drawn, so a resumed stage reuses their rows. The sample's order is
this drawing order; a limit that takes the whole split keeps the file's order. `sample:
first` keeps the old rule, the first n in file order.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from dasd.tasks.base import Example

SAMPLES = ("stratified", "first")
NO_LEVEL = "none"


def stratum(example: Example) -> tuple[str, str]:
    """(level, subject) of a problem, as strings ("none" where the data has none)."""
    level = NO_LEVEL if example.level is None else str(example.level)
    return level, str(example.meta.get("subject") or NO_LEVEL)


def draw(examples: Sequence[Example], n: int | None, seed: int, how: str = "stratified"
         ) -> list[Example]:
    """`n` of `examples` (all when `n` is None or not smaller): the first `n` in order
    (`how="first"`), or the stratified seeded sample described in the module docstring."""
    if how not in SAMPLES:
        raise ValueError(f"sample must be one of {', '.join(SAMPLES)}; got {how!r}")
    if how == "first" or n is None or n >= len(examples):
        return list(examples[:n])
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for example in examples:
        groups[stratum(example)].append(example)
    ranked = []
    for key, members in groups.items():
        rng = random.Random(f"dasd-sample:{seed}:{key[0]}:{key[1]}")
        rng.shuffle(members)
        tie = rng.random()
        ranked += [((r + 0.5) / len(members), tie, example) for r, example in enumerate(members)]
    ranked.sort(key=lambda item: item[:2])
    return [example for _, _, example in ranked[:n]]


def counts(examples: Sequence[Example]) -> dict[str, dict[str, int]]:
    """Problems per level and per subject, "none" for those without one (sorted keys)."""
    levels = Counter(stratum(e)[0] for e in examples)
    subjects = Counter(stratum(e)[1] for e in examples)

    def ordered(counter: Counter) -> dict[str, int]:
        return {k: counter[k] for k in sorted(counter, key=_level_order)}

    out = {"by_level": ordered(levels)}
    if set(subjects) != {NO_LEVEL}:
        out["by_subject"] = ordered(subjects)
    return out


def _level_order(key: str) -> tuple[int, int, str]:
    return (key == NO_LEVEL, int(key) if key.isdigit() else 0, key)


def ids_digest(examples: Sequence[Example]) -> str:
    """A short hash of the problems' ids in order: equal digests, same problems."""
    return hashlib.sha256("\n".join(e.id for e in examples).encode()).hexdigest()[:16]
