"""DASD's decoding engines against plain decoding of the reference context: speed and memory.

    python benchmarks/decode_speed.py                       # 64 arith problems, batch 1 and 16
    python benchmarks/decode_speed.py --limit 8 --max-new-tokens 48 --batch-sizes 1,4

Variants, all greedy on the same `arith` train problems:
  (a) hf-generate   `model.generate` on the reference prompt alone, with its default KV cache
                    (plain self-distillation, the peer every ratio is taken against);
  (a') generate-in-place  the same with the engines' in-place KV cache (`dasd.decoding.cache`,
                    what `dasd eval` uses), to show how much of a gain is the cache's;
  (b) step          the step engine (`decode_pairs`): both contexts in one forward per token;
  (c) draft-verify  `decode_pairs_draft_verify`: reference drafts, base scores a chunk;
  (d) naive         two model copies, no cache, one example at a time (`--naive-limit`
                    problems, `--naive-max-new-tokens` each: it re-encodes both contexts
                    at every token, so it only runs on a small share; batch does not apply).
Speed: (a), (a'), (b), (c) take turns batch by batch in one process, so load from other users of
the machine falls on all three alike; tokens/s and ratios to (a) per batch size. Memory:
each variant runs again in a fresh subprocess on a few problems and reports its peak RSS
while decoding (the resident weights included; the higher peak of loading is reset through
/proc/self/clear_refs) or its peak allocated CUDA memory. It also counts the problems on
which (b) and (c) emitted identical tokens (they should all be; float32 rounding may rarely
split a tie).

Batching (`--batching-only` runs just this): the step engine with static batches (the next
examples start when the whole batch has ended) against continuous batching (an ending
example's rows go to the next waiting one), on `--batching-limit` problems whose response
lengths are forced (EOS ignored, each example stops at its drawn length) and drawn like
MATH's (`math_like_lengths`, times `--length-scale` to fit a CPU). It reports the share
of the batch's row slots that held a decoding example, tokens/s and their ratio; the two
modes take turns (static, continuous, continuous, static) in one process and must emit
the same tokens.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from dasd.decoding.cache import growing_cache
from dasd.decoding.draft_verify import decode_pairs_draft_verify
from dasd.decoding.engine import FINISH_EOS, TokenTrace, decode_pairs, record_step, step_statistics
from dasd.decoding.generate import encode
from dasd.decoding.plain import generate_greedy
from dasd.decoding.rules import build_rule
from dasd.models import eos_token_ids, load_model
from dasd.tasks import get_task
from dasd.tasks.prompts import render_prompts

VARIANTS = ("hf-generate", "generate-in-place", "step", "draft-verify", "naive")
TIMED = VARIANTS[:4]


def load_pairs(tokenizer, limit: int) -> list[tuple[list[int], list[int]]]:
    """(reference ids, base ids) of the first `limit` arith train problems."""
    task = get_task("arith")
    pairs = []
    for example in task.load("train", limit=limit):
        base, ref = render_prompts(tokenizer, task.prompts, example)
        pairs.append((encode(tokenizer, ref), encode(tokenizer, base)))
    return pairs


def _logprobs(model, ids: list[int]) -> torch.Tensor:
    logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


@torch.inference_mode()
def naive_two_copies(ref_model, base_model, ref: list[int], base: list[int], rule, eos,
                     max_new_tokens: int) -> TokenTrace:
    """The paper's plain set-up: a model copy per context, each re-encoded at every token."""
    trace = TokenTrace()
    for _ in range(max_new_tokens):
        ref_lp = _logprobs(ref_model, ref + trace.token_ids)
        base_lp = _logprobs(base_model, base + trace.token_ids)
        selection = rule.select(ref_lp, base_lp)
        token = int(selection.tokens[0])
        stats = step_statistics(ref_lp, base_lp, selection.tokens).tolist()[0]
        record_step(trace, token, int(selection.categories[0]), stats)
        if token in eos:
            trace.finish_reason = FINISH_EOS
            break
    return trace


