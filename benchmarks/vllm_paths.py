"""What each vLLM path costs per row, replayed from real DASD traces, and a cost model.

    python benchmarks/vllm_paths.py runs/frontier-gsm8k/generate/dasd.jsonl \
        runs/frontier-math/generate/dasd.jsonl [--vocab 151936] [--batch 16]

Reads rows that `dasd generate` wrote (any rule; the DASD rows of the frontier sweeps,
`dasd run configs/frontier-gsm8k.yaml` and `configs/frontier-math.yaml`, are the
embedded model on GSM8K and MATH) and replays, for every row, what each way of running
DASD on vLLM does to produce exactly that row:

- `plain`: greedy decoding of the base context alone (the peer: what one sample costs
  when nothing is aligned): its prompt once, one decode step per token.
- `draft-verify (before)`: `dasd.decoding.vllm_backend` before 2026-12-06. Rounds of a
  chunk drafted by the reference (adaptive size, `ChunkSize`, shared by a batch of
  `--batch` rows as in `dasd generate`), accepted up to the first token that is not the
  reference top-1 (`ref_rank` > 1). The base context is scored with `prompt_logprobs`,
  which vLLM computes without the prefix cache: every round prefills the base prompt, the
  tokens so far and the draft again. Each round's log-probabilities became dense
  `[chunk, vocab]` float32 tensors per row and context on the host.
- `draft-verify (now)`: `vllm.path draft-verify` today: the same rounds and recomputation;
  each round is laid out over the tokens vLLM returned for it (`compact`), at most
  (K + n + 1) columns per drafted position of the batch (this upper bound is counted).
- `linear fallback`: lockstep's fallback: the same rounds with the base scored by forced
  decoding of the draft (`VLLMBackend(forced=True)`: the prefix cache keeps the base
  context), laid out the same way.
- `lockstep`: both contexts as two requests kept in step by the logits processor
  (`dasd.decoding.vllm_lockstep`): each prompt prefilled once, one step per token for
  both; a step record per token comes back (about 160 bytes of JSON).

For each path it prints per row: engine rounds (sequential `generate` calls), tokens the
model computes (prefill + decode; recomputed prefill apart) and bytes brought to the host,
and the cost model's ratio to `plain`. The model: at the batch sizes vLLM runs, a token
costs about 2 x parameters FLOPs whether it is prefilled or decoded, so the tokens a path
computes, over plain's, is its first-order cost; host bytes are listed apart, since the
old path also processes them serially on the CPU while the GPU waits. What the model
leaves out: attention's growth with context (it favours the paths that recompute less),
the ref side's cache-block granularity (a rejected draft's block is recomputed: counted
as one token), and scheduling overhead per round (it favours lockstep and plain, one
call each). Measured on traces; not timed on a GPU.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from dasd.decoding.draft_verify import ChunkSize

RECORD_BYTES = 160  # one lockstep step record (JSON line) per token
PATHS = ("draft-verify (before)", "draft-verify (now)", "linear fallback")


@dataclass
class Cost:
    rounds: int = 0
    prefill: int = 0
    recomputed: int = 0  # prefill of tokens the model had seen before
    decode: int = 0
    host_bytes: int = 0

    @property
    def tokens(self) -> int:
        return self.prefill + self.decode


@dataclass
class Replay:
    """One row being replayed: where it stands and what each path has spent."""

    ref_prompt: int
    base_prompt: int
    accepted: list[bool]  # per token: the reference top-1 (a draft would be kept)
    at: int = 0
    costs: dict[str, Cost] = field(default_factory=lambda: {
        name: Cost() for name in PATHS})


def read_rows(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    return rows


def replay_draft_verify(batch: list[Replay], vocab: int, top_k: int, top_n: int) -> None:
    """Rounds of draft-and-verify over a batch of rows, as `run_draft_verify` runs them."""
    chunk = ChunkSize()
    for row in batch:  # the first round prefills both prompts
        for name, cost in row.costs.items():
            cost.prefill += row.ref_prompt + (row.base_prompt if name == PATHS[2] else 0)
    active = [row for row in batch if row.accepted]
    while active:
        size, outcomes = chunk.size, []
        drafts = [min(size, len(row.accepted) - row.at) for row in active]
        columns = min(vocab, sum(drafts) * (top_k + top_n + 1))  # compact, at most
        for row, draft in zip(active, drafts, strict=True):
            window = row.accepted[row.at:row.at + draft]
            taken = next((i + 1 for i, ok in enumerate(window) if not ok), draft)
            rejected = taken < draft or not window[taken - 1]
            for name, cost in row.costs.items():
                cost.rounds += 1
                cost.decode += draft  # the reference drafts
                cost.prefill += 1 if row.at else 0  # the rule's token the draft lacked
                cost.host_bytes += 2 * draft * (vocab if name == PATHS[0] else columns) * 4
                if name == PATHS[2]:
                    cost.decode += draft  # the base decodes the draft, forced
                else:
                    again = row.base_prompt + row.at
                    cost.prefill += again + draft
                    cost.recomputed += again
            row.at += taken
            outcomes.append(_Round(taken, rejected))
        chunk.update(outcomes)
        active = [row for row in active if row.at < len(row.accepted)]


@dataclass
class _Round:
    n: int
    rejected: bool

    @property
    def tokens(self) -> list[int]:
        return [0] * self.n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="+", help="generated JSONL files")
    parser.add_argument("--vocab", type=int, default=49_152, help="SmolLM2's by default")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=6)
    parser.add_argument("--top-n", type=int, default=5, help="floor(1/tau)")
    args = parser.parse_args()
    rows = read_rows(args.rows)
    replays = [Replay(len(r["ref_prompt_ids"]), len(r["prompt_ids"]),
                      [rank == 1 for rank in r["tokens"]["ref_rank"]]) for r in rows]
    for start in range(0, len(replays), args.batch):
        replay_draft_verify(replays[start:start + args.batch], args.vocab, args.top_k,
                            args.top_n)
    totals = {"plain": Cost(), "lockstep": Cost()}
    for row in replays:
        n = len(row.accepted)
        totals["plain"].rounds += 1
        totals["plain"].prefill += row.base_prompt
        totals["plain"].decode += n
        totals["lockstep"].rounds += 1
        totals["lockstep"].prefill += row.ref_prompt + row.base_prompt
        totals["lockstep"].decode += 2 * n
        totals["lockstep"].host_bytes += n * RECORD_BYTES
        for name, cost in row.costs.items():
            total = totals.setdefault(name, Cost())
            for key in ("rounds", "prefill", "recomputed", "decode", "host_bytes"):
                setattr(total, key, getattr(total, key) + getattr(cost, key))
    tokens = sum(len(r.accepted) for r in replays)
    consistent = sum(sum(r.accepted) for r in replays) / max(tokens, 1)
    print(f"{len(replays)} rows from {', '.join(args.rows)}: {tokens / len(replays):.0f} "
          f"response tokens, {sum(r.base_prompt for r in replays) / len(replays):.0f} base "
          f"and {sum(r.ref_prompt for r in replays) / len(replays):.0f} reference prompt "
          f"tokens per row; {consistent:.1%} of tokens the reference top-1; vocabulary "
          f"{args.vocab:,}, batch {args.batch}")
    print(f"{'path (per row)':<24}{'rounds':>8}{'tokens':>10}{'recomputed':>12}"
          f"{'host MB':>10}{'x plain':>9}")
    plain = totals["plain"].tokens
    for name in ("plain", *PATHS, "lockstep"):
        cost, n = totals[name], len(replays)
        print(f"{name:<24}{cost.rounds / n:>8.1f}{cost.tokens / n:>10.0f}"
              f"{cost.recomputed / n:>12.0f}{cost.host_bytes / n / 1e6:>10.3f}"
              f"{cost.tokens / plain:>9.2f}")


if __name__ == "__main__":
    main()
