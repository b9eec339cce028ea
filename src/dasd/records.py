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


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DasdError(f"file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DasdError(f"{path}:{number} is not valid JSON ({err.msg}); "
                                "fix or remove that line") from err
    return rows


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
    rows = []
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DasdError(f"{path}:{number} is corrupt ({err.msg}); delete the file or "
                                "rerun with --overwrite") from err
    return rows


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as one write, then flush and fsync so finished work is never lost."""
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not payload:
        return
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
