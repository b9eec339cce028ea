"""One-call GPU check: decode speed, peak memory, greedy agreement and SFT steps on random models.

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_check.json  # CUDA: the full check
    PYTHONPATH=src python benchmarks/gpu_check.py --small --out s.json  # tiny shapes, on CPU

Needs no weights and no network: every model is built from a config in code with random
weights, in the shapes of SmolLM2-135M (llama), Qwen3-1.7B and Qwen3-4B (Qwen3ForCausalLM);
the SFT rows are random token ids with a three-token tokenizer. On CUDA, per model:
  agree   the step engine with the `sd` rule (greedy decoding of the reference context) against
          `model.generate` greedy at batch 1, in bf16: rows whose tokens are equal, and where
          one is not, the first differing position and generate's logit margin there (random
          weights give near-flat distributions, so bf16 near-ties are common; a float32 check
          on the first model tells rounding from a bug);
  decode  `model.generate` on the reference prompts vs the step engine (both contexts in one
          forward) vs draft-and-verify (DASD rule, K 6, tau 0.2) at batch 1, 16 and 64, a fixed
          number of new tokens with EOS ignored: tokens/s and peak allocated GPU memory
          (weights included; the peak is reset after each case's warm-up);
  sft     10 LoRA SFT steps through `dasd.training.sft.train` (TRL's SFTTrainer): s/step and
          whether the loss stays finite (first, last and mean);
  vllm    where vLLM is installed (first model, largest batch): plain greedy vLLM decoding
          of the base prompts against draft-and-verify, its linear form (forced scoring) and
          lockstep (`--vllm.path lockstep`), tokens/s each, and whether lockstep's tokens
          equal draft-and-verify's (with the pairs retried or handed to the fallback).
Random weights with EOS ignored measure speed only: nothing rides on the tokens, and every
draft is accepted (near-flat distributions: no candidate reaches tau, so DASD falls back to
the reference top-1, the draft), which is draft-and-verify's best case.

Each case is time-boxed (`--case-seconds`; the whole run by `--budget-seconds`), a failing
case is recorded in the table and the others still run, and the JSON is rewritten after
every case, so a run cut short still leaves its rows. `--small` (automatic without CUDA)
uses tiny shapes, batch 1 and 2, a few tokens, 2 SFT steps, float32; the tests run it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

from dasd.decoding.draft_verify import decode_pairs_draft_verify
from dasd.decoding.engine import decode_pairs, left_pad
from dasd.decoding.rules import build_rule

log = logging.getLogger("gpu_check")
PAD = 0  # token 0 pads; no EOS exists, so every row decodes to the length limit

SHAPES: dict[str, tuple[str, dict]] = {
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                                   vocab_size=49152, tie_word_embeddings=True)),
    "qwen3-1.7b": ("qwen3", dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                 num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                 vocab_size=151936, tie_word_embeddings=True)),
    "qwen3-4b": ("qwen3", dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                               vocab_size=151936, tie_word_embeddings=True)),
    "tiny-llama": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 vocab_size=512, tie_word_embeddings=True)),
    "tiny-qwen3": ("qwen3", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 vocab_size=512, tie_word_embeddings=True)),
}


@dataclasses.dataclass
class Plan:
    models: tuple[str, ...] = ("smollm2-135m", "qwen3-1.7b", "qwen3-4b")
    batch_sizes: tuple[int, ...] = (1, 16, 64)
    new_tokens: int = 128
    warmup_tokens: int = 8
    ref_lengths: tuple[int, int] = (48, 96)    # reference prompts: question + reference answer
    base_lengths: tuple[int, int] = (16, 32)   # base prompts: the question alone
    check_prompts: int = 4
    check_tokens: int = 64
    float32_check: bool = True                 # also check agreement in float32 (first model)
    sft_every_model: bool = True               # else the first model only
    sft_steps: int = 10
    sft_batch: int = 8
    sft_lengths: tuple[int, int] = (64, 192)   # prompt, completion tokens per row
    dtype: str = "bfloat16"
    case_seconds: float = 60.0
    budget_seconds: float = 420.0


SMALL = Plan(models=("tiny-llama", "tiny-qwen3"), batch_sizes=(1, 2), new_tokens=8,
             warmup_tokens=2, ref_lengths=(6, 12), base_lengths=(2, 6), check_prompts=3,
             check_tokens=8, float32_check=False, sft_every_model=False, sft_steps=2,
             sft_batch=2, sft_lengths=(6, 10), dtype="float32", budget_seconds=120.0)


class CaseTimeout(Exception):
    pass


class Report:
    """The rows so far, rewritten to `path` as JSON after every case."""

    def __init__(self, path: Path | None, plan: Plan, device: torch.device) -> None:
        self.path, self.rows, self.models = path, [], {}
        self.meta = environment(device) | {"plan": dataclasses.asdict(plan)}
        self.start = time.perf_counter()
        self.budget = plan.budget_seconds

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        log.info("%s", format_row(row))
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        data = {"meta": self.meta | {"seconds": time.perf_counter() - self.start},
                "models": self.models, "rows": self.rows}
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(data, indent=1))
        partial.replace(self.path)


def environment(device: torch.device) -> dict:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "device": str(device),
            "device_name": name or platform.machine(), "python": platform.python_version(),
            **{p: version(p) for p in ("torch", "transformers", "peft", "trl", "accelerate",
                                       "datasets")}}


def run_case(report: Report, row: dict, work: Callable[[], dict], device: torch.device) -> dict:
    """Run one case into `row` and record it: a timeout or an error becomes its status."""
    if report.left() <= 0:
        row["status"] = "skipped: run budget spent"
    else:
        try:
            row |= work()
            row.setdefault("status", "ok")
        except CaseTimeout as err:
            row["status"] = f"time-boxed: {err}"
        except Exception as err:  # noqa: BLE001 - a failing case must not stop the others
            log.warning("%s", traceback.format_exc())
            row["status"] = f"error: {type(err).__name__}: {str(err)[:300]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report.add(row)
    return row


def build_model(name: str, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A random model with `name`'s shape, built on `device` (no weights, no network)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kind, shape = SHAPES[name]
    config = AutoConfig.for_model(kind, **shape, pad_token_id=PAD, bos_token_id=None,
                                  eos_token_id=None)
    torch.manual_seed(seed)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def random_prompts(seed: int, n: int, lengths: tuple[int, int], vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(lengths[0], lengths[1] + 1, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (size,), generator=g).tolist() for size in sizes]


def hf_generate(model, refs, new_tokens: int, deadline: float, **kwargs):
    """`model.generate` greedy on the left-padded reference prompts, stopped at `deadline`."""
    ids, mask = left_pad(refs, PAD, model.device)
    return model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                          max_new_tokens=new_tokens, pad_token_id=PAD,
                          max_time=max(deadline - time.perf_counter(), 0.01), **kwargs)


def _stop_at(deadline: float) -> Callable[[int], None]:
    """An engine's `on_step` hook that ends the case once `deadline` has passed."""
    def on_step(_: int) -> None:
        if time.perf_counter() > deadline:
            raise CaseTimeout("past the case's time limit")
    return on_step


