"""`benchmarks/gpu_check.py` in its small CPU mode: every case runs and lands in the JSON."""

import json
from pathlib import Path

import pytest

from tests.benchmarks import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("gpu_check")


def rows_of(path: Path, kind: str) -> list[dict]:
    return [row for row in json.loads(path.read_text())["rows"] if row["kind"] == kind]


def test_small_mode_writes_every_case(gpu_check, tmp_path, one_thread):
    out = tmp_path / "check.json"
    gpu_check.main(["--small", "--out", str(out)])
    data = json.loads(out.read_text())
    plan = gpu_check.SMALL
    assert set(data["models"]) == set(plan.models)
    assert data["meta"]["device"] == "cpu"

    decode = rows_of(out, "decode")
    cases = {(r["model"], r["case"], r["batch"]) for r in decode}
    assert cases == {(m, e, b) for m in plan.models for e in gpu_check.ENGINES
                     for b in plan.batch_sizes}
    for row in decode:
        assert row["status"] == "ok", row
        assert row["tokens"] == row["batch"] * plan.new_tokens  # EOS ignored: fixed lengths
        assert row["tok_s"] > 0
        assert "peak_mib" in row and row["peak_mib"] is None  # no CUDA memory on CPU
    assert all(r["vs_generate"] == 1.0 for r in decode if r["case"] == "generate")

    agree = rows_of(out, "agree")
    assert [r["model"] for r in agree] == list(plan.models)
    for row in agree:  # float32: the sd step engine's tokens are generate's greedy tokens
        assert row["rows_equal"] == row["rows"] == plan.check_prompts, row["differences"]

    (vllm,) = rows_of(out, "vllm")  # this machine has neither vLLM nor CUDA
    assert vllm["status"].startswith("skipped: vLLM")
    (sft,) = rows_of(out, "sft")
    assert sft["model"] == plan.models[0] and sft["status"] == "ok"
    assert sft["steps"] == plan.sft_steps and sft["loss_finite"]
    assert sft["s_per_step"] > 0


def test_a_failing_case_is_recorded_and_the_others_still_run(gpu_check, tmp_path,
                                                             monkeypatch, one_thread):
    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(gpu_check.ENGINES, "draft-verify", broken)
    out = tmp_path / "check.json"
    gpu_check.main(["--small", "--models", "tiny-qwen3", "--batch-sizes", "2",
                    "--sft-steps", "0", "--out", str(out)])
    status = {r["case"]: r["status"] for r in rows_of(out, "decode")}
    assert status == {"generate": "ok", "step": "ok",
                      "draft-verify": "error: RuntimeError: planted failure"}
    assert rows_of(out, "sft") == []


def test_a_case_past_its_time_limit_is_marked_time_boxed(gpu_check):
    stop = gpu_check._stop_at(deadline=0.0)
    with pytest.raises(gpu_check.CaseTimeout):
        stop(1)


def test_a_difference_is_located_and_its_margin_given_in_ulps(gpu_check):
    import torch

    assert gpu_check.first_difference([5, 6, 7], [5, 6, 7]) is None
    assert gpu_check.first_difference([5, 6, 7], [5, 9, 7]) == 1
    assert gpu_check.first_difference([5, 6], [5, 6, 7]) == 2
    logits = torch.tensor([0.0, 2.5, 2.5 - 2 ** -6, -1.0])  # bf16 spacing in [2, 4): 2^-6
    d = gpu_check.describe_difference(0, 1, [4, 1], [4, 2], logits, torch.bfloat16)
    assert (d["position"], d["generate_token"], d["engine_token"]) == (1, 1, 2)
    assert d["margin"] == 2 ** -6 and d["margin_ulps"] == 1.0