def acceptance_rate(traces: list[TokenTrace]) -> float:
    """q: the share of emitted tokens that are the reference top-1 (a draft is kept exactly
    there)."""
    ranks = [r for t in traces for r in t.ref_rank]
    return sum(r == 1 for r in ranks) / max(len(ranks), 1)


@torch.inference_mode()
def forward_costs(model, prompt: list[int], shapes=((2, 1), (1, 2), (1, 4), (1, 8)),
                  repeats: int = 15) -> dict[tuple[int, int], float]:
    """Time of one cached forward of `rows` x `tokens` new tokens after `prompt`, relative
    to one row of one token (median of `repeats`): how far this device is from the
    memory-bound regime where extra rows or tokens in a forward come free."""
    device = next(model.parameters()).device

    def seconds(rows: int, tokens: int) -> float:
        cache = growing_cache(model, room=tokens)
        model(input_ids=torch.tensor([prompt] * rows, device=device), cache=cache)
        new = torch.tensor([prompt[-tokens:]] * rows, device=device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=new, cache=cache, logits_to_keep=tokens)
            times.append(time.perf_counter() - start)
            cache.crop(-tokens)
        return sorted(times)[repeats // 2]

    one = seconds(1, 1)
    return {shape: seconds(*shape) / one for shape in shapes}


def engine_bounds(q: float, costs: dict[tuple[int, int], float], max_chunk: int = 8
                  ) -> tuple[float, float]:
    """Upper bounds on each engine's speed relative to one-row, one-token decoding, from
    forward costs alone (no overhead): the step engine pays a two-row forward per token;
    draft-verify pays L one-row forwards plus a base pass of L tokens per round and emits
    E(L) = 1 + q + ... + q^(L-1) tokens (L among the measured token counts)."""
    step = 1 / costs[(2, 1)]
    chunks = [tokens for rows, tokens in costs if rows == 1 and tokens <= max_chunk]
    draft = max(sum(q ** j for j in range(n)) / (n + costs[(1, n)]) for n in chunks)
    return step, draft


def runners(model, tokenizer, args, step_traces: list[TokenTrace] | None = None
            ) -> dict[str, Callable[[list], list[list[int]]]]:
    """Each variant as: batch of (ref, base) pairs -> emitted token ids per example; the
    step engine's traces are appended to `step_traces`."""
    rule, eos, pad = build_rule("dasd"), eos_token_ids(model, tokenizer), tokenizer.pad_token_id
    refs = lambda batch: [r for r, _ in batch]  # noqa: E731
    bases = lambda batch: [b for _, b in batch]  # noqa: E731
    traces = step_traces if step_traces is not None else []

    def step(batch):
        traces.extend(decode_pairs(model, refs(batch), bases(batch), rule, eos,
                                   args.max_new_tokens, pad))
        return [t.token_ids for t in traces[-len(batch):]]

    out = {
        "hf-generate": lambda batch: [ids for ids, _ in generate_greedy(
            model, tokenizer, refs(batch), args.max_new_tokens, eos, in_place_cache=False)],
        "generate-in-place": lambda batch: [ids for ids, _ in generate_greedy(
            model, tokenizer, refs(batch), args.max_new_tokens, eos)],
        "step": step,
        "draft-verify": lambda batch: [t.token_ids for t in decode_pairs_draft_verify(
            model, refs(batch), bases(batch), rule, eos, args.max_new_tokens, pad,
            chunk_size=args.chunk_size)],
    }
    base_copy = None

    def naive(batch):
        nonlocal base_copy
        if base_copy is None:
            base_copy = copy.deepcopy(model)
        return [naive_two_copies(model, base_copy, r, b, rule, eos,
                                 args.naive_max_new_tokens).token_ids for r, b in batch]
    out["naive"] = naive
    return out


def measure_speed(run, pairs, batch_size: int, names) -> tuple[dict, dict]:
    """Variants take turns batch by batch; returns (tokens/s, outputs) per variant."""
    seconds, tokens, outputs = defaultdict(float), defaultdict(int), defaultdict(list)
    for i in range(0, len(pairs), batch_size):
        batch = pairs[i:i + batch_size]
        for name in names:
            start = time.perf_counter()
            emitted = run[name](batch)
            seconds[name] += time.perf_counter() - start
            tokens[name] += sum(map(len, emitted))
            outputs[name].extend(emitted)
    return {n: tokens[n] / seconds[n] for n in names}, outputs


def peak_memory_mb(args, variant: str, batch_size: int) -> float:
    """Peak memory of one variant in a fresh process (a few problems)."""
    command = [sys.executable, __file__, "--only", variant, "--limit", str(args.memory_limit),
               "--batch-sizes", str(batch_size), "--max-new-tokens", "32",
               "--naive-max-new-tokens", "8", "--model", args.model,
               *(["--threads", str(args.threads)] if args.threads else [])]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]


