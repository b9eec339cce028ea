"""Sharded generation: the split, the merge, resuming per shard, and two real processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import dasd.outputs as sharding
from dasd.decoding.generate import GenerateConfig, generate
from dasd.distributed import ShardPlan
from dasd.errors import DasdError
from dasd.outputs import merge_shards, part_path, shard_dir, wait_for_shards
from dasd.records import sidecar

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SETTINGS = {"task": "arith", "limit": 5, "batch_size": 2, "max_new_tokens": 10}


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    """Tests start as a single process whatever environment pytest runs in."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)


def as_rank(monkeypatch, rank, world):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(rank))


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def ids(n):
    return [f"arith-train-{i:05d}" for i in range(n)]


def record_appends(monkeypatch):
    """Ids of the rows generation appends from now on (i.e. the rows it decoded)."""
    written = []
    real = sharding.append_rows

    def spy(path, batch):
        written.extend(row["id"] for row in batch)
        real(path, batch)

    monkeypatch.setattr(sharding, "append_rows", spy)
    return written


# --- the split --------------------------------------------------------------------------


def test_plan_from_the_launcher_environment():
    assert ShardPlan.from_env({}) == ShardPlan(0, 1, 0)
    plan = ShardPlan.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (plan.rank, plan.world_size, plan.local_rank, plan.sharded) == (3, 4, 1, True)
    assert not plan.is_main
    with pytest.raises(DasdError, match="RANK=2 must be in"):
        ShardPlan.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(DasdError, match="must be integers"):
        ShardPlan.from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_strided_shares_cover_the_input_once_and_keep_their_rank_as_it_grows():
    items = list(range(7))
    shares = [ShardPlan(r, 3).share(items) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert ShardPlan(1, 3).share(list(range(10))) == [1, 4, 7]  # a larger limit extends
    assert part_path(ShardPlan(1, 2), Path("runs/x/dasd.jsonl")) == Path(
        "runs/x/dasd.shards/shard-00001-of-00002.part")


def test_auto_device_is_the_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ShardPlan(1, 2, 1).device("auto") == "auto"  # no CUDA: chosen as before
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert ShardPlan(11, 16, 3).device("auto") == "cuda:3"
    assert ShardPlan(3, 16, 3).device("cpu") == "cpu"
    assert ShardPlan(0, 1, 0).device("auto") == "auto"  # one process: as before


# --- the merge ----------------------------------------------------------------------------


def _write(path, row_ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in row_ids))


def test_merge_puts_rows_in_input_order_and_keeps_rows_beyond_the_limit(tmp_path):
    out = tmp_path / "dasd.jsonl"
    examples = [SimpleNamespace(id=i) for i in "abcde"]
    config = SimpleNamespace(overwrite=False)
    _write(out, ["a", "z"])  # "z" came from an earlier, larger --limit
    _write(shard_dir(out) / "shard-00000-of-00002.part", ["c", "e"])
    _write(shard_dir(out) / "shard-00001-of-00002.part", ["d", "b", "a"])  # "a" twice
    assert merge_shards(config, out, examples) == 4
    assert [r["id"] for r in rows(out)] == ["a", "b", "c", "d", "e", "z"]
    assert not shard_dir(out).exists()
    before = out.stat().st_mtime_ns
    assert merge_shards(config, out, examples) == 0  # nothing new: file untouched
    assert out.stat().st_mtime_ns == before


def test_waiting_gives_up_when_no_shard_makes_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(sharding, "POLL_SECONDS", 0.05)
    config = GenerateConfig(**SETTINGS, out=str(tmp_path / "x.jsonl"))
    examples = [SimpleNamespace(id=i) for i in ids(3)]
    start = time.monotonic()
    with pytest.raises(DasdError, match=r"shards \[0, 1\] of 2 .* no progress for 0 s"):
        wait_for_shards(ShardPlan(0, 2), config, tmp_path / "x.jsonl", examples, timeout=0.3)
    assert time.monotonic() - start < 5


# --- generation, ranks simulated in this process (no process group) -----------------------


