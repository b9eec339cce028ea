"""Mask-PPL (Wu et al., NeurIPS 2025, "Mitigating Forgetting in LLM Fine-Tuning via
Low-Perplexity Token Learning"; code: appier-research/robust-llm-finetunes).

Each training token's perplexity under the **frozen base model**, teacher-forced after the
question-only prompt, is exp(-log p(token | prompt, earlier tokens)). Tokens with
perplexity above the threshold (paper: 2.5, i.e. p < 0.4) leave the loss: the row gets a
`loss_mask` with 0 there, which `dasd.training.data` turns into label -100. The loop stays
TRL's. Works on any row file: generated rows or the original references
(`dasd.training.references`).

Two sources of log p:
- "recorded": a generated row already holds `tokens.p_base`, the probability the model
  that decoded it gave each token under the *base* context, i.e. the question-only prompt
  (`prompt_ids`) followed by the tokens chosen so far. That is exactly Mask-PPL's quantity
  when the decoding model is the base model to be trained (the DASD setting), so no
  forward pass is needed. `generate` stores p_base to 6 significant digits, which can move
  a token lying within ~1e-6 of the threshold to the other side; nothing else differs.
- "recompute": one teacher-forced forward of `prompt_ids + completion_ids` through the
  given model. Needed for rows without `tokens.p_base` (references), or when the rows were
  decoded by another model than the one to be trained.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from dasd.decoding.engine import left_pad
from dasd.errors import DasdError
from dasd.records import append_rows, read_jsonl, sidecar

log = logging.getLogger(__name__)

SOURCES = ("auto", "recorded", "recompute")
DEFAULT_THRESHOLD = 2.5  # paper (STM): tokens with perplexity > 2.5 get label -100


def ppl_mask(logprobs: Sequence[float] | torch.Tensor,
             threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """1 (train) where the token's perplexity exp(-log p) is <= threshold, 0 (drop) above.

    The comparison is done in log space, -log p > log(threshold), as in
    `dasd.stats.high_ppl_mask`, so a token at exactly the threshold (p = 0.4 for
    2.5) is kept and never flips on the rounding of exp. A NaN log-probability is dropped.
    """
    if not threshold > 1:
        raise DasdError(f"Mask-PPL threshold must be > 1 (a perplexity); got {threshold}")
    limit = math.log(threshold)
    values = logprobs.tolist() if isinstance(logprobs, torch.Tensor) else logprobs
    return [1 if -float(lp) <= limit else 0 for lp in values]


@torch.inference_mode()
def teacher_forced_logprobs(model, prompt_ids_batch: Sequence[Sequence[int]],
                            completion_ids_batch: Sequence[Sequence[int]],
                            batch_size: int = 8) -> list[list[float]]:
    """log p(completion[k] | prompt, completion[:k]) for every token of every row.

    Rows are grouped by length (less padding) into batches of `batch_size`, one forward
    each; results come back in input order. An empty completion gives [].
    """
    if len(prompt_ids_batch) != len(completion_ids_batch):
        raise ValueError("prompt_ids_batch and completion_ids_batch must have the same length")
    if batch_size < 1:
        raise DasdError(f"batch_size must be >= 1; got {batch_size}")
    n = len(prompt_ids_batch)
    order = sorted(range(n), key=lambda i: len(prompt_ids_batch[i]) + len(completion_ids_batch[i]))
    results: list[list[float]] = [[] for _ in range(n)]
    for start in range(0, n, batch_size):
        chunk = order[start:start + batch_size]
        logprobs = _forward(model, [prompt_ids_batch[i] for i in chunk],
                            [completion_ids_batch[i] for i in chunk])
        for i, values in zip(chunk, logprobs, strict=True):
            results[i] = values
    return results


def _forward(model, prompts: Sequence[Sequence[int]],
             completions: Sequence[Sequence[int]]) -> list[list[float]]:
    """One left-padded forward, positions counted from each row's first real token (as the
    decoding engine does). Every row ends in the last column, so the logits predicting the
    completions are the last `max completion + 1` columns; only those are computed."""
    if any(len(p) == 0 for p in prompts):
        raise DasdError("a row has no prompt_ids: the first completion token needs a context")
    keep = max(len(c) for c in completions)
    if keep == 0:
        return [[] for _ in completions]
    device = next(model.parameters()).device
    ids, mask = left_pad([[*p, *c] for p, c in zip(prompts, completions, strict=True)], 0,
                         device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                   logits_to_keep=keep + 1).logits                     # [B, keep + 1, V]
    dtype = torch.promote_types(logits.dtype, torch.float32)
    results = []
    for row, completion in enumerate(completions):
        n = len(completion)
        if n == 0:
            results.append([])
            continue
        # column j of `logits` predicts the token in column j + 1; the completion fills
        # the last n columns, so its predictors are columns keep - n ... keep - 1.
        scores = torch.log_softmax(logits[row, keep - n:keep].to(dtype), dim=-1)
        targets = torch.tensor(list(completion), dtype=torch.long, device=device)[:, None]
        results.append(scores.gather(-1, targets).squeeze(-1).tolist())
    return results


def recorded_logprobs(row: dict[str, Any]) -> list[float]:
    """log of the row's recorded `tokens.p_base` (a p of 0 from underflow gives -inf)."""
    p_base = row["tokens"]["p_base"]
    if len(p_base) != len(row["completion_ids"]):
        raise DasdError(f"row {row.get('id')!r}: tokens.p_base has {len(p_base)} values for "
                        f"{len(row['completion_ids'])} completion tokens; use source=recompute")
    return [math.log(p) if p > 0 else -math.inf for p in p_base]


