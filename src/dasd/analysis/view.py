"""`dasd show`: one generated example in the terminal, each token coloured by its DASD
category or its base-model probability (rich), with a legend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.style import Style
from rich.text import Text

from dasd.analysis.data import (
    GeneratedFile,
    find_generated,
    load_generated,
    load_tokenizer_offline,
    token_texts,
)
from dasd.analysis.plots import method_sort_key
from dasd.analysis.tokens import COLOR_BY, background, foreground, legend, token_records
from dasd.errors import DasdError


def find_example(rows: list[dict[str, Any]], example_id: str) -> dict[str, Any] | None:
    """The row with this id; a bare number also matches an id ending in that number
    (`17` -> `arith-train-00017`)."""
    example_id = str(example_id)
    for row in rows:
        if str(row.get("id")) == example_id:
            return row
    if example_id.isdigit():
        for row in rows:
            tail = str(row.get("id", "")).rsplit("-", 1)[-1]
            if tail.isdigit() and int(tail) == int(example_id):
                return row
    return None


def render_example(row: dict[str, Any], texts: list[str], color_by: str = "category") -> Text:
    """The response as rich Text, one background colour per token."""
    out = Text()
    for token in token_records(row, texts):
        bg = background(color_by, token["category"], token["p_base"])
        out.append(token["text"], style=Style(bgcolor=bg, color=foreground(bg)))
    return out


def legend_text(color_by: str) -> Text:
    out = Text("legend: ")
    for label, bg in legend(color_by):
        out.append(f" {label} ", style=Style(bgcolor=bg, color=foreground(bg)))
        out.append(" ")
    return out


def _print_example(console: Console, f: GeneratedFile, row: dict[str, Any], texts: list[str],
                   color_by: str) -> None:
    verdict = "correct" if row.get("correct") else "wrong"
    console.rule(Text(f"{f.label} | {row['id']} | level {row.get('level')} | answer "
                      f"{row.get('extracted_answer')} (gold {row.get('gold_answer')}, "
                      f"{verdict})"))
    console.print(Text("question: ", style="bold") + Text(str(row.get("question", ""))))
    console.print(Text("response:", style="bold"))
    console.print(render_example(row, texts, color_by))
    console.print(legend_text(color_by))
    console.print(Text("reference: ", style="bold") + Text(str(row.get("reference", "")),
                                                            style="dim"))


def show(path: str | Path, example_id: str, color_by: str = "category", *,
         tokenizer: Any = None, console: Console | None = None) -> None:
    """Print example `example_id` of a generated JSONL (or of every generated JSONL in a run
    folder) token by token. `tokenizer`: a tokenizer, a model spec, or None for the model
    in the config beside the file; token ids are shown when none loads offline."""
    if color_by not in COLOR_BY:
        raise DasdError(f"color_by must be one of {', '.join(COLOR_BY)}; got '{color_by}'")
    console = console or Console()
    files = sorted(load_generated(find_generated(Path(path))),
                   key=lambda f: method_sort_key(f.label))
    found = [(f, row) for f in files if (row := find_example(f.rows, example_id))]
    if not found:
        ids = [str(r.get("id")) for f in files for r in f.rows[:3]]
        raise DasdError(f"no example with id '{example_id}' in {path}; ids look like "
                        f"{', '.join(ids)}")
    for f, row in found:
        _print_example(console, f, row, token_texts(_tokenizer(f, tokenizer),
                                                    row["completion_ids"]), color_by)


def _tokenizer(f: GeneratedFile, given: Any) -> Any:
    if given is None or isinstance(given, str):
        return load_tokenizer_offline(given or f.model)
    return given