@pytest.fixture
def reference(tmp_path, tiny_model, tokenizer):
    """The rows of one uninterrupted single-process run."""
    out = tmp_path / "single.jsonl"
    generate(GenerateConfig(**SETTINGS, out=str(out)), model=tiny_model, tokenizer=tokenizer)
    return rows(out)


def test_two_ranks_merge_into_the_single_process_file(tmp_path, tiny_model, tokenizer,
                                                      reference, monkeypatch):
    config = GenerateConfig(**SETTINGS, out=str(tmp_path / "two.jsonl"))
    written = record_appends(monkeypatch)
    as_rank(monkeypatch, 1, 2)  # without a process group rank 1 returns when its part is done
    summary = generate(config, model=tiny_model, tokenizer=tokenizer)
    assert summary["samples"] == 2 and summary["output"].endswith("shard-00001-of-00002.part")
    assert written == ids(5)[1::2]
    as_rank(monkeypatch, 0, 2)
    summary = generate(config, model=tiny_model, tokenizer=tokenizer)
    assert written == ids(5)[1::2] + ids(5)[0::2]
    assert rows(tmp_path / "two.jsonl") == reference
    assert summary["samples"] == 5 and summary["output"] == config.out
    assert json.loads(sidecar(config.out, "summary.json").read_text())["samples"] == 5
    assert sidecar(config.out, "config.yaml").is_file()
    assert not shard_dir(config.out).exists()


def test_more_ranks_than_examples(tmp_path, tiny_model, tokenizer, monkeypatch):
    config = GenerateConfig(**{**SETTINGS, "limit": 2}, out=str(tmp_path / "x.jsonl"))
    for rank in (3, 1, 2):  # rank 3 has nothing to do; nobody waits for it
        as_rank(monkeypatch, rank, 4)
        assert generate(config, model=tiny_model, tokenizer=tokenizer)["samples"] == (
            1 if rank == 1 else 0)
    as_rank(monkeypatch, 0, 4)
    assert generate(config, model=tiny_model, tokenizer=tokenizer)["samples"] == 2
    assert [r["id"] for r in rows(config.out)] == ids(2)


def test_a_killed_shard_resumes_and_a_single_process_merges_leftovers(
        tmp_path, tiny_model, tokenizer, reference, monkeypatch):
    out = tmp_path / "two.jsonl"
    part1 = part_path(ShardPlan(1, 2), out)
    first, cut = reference[1], json.dumps(reference[3])[:40]  # rank 1 holds 1 and 3
    part1.parent.mkdir()
    part1.write_text(json.dumps(first) + "\n" + cut)  # one row, then a crash mid-line
    written = record_appends(monkeypatch)
    as_rank(monkeypatch, 1, 2)
    generate(GenerateConfig(**SETTINGS, out=str(out)), model=tiny_model, tokenizer=tokenizer)
    assert written == [ids(5)[3]]  # only the missing row of its share was decoded
    # Rank 0 never ran (killed): a later single-process run merges rank 1's part at start
    # and decodes only what is missing.
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    summary = generate(GenerateConfig(**SETTINGS, out=str(out)), model=tiny_model,
                       tokenizer=tokenizer)
    assert written == [ids(5)[3]] + ids(5)[0::2]
    assert rows(out) == reference and summary["samples"] == 5
    assert not shard_dir(out).exists()


def test_a_leftover_part_with_other_settings_is_refused(tmp_path, tiny_model, tokenizer,
                                                       monkeypatch):
    out = tmp_path / "x.jsonl"
    as_rank(monkeypatch, 1, 2)
    generate(GenerateConfig(**SETTINGS, out=str(out)), model=tiny_model, tokenizer=tokenizer)
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DasdError, match=r"shard-00001-of-00002.part was written with other "
                                        r"settings \(settings.tau=0.2->0.3\)"):
        generate(GenerateConfig(**SETTINGS, out=str(out), settings={"tau": 0.3}), model=tiny_model,
                 tokenizer=tokenizer)
    generate(GenerateConfig(**SETTINGS, out=str(out), settings={"tau": 0.3},
                            overwrite=True),
             model=tiny_model, tokenizer=tokenizer)
    assert len(rows(out)) == 5 and not shard_dir(out).exists()