def has_recorded(row: dict[str, Any]) -> bool:
    return isinstance(row.get("tokens"), dict) and "p_base" in row["tokens"]


def resolve_source(rows: Sequence[dict[str, Any]], source: str) -> str:
    """"auto" -> "recorded" when every row holds tokens.p_base, else "recompute"."""
    if source not in SOURCES:
        raise DasdError(f"Mask-PPL source must be one of {', '.join(SOURCES)}; got {source!r}")
    if source == "auto":
        return "recorded" if rows and all(map(has_recorded, rows)) else "recompute"
    if source == "recorded":
        missing = [row.get("id") for row in rows if not has_recorded(row)]
        if missing:
            raise DasdError(f"{len(missing)} row(s) lack tokens.p_base (first: {missing[0]!r}): "
                            "use source=recompute with the base model")
    return source


def add_mask_ppl(rows: Sequence[dict[str, Any]], model=None,
                 threshold: float = DEFAULT_THRESHOLD, source: str = "auto",
                 batch_size: int = 8) -> list[dict[str, Any]]:
    """Copies of `rows` with `loss_mask` (1 train, 0 drop) and a `mask_ppl` note.

    `model` must be the frozen base model when the source resolves to "recompute". A row
    whose every token is dropped keeps its all-zero mask: training skips and counts it
    (reason `no_loss_tokens`), so the loss is visible rather than silent.
    """
    source = resolve_source(rows, source)
    if source == "recorded":
        logprobs = [recorded_logprobs(row) for row in rows]
    else:
        if model is None:
            raise DasdError("Mask-PPL must recompute perplexities (rows lack tokens.p_base): "
                            "pass the frozen base model (--model)")
        logprobs = teacher_forced_logprobs(model, [r["prompt_ids"] for r in rows],
                                           [r["completion_ids"] for r in rows], batch_size)
    masked = []
    for row, values in zip(rows, logprobs, strict=True):
        mask = ppl_mask(values, threshold)
        note = {"threshold": threshold, "source": source, "dropped": len(mask) - sum(mask)}
        masked.append({**row, "loss_mask": mask, "mask_ppl": note})
    return masked