# The decoders compared, each: (model, refs, bases, new tokens, deadline) -> ids per example.

def generate_ids(model, refs, bases, new_tokens, deadline):
    out = hf_generate(model, refs, new_tokens, deadline)
    return out[:, max(map(len, refs)):].tolist()


def step_engine(model, refs, bases, new_tokens, deadline, rule="dasd"):
    traces = decode_pairs(model, refs, bases, build_rule(rule), [], new_tokens, PAD,
                          on_step=_stop_at(deadline))
    return [t.token_ids for t in traces]


def draft_verify(model, refs, bases, new_tokens, deadline):
    traces = decode_pairs_draft_verify(model, refs, bases, build_rule("dasd"), [], new_tokens,
                                       PAD, on_step=_stop_at(deadline))
    return [t.token_ids for t in traces]


ENGINES = {"generate": generate_ids, "step": step_engine, "draft-verify": draft_verify}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def decode_case(model, engine: str, refs, bases, plan: Plan, device: torch.device) -> dict:
    """Warm up, reset the memory peak, then time one full decode of the batch."""
    decode = ENGINES[engine]
    decode(model, refs, bases, plan.warmup_tokens, time.perf_counter() + plan.case_seconds)
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    out = decode(model, refs, bases, plan.new_tokens, start + plan.case_seconds)
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(map(len, out))
    row = {"tokens": tokens, "seconds": round(seconds, 3), "tok_s": tokens / seconds,
           "peak_mib": peak_mib(device)}
    if tokens != len(refs) * plan.new_tokens:
        row["status"] = f"time-boxed: {tokens} of {len(refs) * plan.new_tokens} tokens"
    return row


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                None if len(a) == len(b) else min(len(a), len(b)))


