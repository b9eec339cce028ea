"""Reading task rows from local files or the Hugging Face hub, with errors that name the row.

Local files are read directly (JSONL, a JSON list, or Parquet); the hub is only
contacted by `load_hub_rows`, which tasks call only when no local path is given.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dasd.errors import DasdError
from dasd.records import read_text

ROW_FORMATS = (".jsonl", ".json", ".parquet")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a local .jsonl / .json (a list of objects) / .parquet file.

    JSONL row i is line i + 1 (see `row_source`), so a blank line is allowed only at the end.
    """
    path = Path(path)
    if not path.is_file():
        raise DasdError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DasdError(f"cannot read {path}: unknown extension '{path.suffix}'; "
                    f"use one of {', '.join(ROW_FORMATS)}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = read_text(path).rstrip()
    lines = text.split("\n") if text else []
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DasdError(f"{path}:{number}: blank line in JSONL; remove it")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DasdError(f"{path}:{number}: not valid JSON ({error.msg}, column {error.colno})"
                            ) from None
        rows.append(_as_object(row, f"{path}:{number}"))
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DasdError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, list):
        raise DasdError(f"{path}: expected a JSON list of objects, got {type(data).__name__}; "
                        "or use JSONL, one object per line")
    return [_as_object(row, row_source(path, i)) for i, row in enumerate(data)]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq  # installed with `datasets`

    try:
        return pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several kinds for a bad file
        raise DasdError(f"cannot read {path} as Parquet: {_short(error)}") from None


def _as_object(row: Any, source: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DasdError(f"{source}: expected a JSON object, got {type(row).__name__}")
    return row


def row_source(path: str | Path, index: int) -> str:
    """Where row `index` (0-based) of a local file is, for error messages: "train.jsonl:17"."""
    if Path(path).suffix.lower() == ".jsonl":
        return f"{path}:{index + 1}"
    return f"{path} row {index + 1}"


def load_hub_rows(hub_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of one split of a hub data set; any failure becomes one DasdError line.

    `hub_id` may also be a local data set folder, which is read as it is. Inside
    `local_only()` (`--plan`) nothing is downloaded: a data set that is not in the local
    Hugging Face cache is an error at once, and a cached one is read offline.
    """
    if _LOCAL_ONLY and not Path(hub_id).is_dir():
        return _cached_hub_rows(hub_id, config, split)
    import datasets

    try:
        return [dict(row) for row in datasets.load_dataset(hub_id, config, split=split)]
    except Exception as error:  # network, auth, missing split, cache corruption...
        where = ", ".join(part for part in (config, split) if part)
        online = ("go online (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) to download it, or "
                  if datasets.config.HF_HUB_OFFLINE else "")
        raise DasdError(f"could not load '{hub_id}' ({where}) from the hub: {_short(error)}; "
                        f"{online}pass a local JSONL/Parquet file with --data instead") from None


_LOCAL_ONLY: list[bool] = []  # non-empty inside `local_only()`


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Hub data sets are read only from the local cache here, never downloaded."""
    _LOCAL_ONLY.append(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.pop()


def _cached_hub_rows(hub_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets
    import huggingface_hub.constants as hub

    where = ", ".join(part for part in (config, split) if part)
    missing = DasdError(f"'{hub_id}' ({where}) is not in the local Hugging Face cache and "
                        "nothing is downloaded here: set generate.data / eval.data (--data) "
                        "to a local JSONL/Parquet copy with the hub's fields")
    if not _in_cache(hub_id, Path(datasets.config.HF_DATASETS_CACHE), Path(hub.HF_HUB_CACHE)):
        raise missing
    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        return [dict(row) for row in datasets.load_dataset(hub_id, config, split=split)]
    except Exception:  # not cached after all (another config or split), or unreadable
        raise missing from None
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def _in_cache(hub_id: str, datasets_cache: Path, hub_cache: Path) -> bool:
    """Whether a folder of `hub_id` is in either cache (`datasets` spells its folders
    `org___name` in snake case, the hub `datasets--org--name`)."""
    def key(text: str) -> str:
        return "".join(char for char in text.lower() if char.isalnum() or char == "/")

    want = key(hub_id)
    names = [p.name.replace("___", "/") for p in _folders(datasets_cache)]
    names += [p.name.removeprefix("datasets--").replace("--", "/", 1)
              for p in _folders(hub_cache) if p.name.startswith("datasets--")]
    return any(key(name) == want for name in names)


def _folders(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir()] if path.is_dir() else []


def require(row: Mapping[str, Any], fields: Iterable[str], source: str,
            reference: str | None = None) -> None:
    """Raise a DasdError naming `source` when `row` lacks any of `fields`.

    `reference` names the field holding the reference solution; it must not be blank,
    because an empty reference silently turns the reference context into the base one.
    """
    fields = list(fields)
    missing = [name for name in fields if row.get(name) is None]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise DasdError(f"{source}: missing field{plural} {', '.join(map(repr, missing))} "
                        f"(row has: {', '.join(row) or 'nothing'})")
    for name in fields:
        check_text(row[name], f"{source}: field '{name}'", must_be_text=name in TEXT_FIELDS)
    if reference is not None and not str(row.get(reference, "")).strip():
        raise DasdError(f"empty reference solution ('{reference}') in {source}")


# Fields that hold prose or code: anything but a string there is a malformed row.
TEXT_FIELDS = frozenset({"question", "problem", "solution", "reference", "text", "code"})


def check_text(value: Any, where: str, must_be_text: bool = False) -> None:
    """Refuse a non-string where text belongs, and a lone UTF-16 surrogate in any string
    (it cannot be encoded, so it would fail later, half-way through writing rows)."""
    if must_be_text and not isinstance(value, str):
        raise DasdError(f"{where} must be text, got {type(value).__name__}: fix the row")
    strings = [value] if isinstance(value, str) else [
        v for v in (value if isinstance(value, list) else []) if isinstance(v, str)]
    for text in strings:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise DasdError(f"{where} holds a lone UTF-16 surrogate ({text[err.start]!r} at "
                            f"character {err.start}): fix the file's encoding") from None


def parse_level(value: Any, source: str) -> int | None:
    """3 from 3, "3" or "Level 3"; None from null or "Level ?" (two MATH problems have it);
    anything else is a malformed row."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    match = re.fullmatch(r"(?:Level\s*)?(\d+)", text)
    if match:
        return int(match.group(1))
    if re.fullmatch(r"Level\s*\?", text):
        return None
    raise DasdError(f"{source}: level must be an integer or 'Level N', got {value!r}: fix or "
                    "remove it")


def _short(error: BaseException) -> str:
    """First line of an exception, capped, so the user sees one line."""
    text = str(error).strip().split("\n", 1)[0] or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_split(task: str, split: str, allowed: tuple[str, ...]) -> None:
    """Raise a DasdError unless `split` is one of `allowed`."""
    if split not in allowed:
        raise DasdError(f"{task} has no split '{split}': choose one of {', '.join(allowed)}")


def check_limit(limit: int | None) -> None:
    """Raise a DasdError for a negative limit (None means all rows)."""
    if limit is not None and limit < 0:
        raise DasdError(f"limit must be 0 or more, got {limit}")