# --- two real processes -------------------------------------------------------------------


def _launch(model_dir, out, tmp_path):
    """`torchrun --nproc_per_node 2 -m dasd.cli generate ...` (or two processes by hand)."""
    args = ["-m", "dasd.cli", "generate", "--model", str(model_dir), "--dtype", "float64",
            "--out", str(out), *[f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", COLUMNS="200")
    torchrun = Path(sys.executable).with_name("torchrun")
    if torchrun.exists():
        commands = [[str(torchrun), "--standalone", "--nproc_per_node", "2", *args]]
        envs = [env]
    else:  # the launcher-free fallback: ranks from the environment alone
        commands = [[sys.executable, *args]] * 2
        envs = [{**env, "RANK": str(r), "WORLD_SIZE": "2"} for r in (1, 0)]
    procs = [subprocess.Popen(c, env=e, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for c, e in zip(commands, envs, strict=True)]
    try:
        errs = [p.communicate(timeout=150)[1] for p in procs]
    finally:
        for p in procs:  # never leave a hung rank behind
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    return max(p.returncode for p in procs), "".join(errs)


def test_two_processes_write_the_single_process_file_and_resume_per_shard(
        tmp_path, tiny_model, tokenizer):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)  # float64: batch composition cannot change a bit
    tokenizer.save_pretrained(model_dir)
    single = tmp_path / "single.jsonl"
    generate(GenerateConfig(**SETTINGS, model=str(model_dir), dtype="float64",
                            out=str(single)))
    reference = rows(single)

    out = tmp_path / "two" / "dasd.jsonl"
    code, err = _launch(model_dir, out, tmp_path)
    assert code == 0, err[-3000:]
    assert rows(out) == reference
    assert json.loads(sidecar(out, "summary.json").read_text())["samples"] == 5
    assert not shard_dir(out).exists()

    # Killed run: rank 0 finished nothing, rank 1 one row (marked so that a redo would show)
    # and half a line. The rerun keeps that row and redoes the rest.
    out.unlink()
    kept = {**reference[1], "completion": "written before the kill"}
    part = part_path(ShardPlan(1, 2), out)
    part.parent.mkdir()
    part.write_text(json.dumps(kept) + "\n" + json.dumps(reference[3])[:30])
    shutil.copy(sidecar(out, "config.yaml"), sidecar(part, "config.yaml"))
    code, err = _launch(model_dir, out, tmp_path)
    assert code == 0, err[-3000:]
    assert rows(out) == reference[:1] + [kept] + reference[2:]


# --- shipped accelerate configs -----------------------------------------------------------

ACCELERATE = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


@pytest.mark.parametrize("name", ["multi-gpu.yaml", "deepspeed-zero2.yaml"])
def test_accelerate_configs_parse_and_say_how_to_launch(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE / name))  # refuses unknown keys
    assert config.num_processes == 8 and config.num_machines == 1
    header = (ACCELERATE / name).read_text()
    for stage in ("generate", "train"):
        assert (f"accelerate launch --config_file configs/accelerate/{name} -m dasd.cli "
                f"{stage}") in header


def test_deepspeed_config_leaves_precision_and_batches_to_the_trainer():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE / "deepspeed-zero2.yaml"))
    # accelerate refuses these next to a deepspeed_config_file
    assert config.mixed_precision is None
    assert set(config.deepspeed_config) == {"deepspeed_config_file", "zero3_init_flag"}
    ds_path = Path(__file__).resolve().parents[1] / config.deepspeed_config["deepspeed_config_file"]
    ds = json.loads(ds_path.read_text())
    assert ds["zero_optimization"]["stage"] == 2
    for key in ("gradient_accumulation_steps", "gradient_clipping", "train_batch_size",
                "train_micro_batch_size_per_gpu"):
        assert ds[key] == "auto"
    assert ds["bf16"] == {"enabled": "auto"} and ds["fp16"] == {"enabled": "auto"}
