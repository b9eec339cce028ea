"""The `dasd` command: a thin layer that parses a stage config and calls the stage."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from dasd import __version__
from dasd.config import add_config_arguments, config_from_args
from dasd.errors import DasdError
from dasd.progress import console

# Summaries and tables go to stdout (wide enough for the results table when piped);
# progress and logs to stderr.
results = Console(width=None if sys.stdout.isatty() else 140)


def _quiet_libraries() -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def print_generate_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['method']} {summary['settings']}  ->  {summary['output']}")
    table.add_column("statistic")
    table.add_column("all samples", justify="right")
    table.add_column("kept (correct)", justify="right")
    table.add_row("samples", str(summary["samples"]), f"{summary['kept']} "
                  f"({summary['kept_percent']:.1f}%)")
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
    table.add_column("level")
    table.add_column("accuracy", justify="right")
    table.add_column("problems", justify="right")
    for level, stats in summary["per_level"].items():
        table.add_row(level, f"{stats['accuracy']:.3f}", str(stats["n"]))
    table.add_row("all", f"{summary['accuracy']:.3f}", str(summary["n"]), style="bold")
    results.print(table)


def print_run_results(report: dict[str, Any]) -> None:
    from dasd.run import TABLE_LEGEND, results_rows

    header, rows = results_rows(report)
    table = Table(title=f"{report['name']}: {report['model']} on {report['task']} "
                        f"({report['total_seconds']:.0f} s)")
    for column in header:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(*row)
    results.print(table)
    results.print(TABLE_LEGEND, style="dim")
    if report.get("analysis"):
        results.print(f"analysis report: {report['analysis']}")


def _cmd_generate(args: argparse.Namespace) -> None:
    from dasd.decoding.generate import GenerateConfig, generate

    print_generate_summary(generate(config_from_args(GenerateConfig, args)))


def _cmd_train(args: argparse.Namespace) -> None:
    from dasd.training import TrainConfig, train

    print_train_summary(train(config_from_args(TrainConfig, args)))


def _cmd_eval(args: argparse.Namespace) -> None:
    from dasd.evaluation.evaluate import EvalConfig, evaluate

    print_eval_summary(evaluate(config_from_args(EvalConfig, args)))


def _cmd_run(args: argparse.Namespace) -> None:
    from dasd.run import RunConfig, run

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


def _config_cls(module: str, name: str) -> Callable[[], type]:
    def load() -> type:
        return getattr(importlib.import_module(module), name)
    return load


COMMANDS: dict[str, tuple[str, Callable[[], type], Callable[[argparse.Namespace], None]]] = {
    "generate": ("decode a task split with dasd, sd or base; write JSONL + summary",
                 _config_cls("dasd.decoding.generate", "GenerateConfig"), _cmd_generate),
    "train": ("LoRA SFT (TRL) on the correct rows of generated JSONL files",
              _config_cls("dasd.training", "TrainConfig"), _cmd_train),
    "eval": ("greedy accuracy of a model (optionally + LoRA adapter) on a task split",
             _config_cls("dasd.evaluation.evaluate", "EvalConfig"), _cmd_eval),
    "run": ("the whole comparison from one YAML: generate, train, evaluate, results table",
            _config_cls("dasd.run", "RunConfig"), _cmd_run),
    "analyze": ("the paper's analyses of generated data: figures, CSVs, report.html",
                _config_cls("dasd.analysis", "AnalyzeConfig"), _cmd_analyze),
    "show": ("one generated example, token by token, coloured in the terminal",
             lambda: ShowConfig, _cmd_show),
}

# Commands whose first argument may be given without a flag: (metavar, config field).
POSITIONAL = {"run": ("CONFIG.yaml", "config"), "analyze": ("PATH", "path"),
              "show": ("PATH", "path")}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dasd", description="Distribution-aligned "
                                     "self-distillation: generate, train, evaluate, analyze.")
    parser.add_argument("--version", action="version", version=f"dasd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, config_cls, handler) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name in POSITIONAL:
            metavar, dest = POSITIONAL[name]
            command.add_argument("positional", metavar=metavar, nargs="?",
                                 help=f"same as --{dest}")
            command.set_defaults(positional_dest=dest)
        add_config_arguments(command, config_cls())
        command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if getattr(args, "positional", None) is not None:
        setattr(args, args.positional_dest, args.positional)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", handlers=[RichHandler(console=console,
                                                                     show_path=False)])
    _quiet_libraries()
    try:
        args.handler(args)
    except DasdError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: finished batches are saved; rerun the command to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
