"""`dasd evaluate`: accuracy of a model (optionally with a LoRA adapter) on a task split.

Each problem's base prompt (the question only, no reference) is answered by greedy
decoding with `model.generate` in fixed batches; the answer goes through the task's own
checker (`task.check`), the same path that filters generated data. Writes one JSON line
per problem (flushed per batch; rerunning resumes), a resolved config
`<out>.config.yaml` and a summary `<out>.summary.json` beside the output.

With `samples` n > 1 (or `temperature` > 0) each problem gets n seeded samples instead:
the summary then reports Avg@n (mean accuracy over the samples, what the on-policy papers
report; also the `accuracy`), pass@k (Chen et al. 2021's unbiased estimator, k <= n) and
Maj@n (majority vote: the answer most samples extracted, as contest evaluations of
reasoning models report it), overall and per level; each row keeps every sample under
`samples`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dasd.config import STAGE, DecodeStageConfig
from dasd.decoding.plain import generate_batch, generate_greedy
from dasd.decoding.vllm_model import VLLMModel, VLLMSettings, served_model
from dasd.errors import DasdError
from dasd.models import eos_token_ids, load_model, prompt_limit
from dasd.outputs import RowsOutput
from dasd.progress import progress_bar
from dasd.records import check_writable, sidecar
from dasd.scoring import AnswerCheck
from dasd.tasks import Example, Task, select_split
from dasd.tasks.base import decode_and_check
from dasd.tasks.prompts import encode, fit_context, render_prompts
from dasd.tasks.thinking import answer_part, opens_thinking

log = logging.getLogger(__name__)


@dataclass
class EvalConfig(DecodeStageConfig):
    split: str = field(default="test", metadata={"help": "data split to evaluate on"})
    adapter: str | None = field(default=None, metadata={
        "help": "directory of a PEFT LoRA adapter saved by `dasd train` (merged before decoding)"})
    out: str | None = field(default=None, metadata={
        "help": "output JSONL (default: runs/<task>/eval-<adapter dir name, or 'base'>.jsonl)",
        "effect": "none"})
    samples: int = field(default=1, metadata={
        "help": "answers per problem, n; > 1 samples them and reports Avg@n and pass@k "
                "(1 with temperature 0: greedy accuracy)"})
    temperature: float = field(default=0.0, metadata={
        "help": "sampling temperature; 0 = greedy (needs samples 1)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling, in (0, 1]"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling, 0 = off"})
    pass_k: int | None = field(default=None, metadata={
        "help": "k of pass@k, 1 <= k <= samples (default: samples)", "effect": STAGE})
    sample_seed: int = field(default=0, metadata={
        "help": "seed of the sampled answers (`seed` chooses the arith problems)"})
    backend: Literal["transformers", "vllm"] = field(default="transformers", metadata={
        "help": "transformers: `model.generate`, the adapter merged in; vllm: vLLM (GPU, "
                "installed in its own environment), the adapter applied as a LoRA request",
        "omit_default": True})
    vllm: VLLMSettings = field(default_factory=VLLMSettings, metadata={
        "help": "backend vllm: its memory and length settings", "effect": "none"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapter is not None and not str(self.adapter).strip():
            raise DasdError("adapter is empty: give an adapter directory or leave it unset")
        self._check_sampling()
        if self.out is None:
            name = Path(self.adapter).name if self.adapter else "base"
            self.out = f"runs/{self.task}/eval-{name}.jsonl"

    def _check_sampling(self) -> None:
        if self.samples < 1:
            raise DasdError(f"samples must be >= 1; got {self.samples}")
        if self.temperature < 0:
            raise DasdError(f"temperature must be >= 0 (0 = greedy); got {self.temperature}")
        if self.temperature == 0 and self.samples > 1:
            raise DasdError(f"temperature 0 is greedy, so the {self.samples} samples would be "
                            "identical: set --temperature (e.g. 0.6) or --samples 1")
        if not 0 < self.top_p <= 1:
            raise DasdError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise DasdError(f"top_k must be >= 0 (0 = off); got {self.top_k}")
        # pass_k stays None until used (`k`), so a section whose `samples` changes later
        # (a run's eval section, a dotted override) gets pass@samples, not a stale k
        if self.pass_k is not None and not 1 <= self.pass_k <= self.samples:
            raise DasdError(f"pass_k must be in [1, samples={self.samples}]; got {self.pass_k}")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    @property
    def k(self) -> int:
        """The k of pass@k: `pass_k`, or every sample."""
        return self.pass_k if self.pass_k is not None else self.samples


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): the chance that k of the n answers, drawn
    without replacement, include one of the c correct ones: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise DasdError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def check_adapter_dir(path: str | Path) -> Path:
    """Return `path` if it holds a PEFT adapter, else raise a one-line DasdError.

    Checked when evaluation starts, not when the config is built, so that a chained
    `dasd run` can name the adapter that its training stage has yet to write.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DasdError(f"adapter directory not found: {path}; give the output directory of "
                        "`dasd train` or leave --adapter unset to evaluate the base model")
    if not (path / "adapter_config.json").is_file():
        raise DasdError(f"{path} has no adapter_config.json, so it is not a PEFT adapter: give "
                        "the directory where training called save_pretrained")
    return path


