"""The vLLM side of lockstep DASD (`dasd.decoding.vllm_lockstep`): what its v1 batch-level
logits processor does (`RequestProcessor`; the vLLM class itself is in `vllm_processor.py`),
and the engine that runs pairs of requests through it.

Written for vLLM's v1 logits-processor interface (`vllm.v1.sample.logits_processor`),
0.11 to 0.33 (`SUPPORTED`): 0.34 removed it, and 0.31-0.33 run it only on the V1 model
runner (`VLLM_USE_V2_MODEL_RUNNER=0`, set before the engine starts). Other versions are
refused with one line. The processor runs in vLLM's engine process, so everything it
needs travels in each request's `extra_args["dasd_pair"]`: the pair, the role, the rule
(method and settings), the example's key (stateful rules seed by it) and the file its
step records go to, which the engine reads back after the call.

Not run on a GPU yet: the CPU tests drive `RequestProcessor` and `VLLMLockstepEngine`
through a fake `LLM` over a fake persistent batch (tests/decoding/fake_vllm_batch.py);
only `vllm_processor.LockstepProcessor`, three lines around `RequestProcessor`, needs vLLM.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dasd.decoding.rules import RULES, Selection, SelectionRule, build_rule, rule_settings
from dasd.decoding.vllm_lockstep import (
    EXTRA_KEY,
    REF,
    LockstepCore,
    PairBook,
    PairRules,
    StepRecord,
)
from dasd.errors import DasdError

SUPPORTED = ("0.11", "0.34")  # [from, to)
CALL_BITS = 32  # a pair's id: (its generate call << CALL_BITS) + its index in the call
V2_DEFAULT = "0.31"  # from here vLLM runs custom processors only on its V1 runner if asked


def check_vllm_version(version: str) -> None:
    """Refuse a vLLM whose logits-processor interface lockstep was not written for."""
    from packaging.version import Version

    low, high = SUPPORTED
    if not Version(low) <= Version(version) < Version(high):
        raise DasdError(f"lockstep DASD on vLLM needs vLLM >= {low}, < {high} (its v1 logits-"
                        f"processor interface); this is {version}: install "
                        f"'vllm>={low},<{high}', or use vllm.path draft-verify")
    if Version(version) >= Version(V2_DEFAULT):
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"


def rule_spec(rule: SelectionRule) -> dict[str, Any]:
    """The rule as JSON: its registry name and its settings."""
    name = next(n for n, cls in RULES.items() if type(rule) is cls)
    return {"method": name, "settings": rule_settings(rule)}


class RequestRules:
    """`PairRules` for pairs whose rule arrives with the requests: one per rule spec."""

    def __init__(self, book: PairBook, decode: Callable[[list[int]], str] | None) -> None:
        self.book, self.decode = book, decode
        self.by_spec: dict[str, PairRules] = {}

    def select(self, pairs: Sequence[int], ref_logprobs: torch.Tensor,
               base_logprobs: torch.Tensor) -> Selection:
        self._forget_older_calls(pairs)
        infos = [self.book.seen[pair, REF].info for pair in pairs]
        tokens = torch.empty(len(pairs), dtype=torch.long, device=ref_logprobs.device)
        categories = torch.empty_like(tokens)
        groups: dict[str, list[int]] = {}
        for i, info in enumerate(infos):  # the spec as text, once per request
            spec = info.setdefault("spec", json.dumps(info["rule"], sort_keys=True))
            groups.setdefault(spec, []).append(i)
        for spec, rows in groups.items():
            rules = self._rules(spec)
            for i in rows:
                rules.keys[pairs[i]] = infos[i]["key"]
            index = torch.tensor(rows, device=ref_logprobs.device)
            chosen = rules.select([pairs[i] for i in rows], ref_logprobs[index],
                                  base_logprobs[index])
            tokens[index], categories[index] = chosen.tokens, chosen.categories
        return Selection(tokens, categories)

    def _forget_older_calls(self, pairs: Sequence[int]) -> None:
        """Drop the started rules of pairs from earlier `generate` calls (a pair id's high
        bits are its call's number: `VLLMLockstepEngine`)."""
        newest = max(pair >> CALL_BITS for pair in pairs)
        for rules in self.by_spec.values():
            for pair in [p for p in rules.started() if p >> CALL_BITS < newest]:
                rules.restart(pair)
        for key in [key for key in self.book.seen if key[0] >> CALL_BITS < newest]:
            del self.book.seen[key]

    def _rules(self, spec: str) -> PairRules:
        if spec not in self.by_spec:
            values = json.loads(spec)
            settings = dict(values["settings"])
            rule = build_rule(values["method"], seed=settings.pop("seed", 0), **settings)
            self.by_spec[spec] = PairRules(rule, {}, self.decode)
        return self.by_spec[spec]


class RequestProcessor:
    """What the vLLM logits processor does, apart from vLLM's class (so that it can be
    tested without vLLM): follow the batch, select and force every pair in step, append
    each step's record to the file its requests name."""

    def __init__(self, decode: Callable[[list[int]], str] | None = None) -> None:
        self.book = PairBook()
        self.core = LockstepCore(RequestRules(self.book, decode), self._record, self.book)
        self._lines: dict[str, list[str]] = {}  # this step's records, by trace file

    def update_state(self, batch_update: Any) -> None:
        self.core.update_state(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        logits = self.core.apply(logits)
        for path, lines in self._lines.items():  # one write per file and step
            with open(path, "a", encoding="utf-8") as out:
                out.write("".join(lines))
        self._lines.clear()
        return logits

    def _record(self, pair: int, record: StepRecord) -> None:
        path = self.book.seen[pair, REF].info["trace"]
        self._lines.setdefault(path, []).append(
            json.dumps({"pair": pair, **record.__dict__}) + "\n")


class VLLMLockstepEngine:
    """`decode_pairs_lockstep`'s engine on a `vllm.LLM` built with
    `logits_processors=[LockstepProcessor]`: one `generate` call per `run`, the processor's
    records read back from a temporary file."""

    _calls = itertools.count()

    def __init__(self, llm: Any, eos_ids: Sequence[int],
                 sampling_params: Callable[..., Any]) -> None:
        self.llm, self.eos, self.params = llm, set(eos_ids), sampling_params

    def run(self, requests: Sequence[tuple[list[int], Any]], core: LockstepCore
            ) -> list[list[int]]:
        offset = next(self._calls) << CALL_BITS  # pair ids stay unique across calls
        spec = rule_spec(core.rules.rule)
        with tempfile.TemporaryDirectory(prefix="dasd-lockstep-") as folder:
            trace = str(Path(folder) / "steps.jsonl")
            params = [self.params(temperature=0.0, max_tokens=p.max_tokens, extra_args={
                EXTRA_KEY: {**p.extra_args[EXTRA_KEY], "pair": offset + _pair(p), "rule": spec,
                            "key": core.rules.keys[_pair(p)], "trace": trace}})
                for _, p in requests]
            outputs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids, _ in requests],
                                        params, use_tqdm=False)
            records: dict[int, list[StepRecord]] = {}
            if Path(trace).exists():
                for line in Path(trace).read_text(encoding="utf-8").splitlines():
                    row = json.loads(line)
                    records.setdefault(row.pop("pair") - offset, []).append(StepRecord(**row))
        for pair, steps in records.items():
            for record in steps:
                core.sink(pair, record)
        return [self._ids(output, records.get(_pair(p), []))
                for output, (_, p) in zip(outputs, requests, strict=True)]

    def _ids(self, output: Any, records: list[StepRecord]) -> list[int]:
        """A request's tokens, its stop token included (vLLM leaves it out of token_ids when
        it stopped on it)."""
        completion = output.outputs[0]
        ids = list(completion.token_ids)
        stopped = completion.finish_reason == "stop" and (not ids or ids[-1] not in self.eos)
        if stopped and len(records) == len(ids) + 1 and records[-1].token in self.eos:
            ids.append(records[-1].token)
        return ids


def kv_cache_tokens(llm: Any) -> int | None:
    """How many tokens the engine's KV cache holds (blocks x block size), or None where
    this vLLM does not say."""
    try:
        cache = llm.llm_engine.vllm_config.cache_config
        return int(cache.num_gpu_blocks) * int(cache.block_size)
    except (AttributeError, TypeError):
        return None


def pairs_per_call(llm: Any, ref_prompts: Sequence[Sequence[int]],
                   base_prompts: Sequence[Sequence[int]], max_new_tokens: int) -> int | None:
    """The most pairs one call may hold so that all of them fit the KV cache at full
    length (a preemption splits a pair, which is then decoded again): None, all at once,
    where the cache's size is unknown."""
    capacity = kv_cache_tokens(llm)
    if capacity is None or not ref_prompts:
        return None
    need = max(len(r) + len(b) + 2 * max_new_tokens
               for r, b in zip(ref_prompts, base_prompts, strict=True))
    return max(1, capacity // need)


def _pair(params: Any) -> int:
    return int(params.extra_args[EXTRA_KEY]["pair"])
