"""Generated rows -> a pre-tokenized SFT dataset of the exact token ids that were decoded.

Nothing is re-tokenised: `input_ids = prompt_ids + completion_ids`, so the model is trained
on the very tokens it (or DASD) chose, including the final EOS. Which tokens count in the
loss is carried by TRL's `completion_mask` column: 0 on every prompt token, then the row's
optional `loss_mask` (1 = train on this completion token), or all ones. SFTTrainer turns
it into `labels` (-100 where the mask is 0) when it prepares the dataset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dasd.errors import DasdError
from dasd.records import read_jsonl_lines, row_name
from dasd.training.filters import REJECT_REASONS, RowFilter, apply_filter

REQUIRED_KEYS = ("prompt_ids", "completion_ids")

# Why a row was left out, in the words of the setting responsible (for summaries and errors).
SKIP_REASONS = {
    **REJECT_REASONS,
    "empty_completion": "with an empty completion",
    "no_loss_tokens": "with no loss tokens left (loss_mask all 0, or prompt >= max_length)",
}


@dataclass
class RowStats:
    """What happened to the rows read: how many were used, and why the others were not."""

    read: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    replaced: Counter = field(default_factory=Counter)  # rejected rows trained as references
    truncated: int = 0  # used rows cut to max_length
    tokens: int = 0  # tokens per epoch (prompt + completion, after truncation)
    loss_tokens: int = 0  # tokens per epoch that carry a label

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "used": self.used, "skipped": dict(self.skipped),
                "replaced_by_reference": dict(self.replaced),
                "truncated": self.truncated, "tokens_per_epoch": self.tokens,
                "loss_tokens_per_epoch": self.loss_tokens}

    def explain(self) -> str:
        """'18 not correct (only_correct=true), 2 length-capped (...)'."""
        parts = [f"{n} {SKIP_REASONS[reason]}" for reason, n in self.skipped.items() if n]
        parts += [f"{n} {SKIP_REASONS[reason]} replaced by their reference"
                  for reason, n in self.replaced.items() if n]
        return ", ".join(parts) or "none dropped"


def read_generated_rows(paths: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """(path, row) for every row of every file, in order."""
    return [(f"{path}:{line}", row) for path in paths for line, row in read_jsonl_lines(path)]


def completion_mask(row: dict[str, Any], source: str) -> list[int]:
    """The row's loss mask over its completion tokens (all ones when it has none)."""
    n = len(row["completion_ids"])
    mask = row.get("loss_mask")
    if mask is None:
        return [1] * n
    if len(mask) != n or any(bit not in (0, 1) for bit in mask):
        raise DasdError(f"{row_name(row, source)}: loss_mask must hold one 0/1 per "
                        f"completion token ({n}), got {len(mask)} values; regenerate the mask")
    return [int(bit) for bit in mask]


def to_example(row: dict[str, Any], source: str, max_length: int) -> dict[str, list[int]]:
    """One pre-tokenized example, cut to `max_length` tokens from the start (as TRL would)."""
    prompt, completion = list(row["prompt_ids"]), list(row["completion_ids"])
    ids = (prompt + completion)[:max_length]
    mask = ([0] * len(prompt) + completion_mask(row, source))[:max_length]
    return {"input_ids": ids, "completion_mask": mask}


def loss_token_count(mask: list[int]) -> int:
    """Tokens that are predicted and trained: position 0 has no context, so it never counts."""
    return sum(mask[1:])


Rows = list[tuple[str, dict[str, Any]]]


def check_row_keys(rows: Rows) -> None:
    for source, row in rows:
        missing = [key for key in REQUIRED_KEYS if key not in row]
        if missing:
            raise DasdError(f"{row_name(row, source)} lacks {', '.join(missing)}: "
                            "train on rows written by `dasd generate`")


def build_examples(rows: Rows, row_filter: RowFilter, max_length: int,
                   to_reference: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                   transform: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                   ) -> tuple[list[dict[str, list[int]]], RowStats]:
    """Filter rows (replacing rejected ones by their reference when the filter says so),
    apply `transform` to the selected rows (e.g. Mask-PPL's loss masks), and turn them
    into examples; count what was dropped or replaced, and why."""
    check_row_keys(rows)
    stats = RowStats(read=len(rows))
    selected, stats.skipped, stats.replaced = apply_filter(rows, row_filter, to_reference)
    if transform is not None and selected:
        sources = [source for source, _ in selected]
        selected = list(zip(sources, transform([row for _, row in selected]), strict=True))
    examples = []
    for source, row in selected:
        example = to_example(row, source, max_length) if row["completion_ids"] else None
        if example is None or loss_token_count(example["completion_mask"]) == 0:
            stats.skipped["empty_completion" if example is None else "no_loss_tokens"] += 1
            continue
        stats.used += 1
        stats.truncated += len(row["prompt_ids"]) + len(row["completion_ids"]) > max_length
        stats.tokens += len(example["input_ids"])
        stats.loss_tokens += loss_token_count(example["completion_mask"])
        examples.append(example)
    return examples, stats


def build_dataset(paths: Iterable[str | Path], only_correct: bool = True,
                  drop_length_capped: bool = False, max_length: int = 1024, *,
                  row_filter: RowFilter | None = None,
                  to_reference: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                  transform: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None):
    """(datasets.Dataset with `input_ids` and `completion_mask`, RowStats).

    `row_filter` replaces the `only_correct` / `drop_length_capped` shorthands when given.
    Raises DasdError when no row survives, naming how many each filter dropped.
    """
    from datasets import Dataset

    paths = [str(p) for p in paths]
    row_filter = row_filter or RowFilter(only_correct, drop_length_capped)
    examples, stats = build_examples(read_generated_rows(paths), row_filter, max_length,
                                     to_reference, transform)
    _require_examples(examples, stats, paths)
    columns = {key: [e[key] for e in examples] for key in ("input_ids", "completion_mask")}
    return Dataset.from_dict(columns), stats


def check_rows_left(paths: Iterable[str | Path], row_filter: RowFilter, max_length: int) -> None:
    """Raise the "no usable training rows" error now if the filter alone leaves none (a
    quick check before a model is loaded; offline masks can still empty rows later)."""
    paths = [str(p) for p in paths]
    examples, stats = build_examples(read_generated_rows(paths), row_filter, max_length)
    _require_examples(examples, stats, paths)


def _require_examples(examples: list, stats: RowStats, paths: list[str]) -> None:
    if not examples:
        raise DasdError(f"no usable training rows in {', '.join(paths)}: {stats.read} read, "
                        f"{stats.explain()}; loosen those settings or generate more rows")
