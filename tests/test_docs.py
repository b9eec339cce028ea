"""README.md and docs/*.md against the real CLI, so the docs cannot drift from it.

Every command in a fenced shell block (```bash, ```sh, ```console or no language) that
runs dasd, as `dasd ...`, `.venv/bin/dasd ...` (any path ending in `/dasd`) or under a
launcher as `... -m dasd.cli ...`, is checked without running any work:

- it is parsed by dasd's own parser (`dasd.cli.make_parser`), so an unknown flag, a
  misspelled subcommand or a malformed value fails;
- the stage config it would run is built as `dasd` builds it (defaults < `--config` YAML
  < flags, then each config's own checks), so a missing or unknown config file, an unknown
  key, a setting of another method or an invalid value fails.

Files made by an earlier step: building a config reads only the YAML it is given
(`--config FILE`, `dasd run CONFIG`), never data, adapters or run folders, so a command
naming outputs under `runs/` or `exports/` is checked in full; one whose config file itself
lies there (written by an earlier run) is only parsed.

Lines ending in `\\` are joined, `# comments` dropped, and `&&`, `;` and `|` split a line
into commands. A command holding `...` or a `<placeholder>` fails: docs show complete
commands with real paths.

`dasd <subcommand> --help` runs once per subcommand the docs use, all in one subprocess
started when the module starts. Links: every relative link `[text](path)` must name an
existing file or folder, and a `#anchor` a heading of its target (GitHub's slugs).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import dasd
from dasd import cli
from dasd.errors import DasdError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {";", "&&", "||", "|", "&"}
PRODUCED = ("runs/", "exports/")  # folders that earlier steps write
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)[^`]*$")  # no ` in a ``` info string


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    argv: tuple[str, ...]  # the arguments after `dasd`

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: dasd {shlex.join(self.argv)}"


def fenced_lines(page: Path) -> list[tuple[int, str, str]]:
    """(line number, language of its block, text) of every line inside a fenced block."""
    lines, fence, language = [], None, ""
    for number, text in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(text)
        if fence is None and match:
            fence, language = match.group(1), match.group(2).lower()
        elif fence is not None and re.fullmatch(rf" {{0,3}}{fence[0]}{{{len(fence)},}}\s*", text):
            fence = None
        elif fence is not None:
            lines.append((number, language, text))
    return lines


def shell_lines(page: Path) -> list[tuple[int, str]]:
    """Lines of the shell blocks, continuations joined, numbered by their first line."""
    joined, start, parts, previous = [], None, [], None
    for number, language, text in fenced_lines(page):
        if language not in SHELL_BLOCKS:
            continue
        if parts and number != previous + 1:  # a new block
            joined.append((start, " ".join(parts)))
            parts = []
        if not parts:
            start = number
        previous = number
        stripped = text.rstrip()
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        joined.append((start, " ".join(parts)))
        parts = []
    if parts:
        joined.append((start, " ".join(parts)))
    return joined


def dasd_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after `dasd` (or after `-m dasd.cli`), or None for other commands."""
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]  # VAR=value before the command
    if tokens and (tokens[0] == "dasd" or tokens[0].endswith("/dasd")):
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "dasd.cli":
            return tokens[i + 2:]
    return None


def commands(page: Path) -> list[Command]:
    found = []
    for number, text in shell_lines(page):
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        segment: list[str] = []
        try:
            tokens = [*lexer, ";"]
        except ValueError as err:  # e.g. an unclosed quote
            raise ValueError(f"{page.relative_to(ROOT)}:{number}: {err}: {text}") from err
        for token in tokens:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            argv = dasd_argv(segment)
            if argv is not None:
                found.append(Command(page, number, tuple(argv)))
            segment = []
    return found


COMMANDS = [command for page in PAGES for command in commands(page)]
SUBCOMMANDS = sorted({c.argv[0] for c in COMMANDS if c.argv and c.argv[0] in cli.COMMANDS})


def parse(argv: list[str]):
    """`dasd`'s own parsing, as `dasd.cli.main` does it; a parser error fails the test."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = cli.make_parser(argv).parse_args(argv)
    except SystemExit as exit:
        pytest.fail(f"the parser refuses it (exit {exit.code}): {stderr.getvalue().strip()}")
    if getattr(args, "positional", None) is not None:
        setattr(args, args.positional_dest, args.positional)
    return args


HELP_SCRIPT = """
import contextlib, io, sys
from dasd import cli
for name in sys.argv[1:]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main([name, "--help"])
            code = None
        except SystemExit as exit:
            code = exit.code
    sys.stdout.write(f"\\0{name}\\0{code}\\0{out.getvalue()}")