def agreement_case(model, refs, bases, plan: Plan, dtype: torch.dtype) -> dict:
    """The `sd` step engine (all prompts in one batch) against `generate` at batch 1."""
    deadline = time.perf_counter() + plan.case_seconds
    engine = step_engine(model, refs, bases, plan.check_tokens, deadline, rule="sd")
    equal, differences = 0, []
    for row, (ref, got) in enumerate(zip(refs, engine, strict=True)):
        out = hf_generate(model, [ref], plan.check_tokens, deadline, output_logits=True,
                          return_dict_in_generate=True)
        expected = out.sequences[0, len(ref):].tolist()
        at = first_difference(expected, got)
        if at is None:
            equal += 1
        elif at < min(len(expected), len(got)):
            differences.append(describe_difference(row, at, expected, got, out.logits[at][0],
                                                   dtype))
        else:
            differences.append({"row": row, "position": at, "note": "lengths differ"})
    same = equal * plan.check_tokens + sum(d["position"] for d in differences)
    return {"rows_equal": equal, "rows": len(refs), "tokens": plan.check_tokens,
            "tokens_equal_before_first_difference": same, "differences": differences,
            "status": "ok" if equal == len(refs) else "differs"}


def describe_difference(row: int, at: int, expected: list[int], got: list[int],
                        logits: torch.Tensor, dtype: torch.dtype) -> dict:
    """generate's logit margin of its own token over the engine's, in the dtype's ulps at
    generate's top logit (a margin of an ulp or two is rounding, not a wrong token)."""
    logits = logits.float()
    top, other = float(logits[expected[at]]), float(logits[got[at]])
    ulp = torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(abs(top) or 1.0))
    return {"row": row, "position": at, "generate_token": expected[at],
            "engine_token": got[at], "margin": top - other, "margin_ulps": (top - other) / ulp,
            "top_logit": top, "logit_std": float(logits.std())}


def sft_case(model, name: str, plan: Plan, vocab: int, folder: Path, device) -> dict:
    """`plan.sft_steps` LoRA steps through dasd's own training path, on random rows."""
    from dasd.training.sft import train

    rows = synthetic_rows(plan.sft_batch * 2, plan.sft_lengths, vocab)
    data = folder / f"{name}-rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reset_peak(device)
    config = train_config(name, data, folder / f"{name}-adapter", plan)
    summary = train(config, model=model, tokenizer=tiny_tokenizer())
    losses = [summary[k] for k in ("train_loss_first", "train_loss_last", "train_loss_mean")]
    finite = all(x is not None and math.isfinite(x) for x in losses)
    return {"steps": summary["steps"], "s_per_step": summary["seconds_per_step"],
            "tok_s": summary["tokens_per_second"], "loss_first": losses[0],
            "loss_last": losses[1], "loss_finite": finite,
            "mixed_precision": summary["mixed_precision"], "peak_mib": peak_mib(device),
            "status": "ok" if finite and summary["steps"] == plan.sft_steps else "failed"}