def reset_peak_rss() -> bool:
    """Linux: forget the peak RSS so far (loading the model peaks higher than decoding)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def only(args) -> None:
    """Subprocess mode: run one variant and print its peak memory while decoding (the
    resident weights included) as JSON."""
    model, tokenizer = load_model(args.model)
    run = runners(model, tokenizer, args)
    pairs = load_pairs(tokenizer, args.limit)
    reset = reset_peak_rss()
    if args.only == "naive":
        measure_speed(run, pairs[:1], 1, ["naive"])
    else:
        measure_speed(run, pairs, args.batch_sizes[0], [args.only])
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mb()
    print(json.dumps({"peak_mb": peak, "reset": reset}))


def math_like_lengths(n: int, scale: float, seed: int = 0) -> list[int]:
    """Response lengths like MATH's: log-normal, fitted to the token lengths of the MATH
    training solutions under SmolLM2's tokenizer (median 165, 90th percentile 500, 99th
    1,071), clipped to 100-2,000 tokens, times `scale` (at least 1)."""
    g = torch.Generator().manual_seed(seed)
    lengths = (165 * torch.exp(0.86 * torch.randn(n, generator=g, dtype=torch.float64)))
    return [max(1, round(x * scale)) for x in lengths.clamp(100, 2000).tolist()]


def measure_batching(model, tokenizer, pairs, batch_size: int, scale: float) -> dict:
    """Static vs continuous batching of the step engine on forced MATH-like lengths: the
    share of row slots (2 x `batch_size` per forward) that held a decoding example, and
    tokens/s, the modes taking turns so that load from other users falls on both."""
    lengths = math_like_lengths(len(pairs), scale)
    refs, bases = [r for r, _ in pairs], [b for _, b in pairs]
    seconds, share, tokens = defaultdict(float), {}, {}
    for mode in ("static", "continuous", "continuous", "static"):
        active = []  # examples decoding at each step
        start = time.perf_counter()
        traces = decode_pairs(model, refs, bases, build_rule("dasd"), [], lengths,
                              tokenizer.pad_token_id, on_step=active.append,
                              batch_size=batch_size, continuous=mode == "continuous")
        seconds[mode] += time.perf_counter() - start
        share[mode] = sum(active) / (len(active) * batch_size)
        tokens.setdefault(mode, [t.token_ids for t in traces])
    rates = {mode: 2 * sum(lengths) / seconds[mode] for mode in share}
    return {"lengths": lengths, "share": share, "rates": rates,
            "same": tokens["static"] == tokens["continuous"]}


def report_batching(args, result: dict) -> None:
    lengths, share, rates = result["lengths"], result["share"], result["rates"]
    ordered = sorted(lengths)
    print(f"\nbatching: {len(lengths)} arith train problems, batch {args.batching_batch}, "
          f"response lengths forced, MATH-like x {args.length_scale} (min "
          f"{ordered[0]}, median {ordered[len(ordered) // 2]}, max {ordered[-1]}, "
          f"{sum(lengths)} tokens)\n")
    print("| step engine batching | row slots doing useful work | tok/s | vs static |")
    print("|---|---|---|---|")
    for mode in ("static", "continuous"):
        print(f"| {mode} | {100 * share[mode]:.1f}% | {rates[mode]:.1f} | "
              f"{rates[mode] / rates['static']:.2f}x |")
    print(f"\nsame tokens in both modes: {result['same']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16])
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: adaptive")
    parser.add_argument("--naive-limit", type=int, default=1)
    parser.add_argument("--naive-max-new-tokens", type=int, default=32)
    parser.add_argument("--memory-limit", type=int, default=4,
                        help="problems per memory subprocess (0: skip memory)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 holds up better when "
                             "other processes share the cores")
    parser.add_argument("--batching-limit", type=int, default=96,
                        help="problems for static vs continuous batching (0: skip)")
    parser.add_argument("--batching-batch", type=int, default=8)
    parser.add_argument("--length-scale", type=float, default=0.1,
                        help="MATH-like response lengths (100-2,000 tokens) times this")
    parser.add_argument("--batching-only", action="store_true",
                        help="measure static vs continuous batching only")
    parser.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        return only(args)
    model, tokenizer = load_model(args.model)
    batching = None
    if args.batching_limit:
        batching = measure_batching(model, tokenizer, load_pairs(tokenizer, args.batching_limit),
                                    args.batching_batch, args.length_scale)
    if args.batching_only:
        return report_batching(args, batching) if batching else None
    step_traces: list[TokenTrace] = []
    run, pairs = runners(model, tokenizer, args, step_traces), load_pairs(tokenizer, args.limit)
    measure_speed(run, pairs[:1], 1, TIMED)  # warm-up
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    rows = []
    for size in args.batch_sizes:
        rates, outputs = measure_speed(run, pairs, size, TIMED)
        same = sum(a == b for a, b in zip(outputs["step"], outputs["draft-verify"], strict=True))
        rows.append((size, rates, same))
    naive_rate, _ = measure_speed(run, pairs[: args.naive_limit], 1, ["naive"])
    costs = forward_costs(model, pairs[0][0])
    report(args, model, weights, rows, naive_rate["naive"], len(pairs),
           acceptance_rate(step_traces[1:]), costs)
    if batching:
        report_batching(args, batching)


def _mb(value: float | None) -> str:
    return f"{value:.0f}" if value else "-"


def report(args, model, weights: float, rows, naive_rate: float, n: int,
           q: float, costs: dict[tuple[int, int], float]) -> None:
    memory = {}
    if args.memory_limit:
        for size in args.batch_sizes:
            for name in TIMED:
                memory[(name, size)] = peak_memory_mb(args, name, size)
        memory[("naive", 1)] = peak_memory_mb(args, "naive", 1)
    device = next(model.parameters()).device
    print(f"\n{args.model} ({weights:.0f} MB of weights), {n} arith train problems, "
          f"max {args.max_new_tokens} new tokens, DASD K 6 tau 0.2, chunk "
          f"{args.chunk_size or 'adaptive'}, device {device}, {torch.get_num_threads()} threads\n")
    print("| variant | batch | tok/s | vs hf-generate | peak memory while decoding, MB |")
    print("|---|---|---|---|---|")
    for size, rates, _ in rows:
        peer = rates["hf-generate"]
        for name in TIMED:
            print(f"| {name} | {size} | {rates[name]:.1f} | {rates[name] / peer:.2f}x | "
                  f"{_mb(memory.get((name, size)))} |")
    print(f"| naive (two copies, {args.naive_limit} problem(s), {args.naive_max_new_tokens} "
          f"tokens) | 1 | {naive_rate:.2f} | {naive_rate / rows[0][1]['hf-generate']:.2f}x "
          f"(batch {rows[0][0]}) | {_mb(memory.get(('naive', 1)))} |")
    for size, _, same in rows:
        print(f"\nbatch {size}: draft-verify emitted the step engine's tokens on {same}/{n} "
              "problems")
    step, draft = engine_bounds(q, costs)
    shown = ", ".join(f"{rows}x{tokens}: {cost:.2f}" for (rows, tokens), cost in costs.items())
    print(f"\nforward cost, rows x new tokens, relative to 1x1: {shown}")
    print(f"reference top-1 emitted (draft kept) at {100 * q:.1f}% of tokens")
    print(f"bounds from forward costs alone (no overhead), relative to one-row decoding: step "
          f"engine {step:.2f}x, draft-verify {draft:.2f}x")


if __name__ == "__main__":
    main()
