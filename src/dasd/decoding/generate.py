"""`dasd generate`: turn (question, reference) pairs into responses with one decoding method.

Writes one JSON line per example (flushed per batch; rerunning resumes), a resolved config
`<out>.config.yaml` and a summary `<out>.summary.json` beside the output.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dasd.analysis.stats import summarize
from dasd.config import DecodeStageConfig
from dasd.decoding.draft_verify import check_rule, decode_pairs_draft_verify
from dasd.decoding.engine import TokenTrace, decode_pairs
from dasd.decoding.rules import RULES, build_rule, rule_settings
from dasd.decoding.sharding import ShardPlan, finish, prepare
from dasd.errors import DasdError
from dasd.models import eos_token_ids, load_model
from dasd.progress import progress_bar
from dasd.records import append_rows, pending_batches, sidecar
from dasd.tasks import Example, Task, load_split
from dasd.tasks.base import AnswerCheck
from dasd.tasks.prompts import render_prompts

log = logging.getLogger(__name__)
ENGINES = ("step", "draft-verify")

@dataclass
class GenerateConfig(DecodeStageConfig):
    split: str = field(default="train", metadata={"help": "data split to generate on"})
    method: str = field(default="dasd", metadata={
        "help": f"decoding method: {', '.join(RULES)}"})
    top_k: int = field(default=6, metadata={"help": "DASD: reference candidates K (paper: 6)"})
    tau: float = field(default=0.2, metadata={
        "help": "DASD: base-probability threshold in (0, 1] (paper: 0.2)"})
    fallback: Literal["ref", "base"] = field(default="ref", metadata={
        "help": "DASD: token when no candidate passes: reference or base top-1 (paper: ref)"})
    beta: float = field(default=3.0, metadata={
        "help": "hint: lambda = clamp(beta * H(p_ref) / log V, 0, 1) mixes in the base model; "
                "0 = plain self-distillation (Zhang et al. 2602.12222 demo: 3)"})
    temperature: float = field(default=0.3, metadata={
        "help": "hint: sampling temperature, 0 = greedy (demo: 0.3)"})
    top_p: float = field(default=0.95, metadata={
        "help": "hint: nucleus top-p in (0, 1], cut before the temperature (demo: 0.95)"})
    marker: str = field(default="\\boxed{", metadata={
        "help": "hint: once the response contains this text only the base model decodes "
                "(demo: \\boxed{; arith/gsm8k prompts end with 'The answer is'; '' = never)"})
    engine: Literal["step", "draft-verify"] = field(default="step", metadata={
        "help": "step: both contexts advance one token per forward; draft-verify: the "
                "reference drafts a chunk, the base scores it in one pass (same tokens; "
                "dasd/sd/base only)"})
    chunk_size: int | None = field(default=None, metadata={
        "help": "draft-verify: tokens per draft (default: adapts to the acceptance rate)"})
    high_ppl_threshold: float = field(default=2.5, metadata={
        "help": "a token is high-PPL when exp(-log p_base) exceeds this (paper: 2.5)"})
    out: str | None = field(default=None, metadata={
        "help": "output JSONL (default: runs/<task>/<method>.jsonl)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.high_ppl_threshold <= 1:
            raise DasdError(f"high_ppl_threshold must be > 1; got {self.high_ppl_threshold}")
        if self.out is None:
            self.out = f"runs/{self.task}/{self.method}.jsonl"
        rule = build_rule(self.method, **self.rule_kwargs())  # validates K, tau, ... now
        if self.engine not in ENGINES:
            raise DasdError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.engine == "draft-verify":
            check_rule(rule)
        if self.chunk_size is not None and self.chunk_size < 1:
            raise DasdError(f"chunk_size must be >= 1 (or unset: adaptive); got {self.chunk_size}")

    def decoder(self) -> Callable[..., list[TokenTrace]]:
        """The engine's decode function (`decode_pairs` signature)."""
        if self.engine == "step":
            return decode_pairs
        return functools.partial(decode_pairs_draft_verify, chunk_size=self.chunk_size)

    def resume_safe_keys(self) -> set[str]:
        """Rule settings the chosen method does not read (hint's beta for dasd, tau for
        sd, ...): changing them leaves the rows as they are, so a resume is allowed."""
        names = {f.name for f in dataclasses.fields(RULES[self.method])}
        return {key for key in self.rule_kwargs() if key not in names and key != "seed"}

    def rule_kwargs(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "tau": self.tau, "fallback": self.fallback,
                "beta": self.beta, "temperature": self.temperature, "top_p": self.top_p,
                "marker": self.marker, "seed": self.seed}