def train_config(name: str, data: Path, out: Path, plan: Plan):
    """dasd's `TrainConfig` for a short run. TRL's arguments go in its `trainer` mapping
    where it has one, else flat (the fields of dasd 0.1)."""
    from dasd.training.sft import TrainConfig

    trl = {"max_steps": plan.sft_steps, "per_device_train_batch_size": plan.sft_batch,
           "learning_rate": 1e-4, "logging_steps": 1, "max_length": sum(plan.sft_lengths)}
    common = {"model": name, "data": [str(data)], "out": str(out), "overwrite": True}
    if "trainer" in {f.name for f in dataclasses.fields(TrainConfig)}:
        return TrainConfig(**common, trainer=trl | {"warmup_steps": 0})
    return TrainConfig(**common, **trl, warmup_ratio=0.0)


def synthetic_rows(n: int, lengths: tuple[int, int], vocab: int) -> list[dict]:
    """Rows in `dasd generate`'s format: random prompt and completion ids, marked correct."""
    prompts = random_prompts(7, n, (lengths[0], lengths[0]), vocab)
    completions = random_prompts(8, n, (lengths[1], lengths[1]), vocab)
    return [{"id": f"r{i}", "prompt_ids": p, "completion_ids": c, "finish_reason": "length",
             "correct": True} for i, (p, c) in enumerate(zip(prompts, completions, strict=True))]


