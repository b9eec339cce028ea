"""The original references as a training set (the paper's "origin"/SFT-on-gold baseline).

Each example becomes a row in the format `dasd generate` writes, so `dasd train` and
Mask-PPL take it unchanged: the prompt is the question-only (base) prompt, the completion
the golden reference solution, tokenized as it stands plus the EOS id (the token the
trained model must learn to stop on). The rows have no `tokens` statistics (nothing was
decoded), so Mask-PPL recomputes their perplexities with the base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dasd.errors import DasdError
from dasd.records import append_rows, sidecar
from dasd.tasks import Example, load_split
from dasd.tasks.prompts import encode, render_prompts

METHOD = "reference"


def reference_completion_ids(tokenizer, reference: str) -> list[int]:
    """The reference solution's token ids as it stands, plus EOS (what the model must learn
    to stop on)."""
    if tokenizer.eos_token_id is None:
        raise DasdError("the tokenizer has no EOS token: reference rows need one to end on")
    return [*tokenizer(reference, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def replace_with_reference(row: dict[str, Any], tokenizer) -> dict[str, Any]:
    """A generated row's problem with its original reference as the completion (the
    keep-reference policy of Yang et al. 2024). Decoding statistics no longer apply, so
    `tokens` and any `loss_mask` are dropped; `replaced_method` keeps the origin."""
    if not str(row.get("reference") or "").strip():
        raise DasdError(f"row {row.get('id')!r} has no reference text to fall back on: "
                        "use rejected=drop, or rows written by `dasd generate`")
    kept = {k: v for k, v in row.items() if k not in ("tokens", "loss_mask", "mask_ppl")}
    return {**kept, "method": METHOD, "replaced_method": row.get("method"),
            "completion": row["reference"],
            "completion_ids": reference_completion_ids(tokenizer, row["reference"]),
            "finish_reason": "eos", "extracted_answer": row.get("gold_answer"),
            "answer_how": METHOD, "correct": True}


def reference_row(config: Any, example: Example, prompt: str, tokenizer) -> dict[str, Any]:
    """One row: base prompt -> golden reference + EOS, correct by definition."""
    completion_ids = reference_completion_ids(tokenizer, example.reference)
    return {
        "id": example.id, "task": config.task, "split": config.split, "level": example.level,
        "method": METHOD, "settings": {},
        "question": example.question, "reference": example.reference,
        "gold_answer": example.answer,
        "prompt": prompt, "prompt_ids": encode(tokenizer, prompt),
        "completion": example.reference,
        "completion_ids": completion_ids,
        "finish_reason": "eos",
        "extracted_answer": example.answer, "answer_how": METHOD, "correct": True,
    }


def reference_rows(config: Any, tokenizer) -> list[dict[str, Any]]:
    """Rows for the split a stage config names (`task`, `split`, `data`, `limit`, `seed`,
    `prompts`, optional `chat_template_kwargs`; e.g. a `GenerateConfig`)."""
    _, template, examples = load_split(config)
    return [reference_row(config, example,
                          render_prompts(tokenizer, template, example, config)[0], tokenizer)
            for example in examples]


def write_reference_rows(config: Any, out: str | Path, tokenizer=None,
                         overwrite: bool = False) -> dict[str, Any]:
    """Write the reference rows to `out` (JSONL) with a small `<out>.summary.json`.

    Only the tokenizer of `config.model` is loaded when none is given: no weights needed.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise DasdError(f"{out} exists: pass overwrite to replace it or choose another out")
    if tokenizer is None:
        from dasd.models import load_tokenizer

        tokenizer = load_tokenizer(config.model)
    rows = reference_rows(config, tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    append_rows(out, rows)
    tokens = sum(len(r["completion_ids"]) for r in rows)
    summary = {"method": METHOD, "samples": len(rows), "kept": len(rows), "tokens": tokens,
               "mean_tokens": tokens / len(rows), "output": str(out)}
    sidecar(out, "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