def apply_adapter(model, adapter: str | Path):
    """Load a LoRA adapter onto `model` and merge it in (modifies `model`'s weights in place).

    Merging removes the adapter's extra matmuls, so decoding runs at base-model speed.
    """
    from peft import PeftModel

    path = check_adapter_dir(adapter)
    if isinstance(model, VLLMModel):
        return model.with_adapter(path)
    device = model.device
    try:
        merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as err:  # shape mismatch, wrong adapter type
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DasdError(f"adapter {path} does not fit this model ({first[:200]}): use the "
                        "base model it was trained on") from err
    return merged.to(device).eval()


def score_answers(task: Task, examples: list[Example], answers: list[tuple[list[int], str]],
                  tokenizer, open_block: bool = False) -> list[dict[str, Any]]:
    """Each answer (token ids, finish reason) of the matching example through the task's
    checker: response text, extracted answer, verdict (and other checkers' verdicts:
    `checks`, e.g. math-verify's for MATH). `open_block`: the prompts opened a thinking
    block, so a response that never closes it has no answer."""
    responses, checks = decode_and_check(task, tokenizer, [ids for ids, _ in answers], examples,
                                         open_block)
    others = [task.other_checks(answer_part(response, open_block), example)
              for response, example in zip(responses, examples, strict=True)]
    return [score(response, check, ids, reason, other) for response, check, (ids, reason), other
            in zip(responses, checks, answers, others, strict=True)]


def score(response: str, check: AnswerCheck, token_ids: list[int], finish_reason: str,
          others: dict[str, AnswerCheck] | None = None) -> dict[str, Any]:
    extra = {"outcome": check.outcome} if check.outcome is not None else {}
    if others:
        extra["checks"] = {name: {"extracted": other.extracted, "correct": other.correct}
                           for name, other in others.items()}
    return {"response": response, "extracted_answer": check.extracted,
            "answer_how": check.how, "correct": check.correct, **extra,
            "finish_reason": finish_reason, "n_tokens": len(token_ids)}


def make_row(config: EvalConfig, example: Example, prompt: str, scored: dict[str, Any]
             ) -> dict[str, Any]:
    """An eval row from one `score`d answer."""
    return {
        "id": example.id, "task": config.task, "split": config.split, "level": example.level,
        "prompt": prompt, "response": scored["response"],
        "extracted_answer": scored["extracted_answer"], "answer_how": scored["answer_how"],
        "gold_answer": example.answer, "correct": scored["correct"],
        **({"outcome": scored["outcome"]} if "outcome" in scored else {}),
        **({"checks": scored["checks"]} if "checks" in scored else {}),
        "finish_reason": scored["finish_reason"], "n_tokens": scored["n_tokens"],
    }


