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

from dasd.config import STAGE, DecodeStageConfig, settings_dict, settings_flags
from dasd.decoding.draft_verify import check_rule, decode_pairs_draft_verify
from dasd.decoding.engine import TokenTrace, decode_batches, decode_pairs
from dasd.decoding.rules import RULES, build_rule, rule_settings
from dasd.decoding.vllm_model import VLLMSettings, decode_pairs_on_vllm, served_model
from dasd.distributed import ShardPlan
from dasd.errors import DasdError
from dasd.models import eos_token_ids, load_model, prompt_limit
from dasd.outputs import RowsOutput
from dasd.progress import progress_bar
from dasd.records import check_writable, sidecar
from dasd.scoring import AnswerCheck
from dasd.stats import sample_id, summarize
from dasd.tasks import Example, select_split
from dasd.tasks.base import decode_and_check
from dasd.tasks.prompts import encode, fit_context, render_prompts
from dasd.tasks.thinking import opens_thinking

log = logging.getLogger(__name__)
ENGINES = ("step", "draft-verify", "vllm")

@dataclass
class GenerateConfig(DecodeStageConfig):
    split: str = field(default="train", metadata={"help": "data split to generate on"})
    method: str = field(default="dasd", metadata={
        "help": f"decoding method: {', '.join(RULES)}"})
    settings: dict = field(default_factory=dict, metadata={
        "help": "the method's own settings, e.g. '{top_k: 9, tau: 0.25}' for dasd; each is "
                "also a flag of its own (--top-k 9)"})
    engine: Literal["step", "draft-verify", "vllm"] = field(default="step", metadata={
        "help": "step: both contexts advance one token per forward; draft-verify: the "
                "reference drafts a chunk, the base scores it in one pass (same tokens; "
                "dasd/sd/base only); vllm: served by vLLM (GPU, installed in its own "
                "environment), by draft-verify or in lockstep (vllm.path)", "effect": "none"})
    chunk_size: int | None = field(default=None, metadata={
        "help": "draft-verify, vllm: tokens per draft (default: adapts to the acceptance "
                "rate)", "effect": "none"})
    vllm: VLLMSettings = field(default_factory=VLLMSettings, metadata={
        "help": "engine vllm: its memory and length settings", "effect": "none"})
    samples: int = field(default=1, metadata={
        "help": "generations per problem (for a sampling method, e.g. dasd-sample); sample "
                "1 keeps the problem's id, sample k >= 2 is written as '<id>#s<k>'",
        "effect": STAGE, "omit_default": True})
    sample_seed: int | None = field(default=None, metadata={
        "help": "seed of a sampling method's draws (dasd-sample, hint); default: `seed`, "
                "which also draws the problems", "omit_default": True})
    high_ppl_threshold: float = field(default=2.5, metadata={
        "help": "a token is high-PPL when exp(-log p_base) exceeds this (paper: 2.5)",
        "effect": STAGE})
    out: str | None = field(default=None, metadata={
        "help": "output JSONL (default: runs/<task>/<method>.jsonl)", "effect": "none"})

    @classmethod
    def extra_keys(cls) -> dict[str, str]:
        """Every decoding rule's settings may be given flat (`top_k: 9`, `--top-k 9`)."""
        return dict.fromkeys(settings_flags(RULES), "settings")

    @classmethod
    def extra_key_help(cls) -> dict[str, tuple[str, Any]]:
        return settings_flags(RULES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.high_ppl_threshold <= 1:
            raise DasdError(f"high_ppl_threshold must be > 1; got {self.high_ppl_threshold}")
        if self.out is None:
            self.out = f"runs/{self.task}/{self.method}.jsonl"
        rule = self.rule()  # validates the method's settings now
        self.settings = settings_dict(rule)
        if self.engine not in ENGINES:
            raise DasdError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.engine == "draft-verify" or (self.engine == "vllm"
                                             and self.vllm.path == "draft-verify"):
            check_rule(rule)
        if not isinstance(self.samples, int) or self.samples < 1:
            raise DasdError(f"samples must be an integer >= 1; got {self.samples!r}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise DasdError(f"chunk_size must be >= 1 (or unset: adaptive); got {self.chunk_size}")

    def rule(self):
        """A fresh rule object of the method with these settings (rules may hold state)."""
        seed = self.seed if self.sample_seed is None else self.sample_seed
        return build_rule(self.method, seed=seed, **self.settings)

    def decoder(self) -> Callable[..., list[TokenTrace]]:
        """The engine's decode function (`decode_pairs` signature)."""
        if self.engine == "step":
            return decode_pairs
        if self.engine == "vllm":
            return functools.partial(decode_pairs_on_vllm, chunk_size=self.chunk_size)
        return functools.partial(decode_pairs_draft_verify, chunk_size=self.chunk_size)


def with_samples(examples: list[Example], samples: int) -> list[Example]:
    """Every problem `samples` times, sample by sample: first all problems' sample 1 (their
    own ids, so these rows are exactly a single-sample run's and a larger `samples`
    extends a file like a larger limit), then all problems' sample 2 (`<id>#s2`), ...
    A sampling rule seeds each row by its id, so the samples differ."""
    return [dataclasses.replace(e, id=sample_id(e.id, k)) if k > 1 else e
            for k in range(1, samples + 1) for e in examples]


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
    the shares into `out` (`dasd.outputs`); other ranks return their part's summary.
    """
    out = Path(config.out)
    check_writable(out)
    rule = config.rule()
    selection = select_split(config)
    task, template, examples = selection.task, selection.template, selection.examples
    examples = with_samples(examples, config.samples)
    plan = ShardPlan.from_env()
    if config.engine == "vllm":
        model, tokenizer = served_model(config, model, tokenizer, rule=rule)
    elif model is None:
        model, tokenizer = load_model(config.model, config.dtype, plan.device(config.device))
    examples, skipped = _fitting(config, template, examples, model, tokenizer)
    output = RowsOutput(config, out, examples, plan)
    tokens, seconds = _decode_missing(config, task, template, output, rule, model, tokenizer)
    rows, path = output.finish()
    summary = summarize(rows, config.high_ppl_threshold)
    summary.update(method=config.method, settings=rule_settings(rule), output=str(path),
                   problems=selection.record(),
                   new_tokens=tokens, decode_seconds=seconds,
                   tokens_per_second=tokens / seconds if seconds else None,
                   skipped_long_prompts=skipped)
    if path == out:
        sidecar(out, "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _fitting(config: GenerateConfig, template, examples: list[Example], model,
             tokenizer) -> tuple[list[Example], list[str]]:
    """The examples whose longer context fits the model beside `max_new_tokens`."""
    lengths = [max(len(encode(tokenizer, text)) for text in
                   render_prompts(tokenizer, template, e, config))
               for e in examples]
    kept, skipped = fit_context(examples, lengths, prompt_limit(model, config.max_new_tokens),
                                config.skip_long_prompts, "prompt (reference or base context)")
    return kept, skipped


def _decode_missing(config, task, template, output: RowsOutput, rule, model, tokenizer
                    ) -> tuple[int, float]:
    """Decode the examples the output has no row for, appending them batch by batch in
    input order (the step engine refills a batch's rows from the next batches as its
    examples end)."""
    eos = eos_token_ids(model, tokenizer)
    settings = rule_settings(rule)
    todo = output.open(config.batch_size)
    pending = [e for batch in todo for e in batch]
    texts = [render_prompts(tokenizer, template, e, config) for e in pending]
    ids = [(encode(tokenizer, base), encode(tokenizer, ref)) for base, ref in texts]
    total_tokens, start, first = 0, time.perf_counter(), 0
    with progress_bar(f"{output.out.stem} on {config.task}/{config.split}",  # as a run names it
                      total=len(pending), initial=output.finished) as bar:
        decoded = decode_batches(
            config.decoder(), [len(batch) for batch in todo], model, [r for _, r in ids],
            [b for b, _ in ids], rule, eos, config.max_new_tokens, tokenizer.pad_token_id,
            on_step=bar.add_tokens, keys=[e.id for e in pending], decode=tokenizer.decode)
        for batch, traces in zip(todo, decoded, strict=True):
            rows = slice(first, first + len(batch))
            first += len(batch)
            responses, checks = decode_and_check(task, tokenizer, [t.token_ids for t in traces],
                                                 batch, opens_thinking(texts[0][0]))
            output.append([make_row(config, *row, settings) for row in zip(
                batch, texts[rows], ids[rows], traces, responses, checks, strict=True)])
            total_tokens += sum(len(t.token_ids) for t in traces)
            bar.advance(len(batch))
    return total_tokens, time.perf_counter() - start
