"""Append-only JSONL files that survive interruption.

Rows are appended and flushed (and fsynced) per batch. A crash can leave at most one
partial last line; `read_rows_for_resume` drops it (truncating the file) so that a rerun
appends exactly the rows that are missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dasd.errors import DasdError


def read_text(path: str | Path) -> str:
    """A user's text file as UTF-8, a leading byte-order mark dropped (Windows tools and
    spreadsheet exports write one); bytes that are not UTF-8 end in one line naming the
    file and where."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DasdError(f"{path} is not UTF-8 text (byte {err.start}: "
                        f"{data[err.start:err.start + 1]!r}): give a UTF-8 text file "
                        "(re-save it as UTF-8)") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in read_jsonl_lines(path)]


def read_jsonl_lines(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of every row of a JSONL file, so errors can name the line."""
    path = Path(path)
    if not path.is_file():
        raise DasdError(f"file not found: {path}")
    lines = read_text(path).splitlines()
    return _parse_lines(lines, path, "is not valid JSON ({}); fix or remove that line")


def _parse_lines(lines: list[str], path: Path, problem: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DasdError(f"{path}:{number} " + problem.format(err.msg)) from err
    return rows


def row_name(row: dict[str, Any], source: str) -> str:
    """How an error names a row: by its id when it has one, else by where it is."""
    return f"row {row['id']!r} ({source})" if row.get("id") is not None else f"row at {source}"


def read_rows_for_resume(path: str | Path) -> list[dict[str, Any]]:
    """Rows already written to `path`; a partial trailing line (from a crash) is cut off."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
    return [row for _, row in _parse_lines(
        complete.decode("utf-8").splitlines(), path,
        "is corrupt ({}); delete the file or rerun with --overwrite")]


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as one write, then flush and fsync so finished work is never lost."""
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not payload:
        return
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def check_writable(out: str | Path, is_dir: bool = False, flag: str = "--out") -> None:
    """Refuse, before anything is written, an output that cannot be written: a folder
    where a file goes (or the reverse), a file among its parents, a read-only place."""
    out = Path(out)
    if out.exists() and out.is_dir() != is_dir:
        kind = "a folder" if out.is_dir() else "a file"
        raise DasdError(f"{flag} {out} is {kind}; give a {'folder' if is_dir else 'file'} path")
    start = out.parent if out.exists() else out  # an existing output resumes or overwrites
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        raise DasdError(f"{flag} {out}: {existing} is a file, not a folder; choose another "
                        f"{flag}")
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only(existing):
        raise DasdError(f"{flag} {out}: {existing} is not writable (read-only file system "
                        f"or permissions); choose another {flag}")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def sidecar(out: str | Path, kind: str) -> Path:
    """`runs/x/dasd.jsonl` -> `runs/x/dasd.<kind>`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{kind}")