def encode(tokenizer, text: str) -> list[int]:
    """Chat-formatted prompts already hold their special tokens; plain ones need BOS."""
    return tokenizer(text, add_special_tokens=tokenizer.chat_template is None)["input_ids"]


def decode_and_check(task: Task, tokenizer, token_ids: list[list[int]],
                     examples: list[Example]) -> tuple[list[str], list[AnswerCheck]]:
    """The response text of each token-id list and the task's verdict on it (`check_many`:
    code tasks check several at once)."""
    responses = [tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
    return responses, task.check_many(list(zip(responses, examples, strict=True)))


def _rounded(values: list[float]) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def make_row(config: GenerateConfig, example: Example, prompts: tuple[str, str],
             prompt_ids: tuple[list[int], list[int]], trace: TokenTrace, response: str,
             check: AnswerCheck, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": example.id, "task": config.task, "split": config.split, "level": example.level,
        "method": config.method, "settings": settings,
        "question": example.question, "reference": example.reference,
        "gold_answer": example.answer,
        "prompt": prompts[0], "ref_prompt": prompts[1],
        "prompt_ids": prompt_ids[0], "ref_prompt_ids": prompt_ids[1],
        "completion": response, "completion_ids": trace.token_ids,
        "finish_reason": trace.finish_reason,
        "tokens": {
            "category": trace.categories,
            "p_base": _rounded(trace.p_base),
            "p_ref": _rounded(trace.p_ref),
            "ref_rank": trace.ref_rank,
            "base_entropy": _rounded(trace.base_entropy),
            "base_top3_ref_rank": trace.base_top3_ref_rank,
        },
        "extracted_answer": check.extracted, "answer_how": check.how, "correct": check.correct,
    }


def generate(config: GenerateConfig, model=None, tokenizer=None) -> dict[str, Any]:
    """Run one decoding method over a task split; return the summary of the whole output.

    Under `torchrun` / `accelerate launch` each process decodes its share and rank 0 merges
    the shares into `out` (`dasd.decoding.sharding`); other ranks return their part's summary.
    """
    out = Path(config.out)
    rule = build_rule(config.method, **config.rule_kwargs())
    task, template, examples = load_split(config)
    plan = ShardPlan.from_env()
    if model is None:
        model, tokenizer = load_model(config.model, config.dtype, plan.device(config.device))
    target, mine, done = prepare(plan, config, out, examples)
    tokens, seconds = _decode_missing(config, task, template, mine, done, rule, model,
                                      tokenizer, target)
    rows, output = finish(plan, config, out, examples)
    summary = summarize(rows, config.high_ppl_threshold)
    summary.update(method=config.method, settings=rule_settings(rule), output=str(output),
                   new_tokens=tokens, decode_seconds=seconds,
                   tokens_per_second=tokens / seconds if seconds else None)
    if output == out:
        sidecar(out, "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _decode_missing(config, task, template, examples, done, rule, model, tokenizer,
                    out: Path) -> tuple[int, float]:
    """Decode the examples not yet in `out`, batch by batch, appending each batch."""
    eos = eos_token_ids(model, tokenizer)
    settings = rule_settings(rule)
    todo = pending_batches(examples, done, config.batch_size)
    total_tokens, start = 0, time.perf_counter()
    with progress_bar(f"{config.method} on {config.task}/{config.split}",
                      total=sum(map(len, todo)), initial=len(examples) - sum(map(len, todo))
                      ) as bar:
        for batch in todo:
            texts = [render_prompts(tokenizer, template, e, config.chat_template_kwargs)
                     for e in batch]
            ids = [(encode(tokenizer, base), encode(tokenizer, ref)) for base, ref in texts]
            traces = config.decoder()(
                model, [r for _, r in ids], [b for b, _ in ids], rule, eos,
                config.max_new_tokens, tokenizer.pad_token_id, on_step=bar.add_tokens,
                keys=[e.id for e in batch], decode=tokenizer.decode)
            responses, checks = decode_and_check(task, tokenizer,
                                                 [t.token_ids for t in traces], batch)
            append_rows(out, [make_row(config, *row, settings) for row in zip(
                batch, texts, ids, traces, responses, checks, strict=True)])
            total_tokens += sum(len(t.token_ids) for t in traces)
            bar.advance(len(batch))
    return total_tokens, time.perf_counter() - start
