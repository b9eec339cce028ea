"""`--plan` as text: the plan that `dasd.plan` computes, printed for a reader (problems,
stages with their status and budgets, deviations from the paper, warnings)."""

from __future__ import annotations

from typing import Any


def render_plan(plan: dict[str, Any], console: Any) -> None:
    """Print a plan as text: problems, stages, budgets, deviations, warnings."""
    from rich.table import Table

    title = plan.get("name") or plan["command"]
    console.print(f"[bold]Plan of dasd {plan['command']}[/bold] {title}: {plan['model']} on "
                  f"{plan.get('task') or ', '.join(plan.get('data', []))}, seed {plan['seed']}"
                  f" -> {plan.get('out_dir') or plan.get('out')}  (nothing is loaded, decoded "
                  "or written)")
    problems = plan.get("problems", {})
    for entry in problems.get("train", []) if isinstance(problems.get("train"), list) else \
            [problems["train"]] if "train" in problems else []:
        _render_problems(console, "Training problems", entry)
    if problems.get("test"):
        _render_problems(console, "Test problems (every evaluation)", problems["test"])
    for entry in problems.get("validation") or []:
        _render_problems(console, "Validation problems: held out of the training draw, for "
                         "choosing a checkpoint", entry)
    for key, entry in (problems.get("retention") or {}).items():
        _render_problems(console, f"Retention problems: {key} (origin and every trained "
                         "model)", entry)
    table = Table(title="Stages")
    for column in ("method", "stage", "status", "problems", "max new tokens",
                   "new tokens (max)", "why"):
        table.add_column(column, justify="left" if column in ("method", "stage", "why",
                                                               "status") else "right")
    for s in plan["stages"]:
        table.add_row(s["method"], s["stage"], s["status"], _num(s.get("problems", s.get("rows"))),
                      _num(s.get("max_new_tokens")), _num(s.get("new_tokens_max")),
                      s["why"] + _training_note(s) + _checkpoint_note(s) + _teacher_note(s)
                      + (f"; engine: {s['engine']}" if s.get("engine") else ""))
    console.print(table)
    budget = plan["token_budget"]
    console.print(f"Token budget: at most {budget['new_tokens_max_to_run']:,} new tokens in the "
                  f"stages that run ({budget['new_tokens_max_all']:,} over all stages).")
    _render_rest(plan, console)


def _teacher_note(stage: dict[str, Any]) -> str:
    teachers = {"base": "the initial policy (adapter off)", "live": "the current student",
                "ema": "a moving average of the student"}
    return (f"; teacher: {stage['teacher']}, {teachers.get(stage['teacher'], '')}"
            if stage.get("teacher") else "")


def _checkpoint_note(stage: dict[str, Any]) -> str:
    return (f"; about {stage['checkpoints']} checkpoints (with the final model) on these "
            "problems" if "checkpoints" in stage else "")


def _training_note(stage: dict[str, Any]) -> str:
    if "steps_max" not in stage or "rows" not in stage:
        return ""
    rows = f"{stage['rows']} rows" if stage["rows_exact"] else f"at most {stage['rows']} rows"
    epochs = f"{stage['epochs']:g} epoch{'' if stage['epochs'] == 1 else 's'}"
    return (f"; {rows}, batch {stage['batch']}, {epochs}, at most "
            f"{stage['steps_max']} steps, max_length {stage['max_length']}")


def _render_problems(console: Any, title: str, problems: dict[str, Any]) -> None:
    from rich.table import Table

    methods = f" ({', '.join(problems['methods'])})" if problems.get("methods") else ""
    if problems["of"] is None:
        count, whole = f"{problems['n']} generated", "made up from the seed"
    else:
        count = f"{problems['n']} of {problems['of']}"
        whole = ("a subset" if problems["subset"] else "the whole split") if "Test" in title \
            else ("a sample" if problems["subset"] else "the whole split")
    console.print(f"[bold]{title}{methods}[/bold]: {count} in "
                  f"{problems['task']}/{problems['split']} ({problems['source']}); "
                  f"{whole}; sample {problems['sample']}, seed {problems['seed']}"
                  + (f", levels {problems['levels']}" if problems["levels"] else "")
                  + f"; ids sha256 {problems['ids_sha256']}")
    if problems.get("first_row"):
        row = problems["first_row"]
        console.print("  first row as read: " + "; ".join(
            f"{key} {value!r}" for key, value in row.items() if value is not None),
            highlight=False, markup=False)
    for group, label in (("by_level", "level"), ("by_subject", "subject")):
        if group not in problems or list(problems[group]) == ["none"]:
            continue
        table = Table(show_edge=False)
        for column in (label, "drawn", "in split", "split's share x n"):
            table.add_column(column, justify="left" if column == label else "right")
        split = problems["split_counts"].get(group, {})
        total = sum(split.values()) or 1
        for key, count in split.items():
            table.add_row(key, str(problems[group].get(key, 0)), str(count),
                          f"{count * problems['n'] / total:.1f}")
        console.print(table)


def _render_rest(plan: dict[str, Any], console: Any) -> None:
    if plan["deviations"]:
        console.print("[bold]Settings that differ from the paper's[/bold]:")
        for d in plan["deviations"]:
            console.print(f"  {d['where']}: {d['setting']} = {d['value']} (paper: {d['paper']})",
                          highlight=False)
    else:
        console.print("Settings: the paper's.")
    if plan.get("paper_silent"):
        console.print("Where the paper is silent, this config uses: " + ", ".join(
            f"{k} {v}" for k, v in plan["paper_silent"].items()), highlight=False)
    tokenizer = plan.get("tokenizer")
    if tokenizer:
        stats = [f"{key.replace('_', ' ')} max {v['max']}, mean {v['mean']}"
                 for key, v in tokenizer.items() if isinstance(v, dict) and "max" in v]
        console.print(f"Tokenizer: {tokenizer['source']}" + ("; " + "; ".join(stats)
                                                           if stats else ""), highlight=False)
        for name, ends in tokenizer.get("contexts", {}).items():
            console.print(f"  {CONTEXT_NAMES[name]} prompt of the first problem, {ends['tokens']} "
                          f"tokens: {_tokens(ends['first'])} ... {_tokens(ends['last'])}",
                          highlight=False, markup=False)
    for warning in plan["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if not plan["warnings"]:
        console.print("No warnings.")


CONTEXT_NAMES = {"base": "base (student)", "reference": "reference (teacher)"}


def _tokens(tokens: list[str]) -> str:
    return " ".join(repr(token) for token in tokens)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)