def make_sampled_row(config: EvalConfig, example: Example, prompt: str,
                     samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of the first sample (same fields as greedy), plus every sample's verdict."""
    row = make_row(config, example, prompt, samples[0])
    row["samples"] = samples
    row["n_correct"] = sum(sample["correct"] for sample in samples)
    return row


def _accuracy(rows: list[dict[str, Any]], pass_k: int | None) -> dict[str, Any]:
    """n, correct and accuracy; for sampled rows accuracy is Avg@n, with pass@k beside it."""
    n = len(rows)
    if not any("samples" in row for row in rows):
        correct = sum(row["correct"] for row in rows)
        return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0}
    counts = [(len(row["samples"]), row["n_correct"]) for row in rows]
    k = pass_k or min(m for m, _ in counts)
    avg = sum(c / m for m, c in counts) / n
    return {"n": n, "correct": sum(c for _, c in counts), "accuracy": avg, "avg@k": avg,
            "pass@k": sum(pass_at_k(m, c, k) for m, c in counts) / n,
            "maj@k": sum(majority_correct(row["samples"]) for row in rows) / n}


def majority_correct(samples: list[dict[str, Any]]) -> bool:
    """Maj@n of one problem: whether the answer most of its samples extracted is correct
    (answers compared as extracted; samples with none do not vote; a tie goes to the
    answer that came first)."""
    answers = [s.get("extracted_answer") for s in samples]
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(s for s, a in zip(samples, answers, strict=True) if votes.get(a) == top)
    return bool(winner["correct"])


def summarize_eval(rows: list[dict[str, Any]], pass_k: int | None = None) -> dict[str, Any]:
    """Accuracy overall and per level (with counts), response lengths, capped responses.

    Rows with `samples` add Avg@n (= `accuracy`) and pass@k (`pass_k`, default n)."""
    by_level: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_level[str(row["level"]) if row["level"] is not None else "none"].append(row)
    n = len(rows)
    tokens = sum(row["n_tokens"] for row in rows)
    levels = sorted(by_level, key=lambda k: (k == "none", int(k) if k != "none" else 0))
    return {
        **_accuracy(rows, pass_k),
        "per_level": {k: _accuracy(by_level[k], pass_k) for k in levels},
        "mean_response_tokens": tokens / n if n else 0.0,
        "length_capped": sum(row["finish_reason"] == "length" for row in rows),
        **_outcomes(rows),
        **_other_checks(rows, {k: by_level[k] for k in levels}),
    }


def _other_checks(rows: list[dict[str, Any]], by_level: dict[str, list[dict[str, Any]]]
                  ) -> dict[str, Any]:
    """Accuracy by each other checker (`checks` of the rows: math-verify alone for MATH),
    overall and per level; Avg@n for sampled rows. Left out unless every answer has it."""
    answers = [s for row in rows for s in row.get("samples", [row])]
    names = set.intersection(*(set(s.get("checks", {})) for s in answers)) if answers else set()

    def accuracy(group: list[dict[str, Any]], name: str) -> float:
        shares = [sum(s["checks"][name]["correct"] for s in row.get("samples", [row]))
                  / len(row.get("samples", [row])) for row in group]
        return sum(shares) / len(shares)

    return {"other_checks": {name: {
        "accuracy": accuracy(rows, name),
        "per_level": {level: accuracy(group, name) for level, group in by_level.items()}}
        for name in sorted(names)}} if names else {}


