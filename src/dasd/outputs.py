"""The output of a stage that writes one row per example (`dasd generate`, `dasd eval`), and
everything about it: resuming, shard parts and their markers, merging, atomic writes.

A stage makes one `RowsOutput` and asks it once what is left to do (`open`: the batches of
examples it has no row for), hands it each batch's rows (`append`: one write, flushed and
fsynced), and asks it for the finished rows (`finish`). A single process and the ranks of a
sharded run take the same path; only where the rows go differs.

`open` starts over with `config.overwrite`; otherwise it resumes, unless the file was
written with settings that change its rows (then the error names them), and writes the
resolved config beside the output. Batches are fixed slices of the full example list, so a
resumed run batches (and pads) each example exactly as an uninterrupted one.

Sharding (`torchrun`, `accelerate launch`, one per GPU)

Rank r of W decodes examples r, r + W, r + 2W, ... of the input list (a stride, so that an
example keeps its rank when `--limit` grows, and every rank gets a mix of difficulty
levels) into its own part file, `<out dir>/<stem>.shards/shard-0000r-of-0000W.part`
(JSON lines, with its own `.config.yaml`), resumable like any output. When a rank has
every row of its share it writes a `.done` marker holding a fingerprint of the settings
and of its example ids. All ranks poll for the markers; rank 0 then merges the parts and
any rows already in `<out>` into `<out>` in input order (atomically), writes the config
beside it and removes the part files. Waiting is file-based, not a collective, so an
unbalanced split cannot trip a NCCL timeout; it gives up after `DASD_SHARD_TIMEOUT`
seconds (default 1800) in which no unfinished shard grew.

A later run on any number of processes reuses finished parts: every rank skips rows
already in `<out>` or in parts of another world size, and a single process skips rows in
leftover parts and merges them into `<out>` (in input order) when it is done. All ranks
must see `<out>`'s folder (a shared filesystem across machines).

Launchers set RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT. With MASTER_ADDR set,
accelerate's `PartialState` joins the process group (gloo on CPU, NCCL on GPU) for two
short barriers: after ranks cleared their parts for `--overwrite`, and after the merge
(so that every rank returns with `<out>` complete). Without it (RANK/WORLD_SIZE set by
hand) ranks other than 0 return as soon as their part is done, and a stale marker from
an identical earlier run could be taken as fresh under `--overwrite`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dasd.config import changed_settings, write_resolved_config
from dasd.config import fingerprint as settings_fingerprint
from dasd.distributed import ShardPlan
from dasd.errors import DasdError
from dasd.records import append_rows, read_rows_for_resume, sidecar

log = logging.getLogger(__name__)

class RowsOutput:
    """One stage's output file `out` for `examples`, in this process (`plan`: its share of
    a sharded run)."""

    def __init__(self, config: Any, out: str | Path, examples: Sequence[Any],
                 plan: ShardPlan | None = None) -> None:
        self.config, self.out, self.examples = config, Path(out), list(examples)
        self.plan = plan or ShardPlan()
        self.target = self.out  # the file this process appends to (a part when sharded)
        self.mine: list[Any] = self.examples
        self.done: set[str] = set()

    def open(self, batch_size: int) -> list[list[Any]]:
        """Get the output ready to append to; return the batches of this process's examples
        that have no row yet."""
        self.target, self.mine, self.done = prepare(self.plan, self.config, self.out,
                                                    self.examples)
        return pending_batches(self.mine, self.done, batch_size)

    @property
    def finished(self) -> int:
        """How many of this process's examples had a row before this run."""
        return len(self.done & {e.id for e in self.mine})

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        append_rows(self.target, rows)

    def finish(self) -> tuple[list[dict[str, Any]], Path]:
        """(the rows of `examples`, the file they are in): the merged `out` on rank 0 and
        in a single process, this rank's part on the others."""
        return finish(self.plan, self.config, self.out, self.examples)

    @property
    def complete(self) -> bool:
        """Whether `finish` returned `out` itself (not a rank's part)."""
        return not self.plan.sharded or self.plan.is_main


