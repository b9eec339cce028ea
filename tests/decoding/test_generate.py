"""The generate stage on a tiny model: rows, sidecars, resume, and bad input."""

import json

import pytest

import dasd.outputs as outputs_module
from dasd.config import build_config
from dasd.decoding.generate import GenerateConfig, generate
from dasd.errors import DasdError
from dasd.records import sidecar

FIELDS = {"id", "task", "split", "level", "method", "settings", "question", "reference",
          "gold_answer", "prompt", "ref_prompt", "prompt_ids", "ref_prompt_ids", "completion",
          "completion_ids", "finish_reason", "tokens", "extracted_answer", "answer_how",
          "correct"}


def run(tmp_path, tiny_model, tokenizer, name="out.jsonl", **overrides):
    settings = {"task": "arith", "limit": 6, "batch_size": 4, "max_new_tokens": 12,
                "out": str(tmp_path / name), **overrides}
    return generate(build_config(GenerateConfig, settings), model=tiny_model,
                    tokenizer=tokenizer)


def rows(path):
    return [json.loads(line) for line in open(path)]


def test_rows_sidecars_and_summary(tmp_path, tiny_model, tokenizer):
    summary = run(tmp_path, tiny_model, tokenizer)
    out = tmp_path / "out.jsonl"
    written = rows(out)
    assert [r["id"] for r in written] == [f"arith-train-{i:05d}" for i in range(6)]
    for row in written:
        assert set(row) == FIELDS
        n = len(row["completion_ids"])
        assert all(len(v) == n for v in row["tokens"].values())
        assert row["finish_reason"] in ("eos", "length")
        assert row["settings"] == {"top_k": 6, "tau": 0.2, "fallback": "ref"}
    assert sidecar(out, "config.yaml").is_file() and sidecar(out, "summary.json").is_file()
    assert summary["samples"] == 6
    assert sum(summary["categories_percent"].values()) == pytest.approx(100.0)


def test_resume_after_interruption_gives_the_same_file(tmp_path, tiny_model, tokenizer,
                                                       monkeypatch):
    run(tmp_path, tiny_model, tokenizer, name="full.jsonl", limit=10)
    expected = (tmp_path / "full.jsonl").read_bytes()

    real_append = outputs_module.append_rows
    calls = []

    def crash_during_second_batch(path, batch_rows):
        calls.append(1)
        if len(calls) == 2:  # one row lands, the next is cut mid-line, then the crash
            real_append(path, batch_rows[:1])
            with open(path, "a") as fh:
                fh.write(json.dumps(batch_rows[1])[:50])
            raise KeyboardInterrupt
        real_append(path, batch_rows)

    monkeypatch.setattr(outputs_module, "append_rows", crash_during_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_model, tokenizer, name="cut.jsonl", limit=10)
    monkeypatch.setattr(outputs_module, "append_rows", real_append)
    cut = (tmp_path / "cut.jsonl").read_text()
    assert cut.count("\n") == 5 and not cut.endswith("\n")  # 5 rows and a partial one
    run(tmp_path, tiny_model, tokenizer, name="cut.jsonl", limit=10)
    assert (tmp_path / "cut.jsonl").read_bytes() == expected


def test_larger_limit_extends_without_touching_finished_rows(tmp_path, tiny_model, tokenizer):
    run(tmp_path, tiny_model, tokenizer, limit=3)
    first = (tmp_path / "out.jsonl").read_bytes()
    summary = run(tmp_path, tiny_model, tokenizer, limit=6)
    assert (tmp_path / "out.jsonl").read_bytes().startswith(first)
    assert summary["samples"] == 6 and len(rows(tmp_path / "out.jsonl")) == 6


def test_changed_settings_refuse_to_resume(tmp_path, tiny_model, tokenizer):
    run(tmp_path, tiny_model, tokenizer, limit=2)
    with pytest.raises(DasdError, match=r"other settings \(settings.tau=0.2->0.3\).*--overwrite"):
        run(tmp_path, tiny_model, tokenizer, limit=2, tau=0.3)
    summary = run(tmp_path, tiny_model, tokenizer, limit=2, tau=0.3, overwrite=True)
    assert summary["settings"]["tau"] == 0.3 and len(rows(tmp_path / "out.jsonl")) == 2


def test_a_setting_of_another_method_is_refused(tmp_path, tiny_model, tokenizer):
    # dasd has no `beta`: it is hint's, so it cannot silently do nothing here
    with pytest.raises(DasdError, match="method 'dasd' has no setting 'beta'"):
        run(tmp_path, tiny_model, tokenizer, limit=3, beta=1.0)


def test_engine_and_batch_size_resume_the_same_file(tmp_path, tiny_model, tokenizer):
    run(tmp_path, tiny_model, tokenizer, limit=2)
    first = rows(tmp_path / "out.jsonl")
    run(tmp_path, tiny_model, tokenizer, limit=3, batch_size=1, engine="draft-verify")
    assert rows(tmp_path / "out.jsonl")[:2] == first and len(rows(tmp_path / "out.jsonl")) == 3


@pytest.mark.parametrize("method", ["sd", "base"])
def test_every_method_runs(tmp_path, tiny_model, tokenizer, method):
    summary = run(tmp_path, tiny_model, tokenizer, method=method, limit=2)
    assert summary["method"] == method and summary["samples"] == 2


def test_bad_rows_stop_before_anything_is_written(tmp_path, tiny_model, tokenizer):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(DasdError, match="bad.jsonl"):
        run(tmp_path, tiny_model, tokenizer, data=str(data))
    assert not (tmp_path / "out.jsonl").exists()
    assert not sidecar(tmp_path / "out.jsonl", "config.yaml").exists()


def test_unknown_task_is_refused(tmp_path, tiny_model, tokenizer):
    with pytest.raises(DasdError, match="unknown task 'arithm'"):
        run(tmp_path, tiny_model, tokenizer, task="arithm")
    assert not (tmp_path / "out.jsonl").exists()