def _outcomes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many answers ended each way, where the checker says (code: the sandbox status)."""
    found = [s.get("outcome") for row in rows for s in row.get("samples", [row])]
    counts = Counter(o for o in found if o is not None)
    return {"outcomes": dict(sorted(counts.items()))} if counts else {}


def evaluate(config: EvalConfig, model=None, tokenizer=None) -> dict[str, Any]:
    """Accuracy of `config.model` (+ adapter) on a task split, greedy or sampled (Avg@n,
    pass@k); returns the summary.

    A given `model`/`tokenizer` is used instead of loading `config.model` (tests, or a
    caller that already holds it); with `config.adapter` set it is merged into that model.
    """
    out = Path(config.out)
    check_writable(out)
    if config.adapter is not None:
        check_adapter_dir(config.adapter)
    selection = select_split(config, evaluation=True)
    task, template, examples = selection.task, selection.template, selection.examples
    if config.backend == "vllm":
        model, tokenizer = served_model(config, model, tokenizer, lora_for=config.adapter)
    elif model is None:
        model, tokenizer = load_model(config.model, config.dtype, config.device)
    if config.adapter is not None:
        model = apply_adapter(model, config.adapter)
    examples, skipped = _fitting(config, template, examples, model, tokenizer)
    output = RowsOutput(config, out, examples)
    tokens, seconds = _decode_missing(config, task, template, output, model, tokenizer)
    rows, _ = output.finish()
    summary = {"task": config.task, "split": config.split, "model": config.model,
               "adapter": config.adapter, "problems": selection.record(),
               **_sampling_settings(config),
               **summarize_eval(rows, config.k if config.sampling else None),
               "new_tokens": tokens,
               "seconds": seconds, "tokens_per_second": tokens / seconds if seconds else None,
               "output": str(out), "skipped_long_prompts": skipped}
    sidecar(out, "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _fitting(config: EvalConfig, template, examples: list[Example], model,
             tokenizer) -> tuple[list[Example], list[str]]:
    """The examples whose question-only prompt fits the model beside `max_new_tokens`."""
    lengths = [len(encode(tokenizer, render_prompts(tokenizer, template, e, config)[0]))
               for e in examples]
    kept, skipped = fit_context(examples, lengths, prompt_limit(model, config.max_new_tokens),
                                config.skip_long_prompts, "prompt")
    return kept, skipped


def _decode_missing(config: EvalConfig, task: Task, template, output: RowsOutput, model,
                    tokenizer) -> tuple[int, float]:
    """Answer the examples the output has no row for, batch by batch, appending each."""
    eos = eos_token_ids(model, tokenizer)
    todo = output.open(config.batch_size)
    remaining = sum(map(len, todo))
    label = f"eval {output.out.stem} on {config.task}/{config.split}"  # as runs name it
    position = {e.id: i for i, e in enumerate(output.examples)}
    total_tokens, start = 0, time.perf_counter()
    with progress_bar(label, total=remaining, initial=output.finished) as bar:
        for batch in todo:
            prompts = [render_prompts(tokenizer, template, e, config)[0] for e in batch]
            ids = [encode(tokenizer, p) for p in prompts]
            open_block = opens_thinking(prompts[0])
            if config.sampling:
                answers = sample_answers(config, model, tokenizer, ids, eos,
                                         seed=config.sample_seed + position[batch[0].id])
                n = config.samples
                scored = score_answers(task, [e for e in batch for _ in range(n)], answers,
                                       tokenizer, open_block)
                rows = [make_sampled_row(config, e, p, scored[i * n:(i + 1) * n])
                        for i, (e, p) in enumerate(zip(batch, prompts, strict=True))]
            else:
                results = generate_greedy(model, tokenizer, ids, config.max_new_tokens, eos)
                scored = score_answers(task, batch, results, tokenizer, open_block)
                rows = [make_row(config, e, p, answer) for e, p, answer in
                        zip(batch, prompts, scored, strict=True)]
            output.append(rows)
            batch_tokens = sum(sum(a["n_tokens"] for a in row.get("samples", [row]))
                               for row in rows)
            total_tokens += batch_tokens
            bar.add_tokens(batch_tokens)
            bar.advance(len(batch))
    return total_tokens, time.perf_counter() - start


def sample_answers(config: EvalConfig, model, tokenizer, prompts_ids: list[list[int]],
                   eos_ids: list[int], seed: int) -> list[tuple[list[int], str]]:
    """`config.samples` seeded samples per prompt, prompt-major (prompt 0's first)."""
    return generate_batch(model, tokenizer, prompts_ids, config.max_new_tokens, eos_ids,
                          do_sample=True, temperature=config.temperature, top_p=config.top_p,
                          top_k=config.top_k, num_return_sequences=config.samples,
                          seed=seed)


def _sampling_settings(config: EvalConfig) -> dict[str, Any]:
    if not config.sampling:
        return {}
    return {"samples": config.samples, "pass_k": config.k,
            "temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
            "sample_seed": config.sample_seed}