def open_output(config: Any, out: str | Path) -> set[str]:
    """Get `out` ready for appending rows of `config`; return the ids it already holds."""
    out = Path(out)
    if config.overwrite:
        for path in (out, sidecar(out, "summary.json")):
            path.unlink(missing_ok=True)
    check_resumable(config, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_resolved_config(config, sidecar(out, "config.yaml"))
    return {row["id"] for row in read_rows_for_resume(out)}


def check_resumable(config: Any, out: str | Path) -> None:
    """Refuse to add rows of `config` to `out` if its config sidecar records settings that
    change the rows; reads only, so that several processes may check the same file."""
    import yaml

    out = Path(out)
    previous_path = sidecar(out, "config.yaml")
    if not (out.exists() and previous_path.exists()):
        return
    changed = changed_settings(config, yaml.safe_load(previous_path.read_text()) or {})
    if changed:
        raise DasdError(f"{out} was written with other settings ({', '.join(changed)}): pass "
                        "--overwrite to start over or choose another --out")


def pending_batches(examples: Sequence[Any], done: set[str], batch_size: int) -> list[list[Any]]:
    """Examples not in `done`, in batches that are fixed slices of the full list, so that a
    resumed run batches (and pads) each example exactly as an uninterrupted one."""
    batches = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    pending = ([e for e in batch if e.id not in done] for batch in batches)
    return [batch for batch in pending if batch]


def finished_rows(out: str | Path, examples: Sequence[Any]) -> list[dict[str, Any]]:
    """The rows of `out` that belong to `examples` (a file may hold more, from a larger limit)."""
    wanted = {e.id for e in examples}
    return [row for row in read_rows_for_resume(out) if row["id"] in wanted]



TIMEOUT_ENV = "DASD_SHARD_TIMEOUT"
POLL_SECONDS = 0.5


def part_path(plan: ShardPlan, out: Path, rank: int | None = None) -> Path:
    """This rank's part file (or `rank`'s) of output `out`."""
    rank = plan.rank if rank is None else rank
    return shard_dir(out) / f"shard-{rank:05d}-of-{plan.world_size:05d}.part"


def shard_dir(out: str | Path) -> Path:
    """`runs/x/dasd.jsonl` -> `runs/x/dasd.shards/` (not `*.jsonl`, so `dasd analyze` of
    the folder never reads a part as a method's output)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shards")


def marker(part: Path) -> Path:
    return part.with_suffix(".done")


def fingerprint(config: Any, ids: Sequence[str]) -> str:
    """What a finished part promises: these example ids, decoded with these settings."""
    return settings_fingerprint(config, extra=list(ids))


def prepare(plan: ShardPlan, config: Any, out: Path,
            examples: Sequence[Any]) -> tuple[Path, list[Any], set[str]]:
    """(file this process appends to, its examples, the ids among them already done)."""
    if not plan.sharded:
        done = open_output(config, out)
        if config.overwrite:
            shutil.rmtree(shard_dir(out), ignore_errors=True)
        else:  # rows of an earlier sharded run, merged in `finish`
            done |= _done_in(config, _parts(out))
        return out, list(examples), done
    _join_process_group()
    part = part_path(plan, out)
    marker(part).unlink(missing_ok=True)
    if config.overwrite and plan.is_main:
        for stale in _parts(out, exclude_world=plan.world_size):
            _remove_part(stale)
    done = open_output(config, part)
    if not config.overwrite:  # in `<out>` or in parts of another number of processes
        done |= _done_in(config, [out, *_parts(out, exclude_world=plan.world_size)])
    _barrier()
    mine = plan.share(examples)
    log.info("rank %d of %d: %d examples (%d done) -> %s", plan.rank, plan.world_size,
             len(mine), len(done & {e.id for e in mine}), part)
    return part, mine, done


def _done_in(config: Any, paths: Sequence[Path]) -> set[str]:
    """Ids finished in `paths`, refusing files written with settings that change rows."""
    done: set[str] = set()
    for path in paths:
        check_resumable(config, path)
        done |= _complete_ids(path)
    return done


def _complete_ids(path: Path) -> set[str]:
    """Ids on the complete lines of `path`, without truncating it (others may read it too)."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].decode("utf-8").splitlines()
    return {json.loads(line)["id"] for line in lines if line.strip()}


def _parts(out: Path, exclude_world: int | None = None) -> list[Path]:
    parts = sorted(shard_dir(out).glob("shard-*-of-*.part"))
    suffix = f"-of-{exclude_world:05d}" if exclude_world else None
    return [p for p in parts if suffix is None or not p.stem.endswith(suffix)]


def _remove_part(part: Path) -> None:
    for path in (part, marker(part), sidecar(part, "config.yaml")):
        path.unlink(missing_ok=True)


def finish(plan: ShardPlan, config: Any, out: Path,
           examples: Sequence[Any]) -> tuple[list[dict[str, Any]], Path]:
    """After this process decoded its share: (rows to summarise, the file they are in).

    Rank 0 (and a single process) returns the merged `<out>`; other ranks their part.
    """
    if not plan.sharded:
        merge_shards(config, out, examples)  # leftovers of a sharded run, if any
        return finished_rows(out, examples), out
    part = part_path(plan, out)
    mine = plan.share(examples)
    rows = finished_rows(part, mine)  # read now: rank 0 removes the part after the merge
    write_atomic(marker(part), fingerprint(config, [e.id for e in mine]))
    grouped = _in_process_group()
    if plan.is_main or grouped:
        wait_for_shards(plan, config, out, examples)
    if plan.is_main:  # in a group, the parts stay until every rank has seen every marker
        merge_shards(config, out, examples, keep_out=not config.overwrite, remove=not grouped)
        write_resolved_config(config, sidecar(out, "config.yaml"))
        rows, part = finished_rows(out, examples), out
    if grouped:
        _barrier()
        if plan.is_main:
            shutil.rmtree(shard_dir(out), ignore_errors=True)
    return rows, part


def wait_for_shards(plan: ShardPlan, config: Any, out: Path, examples: Sequence[Any],
                    timeout: float | None = None) -> None:
    """Poll until every rank with examples has written its marker for these settings."""
    timeout = _timeout_from_env() if timeout is None else timeout
    expected = {r: fingerprint(config, [e.id for e in ShardPlan(r, plan.world_size).share(
        examples)]) for r in range(plan.world_size) if r < len(examples)}
    last_progress, seen = time.monotonic(), None
    while True:
        missing = [r for r, fp in expected.items() if _marker_text(part_path(plan, out, r)) != fp]
        if not missing:
            return
        state = (tuple(missing), sum(_size(part_path(plan, out, r)) for r in missing))
        if state != seen:
            last_progress, seen = time.monotonic(), state
        elif time.monotonic() - last_progress > timeout:
            raise DasdError(
                f"shards {missing} of {plan.world_size} in {shard_dir(out)} made no progress "
                f"for {timeout:.0f} s: a process died or the folder is not shared by all ranks;"
                f" rerun the same command to resume (finished rows are kept), or raise "
                f"{TIMEOUT_ENV}")
        time.sleep(POLL_SECONDS)


def _timeout_from_env() -> float:
    value = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        return float(value)
    except ValueError as err:
        raise DasdError(f"{TIMEOUT_ENV}={value!r} must be a number of seconds") from err


def _marker_text(part: Path) -> str | None:
    try:
        return marker(part).read_text()
    except FileNotFoundError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def merge_shards(config: Any, out: Path, examples: Sequence[Any], keep_out: bool = True,
                 remove: bool = True) -> int:
    """Merge the part files of `<out>` into `<out>` in input order; return the rows added.

    Rows of `examples` come first in their order, then rows the files hold for other
    examples (from a larger `--limit`), so nothing finished is lost. `<out>` is replaced
    atomically, then the parts are removed (`remove`); with nothing new, `<out>` is left
    untouched.
    """
    parts = _parts(out)
    if not parts and keep_out:
        return 0
    for part in parts:
        check_resumable(config, part)
    old = read_rows_for_resume(out) if keep_out else []
    by_id = {row["id"]: row for row in old}
    new = [row for part in parts for row in read_rows_for_resume(part)
           if row["id"] not in by_id]
    by_id.update((row["id"], row) for row in new)
    if new or not keep_out:
        wanted = [e.id for e in examples if e.id in by_id]
        rest = by_id.keys() - set(wanted)
        order = wanted + [i for i in by_id if i in rest]
        write_atomic(out, "".join(json.dumps(by_id[i], ensure_ascii=False) + "\n"
                                  for i in order))
        log.info("merged %d rows from %d shard files into %s", len(new), len(parts), out)
    if remove:
        shutil.rmtree(shard_dir(out), ignore_errors=True)
    return len(new)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file, fsync and rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _join_process_group() -> None:
    """Under a launcher (MASTER_ADDR set), join the process group through accelerate,
    which also pins this process to its GPU; `dasd train` later reuses the same group."""
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        from accelerate import PartialState

        PartialState()


def _in_process_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    """A short wait for every rank (accelerate's `wait_for_everyone` skips CPU groups)."""
    if _in_process_group():
        import torch.distributed as dist

        dist.barrier()