def tiny_tokenizer():
    """Pad, EOS and unknown: all the trainer needs when rows arrive as token ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": 1, "<unk>": 2}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                   eos_token="<eos>", unk_token="<unk>")


def check_model(report: Report, name: str, plan: Plan, device: torch.device,
                folder: Path) -> None:
    """Every case of one model shape, in order: agreement, decode, SFT."""
    dtype, built = getattr(torch, plan.dtype), {}
    base = {"model": name}

    def build() -> dict:
        built["model"] = describe_model(report, name, dtype, device)
        return {"peak_mib": peak_mib(device)}

    if run_case(report, base | {"kind": "build", "case": "build"}, build, device)["status"] != "ok":
        return
    model, vocab = built.pop("model"), SHAPES[name][1]["vocab_size"]
    n = max(max(plan.batch_sizes), plan.check_prompts)
    refs = random_prompts(1, n, plan.ref_lengths, vocab)
    bases = random_prompts(2, n, plan.base_lengths, vocab)
    checks = [plan.dtype]
    if plan.float32_check and name == plan.models[0] and dtype != torch.float32:
        checks.append("float32")
    for checked in checks:
        def agree(checked=checked) -> dict:
            other = model if checked == plan.dtype else build_model(name, torch.float32, device)
            k = plan.check_prompts
            return agreement_case(other, refs[:k], bases[:k], plan, getattr(torch, checked))
        run_case(report, base | {"kind": "agree", "case": f"sd = generate ({checked})",
                                 "batch": plan.check_prompts}, agree, device)
    for size in plan.batch_sizes:
        peer = None
        for engine in ENGINES:
            row = run_case(report, base | {"kind": "decode", "case": engine, "batch": size},
                           lambda e=engine, s=size: decode_case(model, e, refs[:s], bases[:s],
                                                                plan, device), device)
            peer = row.get("tok_s") if engine == "generate" else peer
            if peer and row.get("tok_s") and row["status"] == "ok":
                row["vs_generate"] = row["tok_s"] / peer
        report.write()
    if name == plan.models[0]:
        vllm_cases(report, name, model, refs, bases, plan, device, folder)
    if plan.sft_steps and (plan.sft_every_model or name == plan.models[0]):
        run_case(report, base | {"kind": "sft", "case": f"sft {plan.sft_steps} steps",
                                 "batch": plan.sft_batch},
                 lambda: sft_case(model, name, plan, vocab, folder, device), device)


def vllm_cases(report: Report, name: str, model, refs, bases, plan: Plan,
               device: torch.device, folder: Path) -> None:
    """DASD on vLLM, where vLLM and CUDA are (the first model, the largest batch): plain
    greedy decoding of the base prompts (the peer), draft-and-verify, its linear form and
    lockstep, each timed; and whether lockstep's tokens equal draft-and-verify's."""
    row = {"model": name, "kind": "vllm", "batch": max(plan.batch_sizes)}
    try:
        import vllm
    except ImportError:
        run_case(report, row | {"case": "vllm paths"},
                 lambda: {"status": "skipped: vLLM is not installed"}, device)
        return
    if device.type != "cuda":
        run_case(report, row | {"case": "vllm paths"},
                 lambda: {"status": "skipped: vLLM needs CUDA"}, device)
        return
    from dasd.decoding.vllm_backend import decode_pairs_vllm
    from dasd.decoding.vllm_lockstep import decode_pairs_lockstep
    from dasd.decoding.vllm_lockstep_engine import VLLMLockstepEngine
    from dasd.decoding.vllm_processor import load_lockstep_llm

    path = folder / f"{name}-vllm"
    model.save_pretrained(path)
    n, vocab, params = row["batch"], SHAPES[name][1]["vocab_size"], vllm.SamplingParams
    refs, bases = refs[:n], bases[:n]
    built = {}

    def build() -> dict:
        built["llm"] = load_lockstep_llm(str(path), dtype=plan.dtype, skip_tokenizer_init=True,
                                         gpu_memory_utilization=0.4)
        return {}

    if run_case(report, row | {"case": "vllm build"}, build, device)["status"] != "ok":
        return
    llm, rule, outputs = built["llm"], build_rule("dasd"), {}

    def plain(tokens):
        done = llm.generate([{"prompt_token_ids": b} for b in bases], params(
            temperature=0.0, max_tokens=tokens, ignore_eos=True, detokenize=False),
            use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in done]

    def draft_verify(tokens, forced=False):
        traces = decode_pairs_vllm(llm, refs, bases, rule, [], tokens, vocab,
                                   sampling_params=params, forced=forced)
        return [t.token_ids for t in traces]

    def lockstep(tokens):
        traces, summary = decode_pairs_lockstep(VLLMLockstepEngine(llm, [], params), refs,
                                                bases, rule, [], tokens)
        outputs["lockstep_summary"] = summary.as_dict()
        return [t.token_ids for t in traces]

    paths = {"vllm plain": plain, "vllm draft-verify": draft_verify,
             "vllm linear": lambda t: draft_verify(t, forced=True), "vllm lockstep": lockstep}
    peer = None
    for case, decode in paths.items():
        def timed(decode=decode, case=case) -> dict:
            decode(plan.warmup_tokens)
            start = time.perf_counter()
            outputs[case] = decode(plan.new_tokens)
            seconds = time.perf_counter() - start
            tokens = sum(map(len, outputs[case]))
            return {"tokens": tokens, "seconds": round(seconds, 3), "tok_s": tokens / seconds}
        done = run_case(report, row | {"case": case}, timed, device)
        peer = done.get("tok_s") if case == "vllm plain" else peer
        if peer and done.get("tok_s"):
            done["vs_plain"] = done["tok_s"] / peer
    if "vllm lockstep" in outputs and "vllm draft-verify" in outputs:
        equal = sum(a == b for a, b in zip(outputs["vllm lockstep"],
                                           outputs["vllm draft-verify"], strict=True))
        run_case(report, row | {"kind": "agree", "case": "vllm lockstep = draft-verify"},
                 lambda: {"rows_equal": equal, "rows": n, "differences": [],
                          "tokens": sum(map(len, outputs["vllm lockstep"])),
                          **outputs.get("lockstep_summary", {})}, device)
    built.clear()  # the engine goes with this frame
    gc.collect()
    torch.cuda.empty_cache()


def describe_model(report: Report, name: str, dtype: torch.dtype, device: torch.device):
    """Build the model and note its size in the report's `models`."""
    start = time.perf_counter()
    model = build_model(name, dtype, device)
    report.models[name] = {"architecture": type(model).__name__, "shape": SHAPES[name][1],
                           "parameters": sum(p.numel() for p in model.parameters()),
                           "weights_mib": sum(p.numel() * p.element_size()
                                              for p in model.parameters()) / 2**20,
                           "dtype": str(dtype), "build_seconds": time.perf_counter() - start}
    return model


