"""Decoding speed of dasd against plain self-distillation, measured in one process.

    python benchmarks/generate_speed.py --limit 64 --batch-size 16

Runs `dasd generate` for `sd` and `dasd` (both through the two-context engine) on the
same problems, plus `model.generate` greedy on the reference prompts (the usual way plain
self-distillation is decoded, one context only), and prints tokens per second and the
ratios. Numbers are only comparable within one run (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dasd.decoding.generate import GenerateConfig, encode, generate
from dasd.evaluation.evaluate import generate_greedy
from dasd.models import eos_token_ids, load_model
from dasd.tasks import get_task
from dasd.tasks.prompts import render_prompts


def hf_generate_tokens_per_second(model, tokenizer, config: GenerateConfig) -> float:
    task = get_task(config.task)
    examples = task.load(config.split, limit=config.limit, seed=config.seed)
    prompts = [encode(tokenizer, render_prompts(tokenizer, task.prompts, e)[1]) for e in examples]
    eos = eos_token_ids(model, tokenizer)
    tokens, start = 0, time.perf_counter()
    for i in range(0, len(prompts), config.batch_size):
        outputs = generate_greedy(model, tokenizer, prompts[i:i + config.batch_size],
                                  config.max_new_tokens, eos)
        tokens += sum(len(ids) for ids, _ in outputs)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("sd", "dasd"):
            config = GenerateConfig(model=args.model, task="arith", limit=args.limit,
                                    method=method, batch_size=args.batch_size,
                                    max_new_tokens=args.max_new_tokens,
                                    out=str(Path(tmp) / f"{method}.jsonl"))
            summary = generate(config, model=model, tokenizer=tokenizer)
            rates[f"engine {method}"] = summary["tokens_per_second"]
        rates["hf generate (ref prompt)"] = hf_generate_tokens_per_second(model, tokenizer, config)
    print(f"\n{args.model}, {args.limit} arith problems, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, device {next(model.parameters()).device}")
    peer = rates["hf generate (ref prompt)"]
    for name, rate in rates.items():
        print(f"{name:28s} {rate:8.1f} tok/s   {rate / peer:5.2f}x hf generate")
    print(f"dasd / sd (same engine): {rates['engine dasd'] / rates['engine sd']:.2f}x")


if __name__ == "__main__":
    main()
