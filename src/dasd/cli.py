"""The `dasd` command: a thin layer that parses a stage config and calls the stage."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from dasd.config import (
    add_config_arguments,
    config_from_args,
    config_keys,
    load_yaml,
)
from dasd.errors import DasdError
from dasd.progress import console
from dasd.registry import lookup
from dasd.versions import version_text

# Summaries and tables go to stdout (wide enough for the results table when piped);
# progress and logs to stderr.
results = Console(width=None if sys.stdout.isatty() else 140)


def _quiet_libraries() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # peft and TRL read transformers' deprecated attribute: nothing a user can change
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)


def print_generate_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['method']} {summary['settings']}  ->  {summary['output']}")
    table.add_column("statistic")
    table.add_column("all samples", justify="right")
    table.add_column("kept (correct)", justify="right")
    table.add_row("samples", str(summary["samples"]), f"{summary['kept']} "
                  f"({summary['kept_percent']:.1f}%)")
    if summary.get("sampled_problems", summary["samples"]) != summary["samples"]:  # kept@n
        table.add_row("problems", str(summary["sampled_problems"]), str(summary["kept_problems"]))
    for name, share in summary["categories_percent"].items():
        table.add_row(f"tokens {name} %", f"{share:.2f}",
                      f"{summary['categories_percent_kept'][name]:.2f}")
    table.add_row(f"high-PPL tokens % (PPL > {summary['high_ppl_threshold']})",
                  f"{summary['high_ppl_percent']:.2f}", f"{summary['high_ppl_percent_kept']:.2f}")
    table.add_row("mean response tokens", f"{summary['mean_tokens']:.1f}", "")
    table.add_row("length-capped responses", str(summary["length_capped"]), "")
    if summary.get("tokens_per_second"):
        table.add_row("decoding speed (this run)", f"{summary['tokens_per_second']:.1f} tok/s", "")
    results.print(table)


def print_train_summary(summary: dict[str, Any]) -> None:
    results.print(f"rows: {summary['rows']}; loss "
                  f"{summary['train_loss_first']:.4f} -> {summary['train_loss_last']:.4f} in "
                  f"{summary['steps']} steps, {summary['seconds']:.0f} s, "
                  f"{summary['tokens_per_second']:.1f} tok/s; adapter: {summary['output']}")


def print_eval_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['model']} + {summary['adapter'] or 'no adapter'} on "
                        f"{summary['task']}/{summary['split']}  ->  {summary['output']}")
    sampled = "avg@k" in summary
    table.add_column("level")
    table.add_column(f"avg@{summary['samples']}" if sampled else "accuracy", justify="right")
    if sampled:
        table.add_column(f"pass@{summary['pass_k']}", justify="right")
    table.add_column("problems", justify="right")

    others = summary.get("other_checks", {})  # e.g. MATH scored by math-verify alone
    for name in others:
        table.add_column(name.replace("_", "-"), justify="right")

    def cells(stats: dict[str, Any], level: str | None = None) -> list[str]:
        extra = [f"{stats['pass@k']:.3f}"] if sampled else []
        extra += [f"{(o['per_level'][level] if level else o['accuracy']):.3f}"
                  for o in others.values()]
        return [f"{stats['accuracy']:.3f}", *extra, str(stats["n"])]

    for level, stats in summary["per_level"].items():
        table.add_row(level, *cells(stats, level))
    table.add_row("all", *cells(summary), style="bold")
    results.print(table)


def print_run_results(report: dict[str, Any]) -> None:
    from dasd.results import (
        CHECKPOINT_LEGEND,
        COMPARISON_LEGEND,
        RETENTION_LEGEND,
        TABLE_LEGEND,
        checkpoint_rows,
        comparison_rows,
        results_rows,
        retention_rows,
        run_peak_mb,
    )

    peak = run_peak_mb(report)
    memory = f", peak {peak:.0f} MB" if peak is not None else ""
    _print_table(f"{report['name']}: {report['model']} on {report['task']} "
                 f"({report['total_seconds']:.0f} s{memory})", *results_rows(report),
                 TABLE_LEGEND, left=("method",))
    _print_table("Paired comparisons (all levels)", *comparison_rows(report),
                 COMPARISON_LEGEND, left=("comparison", "conclusion"))
    _print_table("Retention: what training cost on other tasks", *retention_rows(report),
                 RETENTION_LEGEND, left=("task", "model", "conclusion"))
    _print_table("Checkpoint choice", *checkpoint_rows(report), CHECKPOINT_LEGEND,
                 left=("model", "validation accuracy by step"))
    if report.get("analysis"):
        results.print(f"analysis report: {report['analysis']}")


def _print_table(title: str, header: list[str], rows: list[list[str]], legend: str,
                 left: tuple[str, ...]) -> None:
    """A results table with its legend; nothing when it has no rows."""
    if not rows:
        return
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in left else "right")
    for row in rows:
        table.add_row(*row)
    results.print(table)
    results.print(legend, style="dim")

def _cmd_generate(args: argparse.Namespace) -> None:
    from dasd.decoding.generate import GenerateConfig, generate

    print_generate_summary(generate(config_from_args(GenerateConfig, args)))


def print_onpolicy_summary(summary: dict[str, Any]) -> None:
    def num(key: str, digits: int = 4) -> str:
        return "-" if summary.get(key) is None else f"{summary[key]:.{digits}f}"

    results.print(f"{summary['method']} ({summary['paper']}): {summary['prompts']} prompts, "
                  f"{summary['steps']} steps, {summary['rollouts']} rollouts of "
                  f"{num('mean_rollout_tokens', 0)} tokens on average; loss "
                  f"{num('train_loss_first')} -> {num('train_loss_last')} (min "
                  f"{num('train_loss_min')}), divergence {num('divergence_first')} -> "
                  f"{num('divergence_last')}; {num('seconds_per_step', 1)} s/step; "
                  f"adapter: {summary['output']}")


def _train_method(args: argparse.Namespace) -> str:
    """`--method`, else `method:` in the `--config` YAML, else sft."""
    method = getattr(args, "method", None)
    if method is None and getattr(args, "config", None):
        method = load_yaml(args.config).get("method")
    return str(method or "sft")


def _train_config_cls(method: str) -> type:
    """The config of `dasd train --method`: SFT methods (sft, mask-ppl, profit) train on
    rows, on-policy methods on their own rollouts."""
    from dasd.training import TrainConfig
    from dasd.training.onpolicy import METHODS
    from dasd.training.sft_methods import SFT_METHODS

    if method in SFT_METHODS:
        return TrainConfig
    if method in METHODS:
        from dasd.training.onpolicy.config import OnPolicyConfig

        return OnPolicyConfig
    return lookup({**SFT_METHODS, **METHODS}, method, "training method")


def _train_config(args: argparse.Namespace) -> Any:
    """The config of `dasd train`: SFT's or the on-policy methods', by `--method`."""
    method = _train_method(args)
    cls = _train_config_cls(method)
    given = {key for key in vars(args) if key in _train_flag_keys()}
    unused = sorted(given - set(config_keys(cls)))
    if unused:
        flags = ", ".join("--" + key.replace("_", "-") for key in unused)
        raise DasdError(f"{flags}: not a setting of `dasd train --method {method}` (they "
                        "belong to the other kind of training: rows or rollouts)")
    return config_from_args(cls, args)


def _cmd_train(args: argparse.Namespace) -> None:
    from dasd.training import TrainConfig, train

    config = _train_config(args)
    if isinstance(config, TrainConfig):
        print_train_summary(train(config))
    else:
        from dasd.training.onpolicy.trainer import train_onpolicy

        print_onpolicy_summary(train_onpolicy(config))


def _train_classes() -> tuple[type, ...]:
    """`dasd train` takes the keys of SFT (`TrainConfig`) and of the on-policy methods
    (`OnPolicyConfig`); `--method` decides which of the two parses them."""
    from dasd.training import TrainConfig
    from dasd.training.onpolicy.config import OnPolicyConfig

    return TrainConfig, OnPolicyConfig


def _train_flag_keys() -> set[str]:
    return {key for cls in _train_classes() for key in config_keys(cls)}


def _cmd_eval(args: argparse.Namespace) -> None:
    from dasd.evaluation.evaluate import EvalConfig, evaluate

    print_eval_summary(evaluate(config_from_args(EvalConfig, args)))


def _cmd_run(args: argparse.Namespace) -> None:
    from dasd.run import run
    from dasd.run_config import RunConfig

    print_run_results(run(config_from_args(RunConfig, args)))


def _cmd_analyze(args: argparse.Namespace) -> None:
    from dasd.analysis import AnalyzeConfig, analyze

    report = analyze(config_from_args(AnalyzeConfig, args))
    for note in report["notes"]:
        results.print(f"note: {note}", style="dim")
    results.print(f"report: {report['report']}  (figures, CSVs and analysis.json in "
                  f"{report['out']})")


@dataclass
class ShowConfig:
    path: str | None = field(default=None, metadata={
        "help": "a generated JSONL, or a run folder (shows the example for every method)"})
    id: str | None = field(default=None, metadata={
        "help": "example id, or its number (17 matches arith-train-00017)"})
    color_by: Literal["category", "p_base"] = field(default="category", metadata={
        "help": "colour tokens by DASD category or by base-model probability"})

    def __post_init__(self) -> None:
        if not self.path or self.id is None:
            raise DasdError("give a JSONL file or run folder and --id, e.g. "
                            "`dasd show runs/demo/generate/dasd.jsonl --id 17`")


def _cmd_show(args: argparse.Namespace) -> None:
    from dasd.analysis import show

    config = config_from_args(ShowConfig, args)
    show(config.path, config.id, config.color_by, console=results)


def _cmd_export(args: argparse.Namespace) -> None:
    from dasd.export import ExportConfig, export

    summary = export(config_from_args(ExportConfig, args))
    if summary.get("adapter"):
        results.print(f"adapter {summary['source']} -> {summary['out']}")
    else:
        kept = ", ".join(f"{m} {n}" for m, n in summary["per_method"].items())
        results.print(f"{summary['rows']} of {summary['read']} rows ({kept}) -> "
                      f"{summary['out']} ({summary['style']}, {summary['format']}, README.md)")
    if summary.get("hub_url"):
        results.print(f"pushed: {summary['hub_url']}")


def _config_cls(module: str, name: str) -> Callable[[], tuple[type, ...]]:
    def load() -> tuple[type, ...]:
        return (getattr(importlib.import_module(module), name),)
    return load


COMMANDS: dict[str, tuple[str, Callable[[], type], Callable[[argparse.Namespace], None]]] = {
    "generate": ("decode a task split with a decoding method; write JSONL + summary",
                 _config_cls("dasd.decoding.generate", "GenerateConfig"), _cmd_generate),
    "train": ("LoRA training with TRL: SFT methods on the correct rows of generated JSONL "
              "files, or on-policy self-distillation on the model's own rollouts (--method); "
              "every TRL argument under TRL's name",
              _train_classes, _cmd_train),
    "eval": ("accuracy (greedy, or Avg@k / pass@k sampled) of a model (+ LoRA adapter)",
             _config_cls("dasd.evaluation.evaluate", "EvalConfig"), _cmd_eval),
    "run": ("the whole comparison from one YAML: generate, train, evaluate, results table",
            _config_cls("dasd.run", "RunConfig"), _cmd_run),
    "analyze": ("the paper's analyses of generated data: figures, CSVs, report.html",
                _config_cls("dasd.analysis", "AnalyzeConfig"), _cmd_analyze),
    "show": ("one generated example, token by token, coloured in the terminal",
             lambda: (ShowConfig,), _cmd_show),
    "export": ("generated rows as a Hugging Face dataset in TRL's formats (or an adapter as a "
               "model folder), with a card; --push-to-hub uploads it",
               _config_cls("dasd.export", "ExportConfig"), _cmd_export),
}

# Commands whose first argument may be given without a flag: (metavar, config field).
POSITIONAL = {"run": ("CONFIG.yaml", "config"), "analyze": ("PATH", "path"),
              "show": ("PATH", "path"), "export": ("RUN_OR_JSONL", "path")}


class _Version(argparse.Action):
    """`dasd --version`: dasd's version and its libraries', one per line."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="dasd's version and those of "
                         "torch, transformers, trl, peft, datasets, accelerate, vllm, math-verify")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