def format_row(row: dict) -> str:
    def num(key: str, fmt: str) -> str:
        value = row.get(key)
        return format(value, fmt) if isinstance(value, int | float) else "-"

    return (f"| {row['model']} | {row['case']} | {row.get('batch', '-')} | {num('tok_s', '.1f')} "
            f"| {num('vs_plain' if 'vs_plain' in row else 'vs_generate', '.2f')} "
            f"| {num('peak_mib', '.0f')} | {result(row)} |")


def result(row: dict) -> str:
    if row["kind"] == "agree" and "rows_equal" in row:
        text = f"{row['rows_equal']}/{row['rows']} rows equal ({row['tokens']} tokens)"
        for d in row["differences"][:2]:
            if "margin" in d:
                text += (f"; row {d['row']} differs at token {d['position']}, margin "
                         f"{d['margin']:.3g} ({d['margin_ulps']:.1f} ulp)")
        return text
    if row["kind"] == "sft" and "steps" in row:
        return (f"{row['status']}: {row['steps']} steps, {row['s_per_step']:.3f} s/step, loss "
                f"{row['loss_first']:.3f} -> {row['loss_last']:.3f}, finite: "
                f"{row['loss_finite']}")
    return str(row.get("status"))


def print_table(report: Report) -> None:
    meta = report.meta
    print(f"\ndasd GPU check, {meta['date']}, {meta['device_name']} ({meta['device']}), torch "
          f"{meta['torch']}, transformers {meta['transformers']}; random weights, "
          f"{meta['plan']['dtype']}, {meta['plan']['new_tokens']} new tokens, EOS ignored\n")
    print("| model | case | batch | tok/s | x generate (vLLM: x plain) | peak MiB | result |")
    print("|---|---|---|---|---|---|---|")
    for row in report.rows:
        if row["kind"] != "build" or row["status"] != "ok":
            print(format_row(row))
    for name, info in report.models.items():
        print(f"\n{name}: {info['architecture']}, {info['parameters'] / 1e6:.1f} M parameters, "
              f"{info['weights_mib']:.0f} MiB of weights")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the table here as JSON")
    parser.add_argument("--small", action="store_true", help="tiny shapes (default without CUDA)")
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--batch-sizes", help="comma-separated, e.g. 1,16,64")
    parser.add_argument("--new-tokens", type=int)
    parser.add_argument("--sft-steps", type=int, help="0: no SFT")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--case-seconds", type=float, help="time box of one case")
    parser.add_argument("--budget-seconds", type=float, help="cases after this are skipped")
    args = parser.parse_args(argv)
    plan = SMALL if args.small or not torch.cuda.is_available() else Plan()
    changes = {"models": args.models and tuple(args.models.split(",")),
               "batch_sizes": args.batch_sizes and tuple(map(int, args.batch_sizes.split(","))),
               "new_tokens": args.new_tokens, "sft_steps": args.sft_steps, "dtype": args.dtype,
               "case_seconds": args.case_seconds, "budget_seconds": args.budget_seconds}
    plan = dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})
    unknown = set(plan.models) - set(SHAPES)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}: use {', '.join(SHAPES)}")
    return args, plan


def main(argv: list[str] | None = None) -> Report:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args, plan = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    report = Report(args.out, plan, device)
    with tempfile.TemporaryDirectory() as folder:
        for name in plan.models:
            check_model(report, name, plan, device, Path(folder))
            gc.collect()  # the model goes before the next one is built
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report.meta["seconds"] = time.perf_counter() - report.start
    report.write()
    print_table(report)
    return report


if __name__ == "__main__":
    main()