"""


@pytest.fixture(scope="module", autouse=True)
def help_runs():
    """`dasd <subcommand> --help` for every subcommand the docs use, in one subprocess
    (one import of the stages) started at the top of this module; `test_help` reads it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(dasd.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", HELP_SCRIPT, *SUBCOMMANDS], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    helps: dict[str, tuple[str, str]] = {}

    def read() -> dict[str, tuple[str, str]]:
        if not helps:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, f"the --help run failed:\n{err[-2000:]}"
            parts = out.split("\0")[1:]
            for name, code, text in zip(parts[::3], parts[1::3], parts[2::3], strict=True):
                helps[name] = (code, text)
        return helps

    yield read
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 40, "the command collector found too few commands"
    assert {"generate", "train", "eval", "run", "analyze", "show", "export"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.page.name}:{c.line}")
def test_command(command: Command, monkeypatch):
    argv = list(command.argv)
    placeholders = [a for a in argv if "..." in a or re.search(r"<[^<>]+>", a)]
    assert not placeholders, f"{command}: write the whole command, not {placeholders}"
    if argv in (["--version"], ["--help"], ["-h"]):
        return
    if "--help" in argv or "-h" in argv:
        assert argv[0] in cli.COMMANDS, f"{command}: no subcommand '{argv[0]}'"
        return  # test_help runs it
    monkeypatch.chdir(ROOT)  # docs commands run from the repository root
    try:
        args = parse(argv)
    except pytest.fail.Exception as err:
        pytest.fail(f"{command}: {err}")
    config_file = getattr(args, "config", None)
    if config_file and str(config_file).startswith(PRODUCED):
        return  # written by an earlier step: parsing is all that can be checked
    try:
        cli._plan_config(args)
    except DasdError as err:
        pytest.fail(f"{command}: {err}")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    inside = {number for number, _, _ in fenced_lines(page)}
    found, counts = set(), {}
    for number, text in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", text)
        if match and number not in inside and not FENCE.match(text):
            base = slug(match.group(1))  # a repeated heading gets -1, -2, ...
            found.add(f"{base}-{counts[base]}" if base in counts else base)
            counts[base] = counts.get(base, 0) + 1
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every relative link outside code blocks and code spans."""
    inside = {number for number, _, _ in fenced_lines(page)}
    found = []
    for number, text in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if number in inside or FENCE.match(text):
            continue
        text = re.sub(r"`[^`]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, mailto:
                found.append((number, target))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links(page: Path):
    broken = []
    for number, target in links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}:{number}: ({target})"
        if not resolved.exists():
            broken.append(f"{where} no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where} no heading '#{anchor}' in {resolved.name}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help(name: str, help_runs):
    code, text = help_runs()[name]
    assert code == "0", f"dasd {name} --help exited with {code}:\n{text[-2000:]}"
    assert text.startswith(f"usage: dasd {name}"), text[:200]


def test_the_checks_can_fail(monkeypatch):
    """A bogus flag, a misspelled subcommand and a missing config are refused."""
    page = ROOT / "README.md"
    for argv in (["generate", "--task", "arith", "--no-such-flag", "1"],
                 ["genrate", "--task", "arith"],
                 ["run", "configs/no-such-config.yaml"],
                 ["generate", "--method", "sd", "--top-k", "9"]):
        with pytest.raises(pytest.fail.Exception):
            test_command(Command(page, 0, tuple(argv)), monkeypatch)
    assert slug("What the demo gives (2-core CPU, fp32, 2026-12-06)") == \
        "what-the-demo-gives-2-core-cpu-fp32-2026-12-06"


def test_links_and_anchors_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n## A title\n[x](missing.md) [y](#a-title-1) `[no](code.md)`\n"
                    "```bash\n[no](block.md)\n# not a heading\n```\n", encoding="utf-8")
    assert links(page) == [(3, "missing.md"), (3, "#a-title-1")]
    assert anchors(page) == {"a-title", "a-title-1"}