PLANNED = ("generate", "train", "eval", "run")
PLAN_HELP = ("print what would run, without loading a model or writing anything: the "
             "problems (by level and subject), each stage to run, resume or reuse, token "
             "budgets, settings that differ from the paper's, and warnings")


def _cmd_plan(args: argparse.Namespace) -> None:
    from dasd.plan import make_plan
    from dasd.plan_text import render_plan

    plan = make_plan(args.command, _plan_config(args))
    if args.json:
        sys.stdout.write(json.dumps(plan, indent=2) + "\n")
    else:
        render_plan(plan, results)


def _plan_config(args: argparse.Namespace) -> Any:
    if args.command == "train":
        return _train_config(args)
    config_cls = COMMANDS[args.command][1]()[0]
    return config_from_args(config_cls, args)


def make_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `dasd` parser; only the command named in `argv` gets its config flags (building
    them imports that stage, e.g. TRL for `train`)."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if arg in COMMANDS), None)
    parser = argparse.ArgumentParser(prog="dasd", description="Distribution-aligned "
                                     "self-distillation: generate, train, evaluate, analyze.")
    parser.add_argument("--version", action=_Version)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, config_classes, handler) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name in POSITIONAL:
            metavar, dest = POSITIONAL[name]
            command.add_argument("positional", metavar=metavar, nargs="?",
                                 help=f"same as --{dest}")
            command.set_defaults(positional_dest=dest)
        if name in PLANNED:
            command.add_argument("--plan", action="store_true", help=PLAN_HELP)
            command.add_argument("--json", action="store_true",
                                 help="with --plan: the plan as one JSON document")
        if name == chosen:
            add_config_arguments(command, *config_classes())
        command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser(argv).parse_args(argv)
    if getattr(args, "positional", None) is not None:
        setattr(args, args.positional_dest, args.positional)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", handlers=[RichHandler(console=console,
                                                                     show_path=False)])
    _quiet_libraries()
    handler = _cmd_plan if getattr(args, "plan", False) else args.handler
    try:
        if getattr(args, "json", False) and not args.plan:
            raise DasdError("--json goes with --plan (dasd run CONFIG --plan --json)")
        handler(args)
    except DasdError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: finished batches are saved; rerun the command to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
