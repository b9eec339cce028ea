"""The `dasd` command: a thin layer that parses a stage config and calls the stage."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.logging import RichHandler
from rich.table import Table

from dasd import __version__
from dasd.config import add_config_arguments, config_from_args
from dasd.errors import DasdError
from dasd.progress import console


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
    console.print(table)


def _cmd_generate(args: argparse.Namespace) -> None:
    from dasd.decoding.generate import GenerateConfig, generate

    print_generate_summary(generate(config_from_args(GenerateConfig, args)))


def _generate_config_cls():
    from dasd.decoding.generate import GenerateConfig

    return GenerateConfig


COMMANDS: dict[str, tuple[str, Callable[[], type], Callable[[argparse.Namespace], None]]] = {
    "generate": ("decode a task split with dasd, sd or base; write JSONL + summary",
                 _generate_config_cls, _cmd_generate),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dasd", description="Distribution-aligned "
                                     "self-distillation: generate, train, evaluate, analyze.")
    parser.add_argument("--version", action="version", version=f"dasd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, config_cls, handler) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(command, config_cls())
        command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
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