def mask_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Tokens kept and dropped over all rows, and rows left with no loss token."""
    tokens = sum(len(r["loss_mask"]) for r in rows)
    kept = sum(sum(r["loss_mask"]) for r in rows)
    return {"rows": len(rows), "tokens": tokens, "tokens_kept": kept,
            "tokens_dropped": tokens - kept,
            "kept_percent": 100.0 * kept / tokens if tokens else 0.0,
            "dropped_percent": 100.0 * (tokens - kept) / tokens if tokens else 0.0,
            "rows_all_dropped": sum(1 for r in rows if r["loss_mask"] and not any(r["loss_mask"]))}


def mask_ppl_file(in_path: str | Path, out_path: str | Path, model_spec: str | None = None,
                  threshold: float = DEFAULT_THRESHOLD, source: str = "auto", *, model=None,
                  batch_size: int = 8, dtype: str = "auto", device: str = "auto",
                  overwrite: bool = False) -> dict[str, Any]:
    """Write `in_path`'s rows with Mask-PPL masks to `out_path`; return (and write beside it,
    `<out>.summary.json`) the token statistics.

    The base model is loaded from `model_spec` only when perplexities must be recomputed
    (or pass a loaded `model`). Rows are appended and flushed per batch.
    """
    rows = read_jsonl(in_path)
    if not rows:
        raise DasdError(f"{in_path} holds no rows: run `dasd generate` first")
    out = Path(out_path)
    if out.resolve() == Path(in_path).resolve():
        raise DasdError(f"Mask-PPL output {out} would overwrite its input: choose another out")
    if out.exists() and not overwrite:
        raise DasdError(f"{out} exists: pass overwrite to replace it or choose another out")
    source = resolve_source(rows, source)
    if source == "recompute" and model is None:
        if model_spec is None:
            raise DasdError(f"rows of {in_path} lack tokens.p_base: give the frozen base model "
                            "(--model) to recompute their perplexities")
        from dasd.models import load_model

        model, _ = load_model(model_spec, dtype, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    masked: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_size):
        batch = add_mask_ppl(rows[start:start + batch_size], model, threshold, source,
                             batch_size)
        append_rows(out, batch)
        masked.extend(batch)
    stats = {**mask_stats(masked), "threshold": threshold, "source": source,
             "input": str(in_path), "output": str(out),
             "model": model_spec if source == "recompute" else None}
    sidecar(out, "summary.json").write_text(json.dumps(stats, indent=2))
    log.info("Mask-PPL (%s, ppl > %g): %.1f%% of %d tokens dropped, %d of %d rows have none "
             "left; written to %s", source, threshold, stats["dropped_percent"],
             stats["tokens"], stats["rows_all_dropped"], stats["rows"], out)
    return stats


@dataclass
class MaskPPL:
    """`method: mask-ppl`: SFT whose loss skips the tokens the frozen base model finds
    perplexing (Wu et al., NeurIPS 2025). By default on the original references."""

    threshold: float = field(default=DEFAULT_THRESHOLD, metadata={
        "help": "drop tokens whose perplexity exp(-log p_base) exceeds this (paper: 2.5)"})
    source: Literal["auto", "recorded", "recompute"] = field(default="auto", metadata={
        "help": "p_base recorded at generation, or recomputed by a teacher-forced forward "
                "of the frozen model (auto: recorded when every row has it)"})

    def __post_init__(self) -> None:
        if not self.threshold > 1:
            raise DasdError(f"mask-ppl threshold must be > 1 (a perplexity; paper: 2.5); "
                            f"got {self.threshold}")
        if self.source not in SOURCES:
            raise DasdError(f"mask-ppl source must be one of {', '.join(SOURCES)}; "
                            f"got {self.source!r}")

    def prepare(self, rows: Sequence[dict[str, Any]], model) -> list[dict[str, Any]]:
        """The rows with their `loss_mask`, computed on the frozen model before LoRA."""
        return add_mask_ppl(rows, model, self.threshold, self.source)
