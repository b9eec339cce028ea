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
from dasd.analysis.departures import first_departure, token_class
from dasd.analysis.frontier import SD, role
from dasd.analysis.plots import method_sort_key
from dasd.analysis.tokens import COLOR_BY, background, foreground, legend, token_records
from dasd.errors import DasdError
from dasd.stats import split_sample_id


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


def render_example(row: dict[str, Any], texts: list[str], color_by: str = "category",
                   mark: int | None = None) -> Text:
    """The response as rich Text, one background colour per token; token `mark` (an
    answer-losing departure) bold, underlined and framed by brackets."""
    out = Text()
    for i, token in enumerate(token_records(row, texts)):
        bg = background(color_by, token["category"], token["p_base"])
        style = Style(bgcolor=bg, color=foreground(bg), bold=i == mark, underline=i == mark)
        out.append(f"[{token['text']}]" if i == mark else token["text"], style=style)
    return out


def departure_in(f: GeneratedFile, row: dict[str, Any], sd: GeneratedFile | None) -> int | None:
    """Where `row` left the reference top-1, if that lost its answer: it is wrong and sd's
    sample of the same problem is right (None otherwise, and for sd and base rows)."""
    if sd is None or f is sd or row.get("correct") or row.get("method") in ("sd", "base"):
        return None
    problem = split_sample_id(row["id"])[0]
    if not any(r["id"] == problem and r.get("correct") for r in sd.rows):
        return None
    return first_departure(row)


def legend_text(color_by: str) -> Text:
    out = Text("legend: ")
    for label, bg in legend(color_by):
        out.append(f" {label} ", style=Style(bgcolor=bg, color=foreground(bg)))
        out.append(" ")
    return out


def _print_example(console: Console, f: GeneratedFile, row: dict[str, Any], texts: list[str],
                   color_by: str, mark: int | None = None) -> None:
    verdict = "correct" if row.get("correct") else "wrong"
    console.rule(Text(f"{f.label} | {row['id']} | level {row.get('level')} | answer "
                      f"{row.get('extracted_answer')} (gold {row.get('gold_answer')}, "
                      f"{verdict})"))
    console.print(Text("question: ", style="bold") + Text(str(row.get("question", ""))))
    console.print(Text("response:", style="bold"))
    console.print(render_example(row, texts, color_by, mark))
    console.print(legend_text(color_by))
    if mark is not None:
        stats = row["tokens"]
        console.print(Text(f"answer-losing departure at token {mark} [{texts[mark]}] "
                           f"({token_class(texts[mark])}; p_ref {stats['p_ref'][mark]:.4f}, "
                           f"p_base {stats['p_base'][mark]:.4f}): sd is right here, and up to "
                           "this token the two responses are the same", style="bold"))
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
    sd = next((f for f in files if role(f.rows) == SD), None)
    for f, row in found:
        _print_example(console, f, row, token_texts(_tokenizer(f, tokenizer),
                                                    row["completion_ids"]), color_by,
                       departure_in(f, row, sd))


def _tokenizer(f: GeneratedFile, given: Any) -> Any:
    if given is None or isinstance(given, str):
        return load_tokenizer_offline(given or f.model)
    return given
