"""Finding and reading what the analyses need: generated JSONL files, eval summaries and,
when it can be loaded offline, the tokenizer that turns token ids into text.

A generated file is any `*.jsonl` whose rows carry per-token statistics (`tokens`), as
written by `dasd generate` (alone: `runs/<task>/<method>.jsonl`; in a run:
`runs/<name>/generate/<method>.jsonl`). Evaluation rows have no `tokens` and are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dasd.analysis.compare import CompareSettings
from dasd.config import load_yaml
from dasd.errors import DasdError
from dasd.records import read_jsonl

log = logging.getLogger(__name__)

REQUIRED_TOKEN_KEYS = ("category", "p_base")
SEED_FOLDER = re.compile(r"seed-\d+")  # a training seed's outputs (`dasd run` with seeds)


@dataclass
class GeneratedFile:
    """One generated JSONL: its rows and the label its method goes by in the report."""

    path: Path
    label: str
    rows: list[dict[str, Any]]
    model: str | None = None          # model spec from the `<stem>.config.yaml` beside it
    token_keys: set[str] = field(default_factory=set)  # per-token statistics all rows hold


def _first_row(path: Path) -> dict[str, Any] | None:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return row if isinstance(row, dict) else None
    return None


def has_token_stats(path: Path) -> bool:
    row = _first_row(path)
    return bool(row) and isinstance(row.get("tokens"), dict)


def find_generated(path: Path, exclude: Path | None = None) -> list[Path]:
    """The generated JSONL files at `path` (a file, or a folder searched recursively)."""
    if not path.exists():
        raise DasdError(f"path not found: {path}; give a run folder (runs/<name>) or a JSONL "
                        "written by `dasd generate`")
    if path.is_file():
        if not has_token_stats(path):
            raise DasdError(f"{path} has no per-token statistics ('tokens'): give a JSONL "
                            "written by `dasd generate`")
        return [path]
    files = [p for p in sorted(path.rglob("*.jsonl"))
             if not (exclude and exclude.resolve() in p.resolve().parents)
             and has_token_stats(p)]
    if not files:
        raise DasdError(f"no generated JSONL with per-token statistics under {path}: run "
                        "`dasd generate` or `dasd run` first")
    return files


def _check_rows(path: Path, rows: list[dict[str, Any]]) -> set[str]:
    """Refuse rows without the basic per-token statistics; return the keys all rows hold."""
    keys: set[str] | None = None
    for number, row in enumerate(rows, start=1):
        tokens = row.get("tokens")
        missing = [k for k in REQUIRED_TOKEN_KEYS if not isinstance(tokens, dict) or k not in
                   tokens]
        if missing or "completion_ids" not in row:
            raise DasdError(f"{path}: row {number} lacks per-token statistics "
                            f"({', '.join(missing) or 'completion_ids'}); regenerate it with "
                            "`dasd generate`")
        n = len(row["completion_ids"])
        bad = [k for k, v in tokens.items() if len(v) != n]
        if bad:
            raise DasdError(f"{path}: row {number} has {n} tokens but {bad[0]} has "
                            f"{len(tokens[bad[0]])} values; the file is corrupt")
        keys = set(tokens) if keys is None else keys & set(tokens)
    return keys or set()


def model_spec_beside(path: Path) -> str | None:
    """`model` from `<stem>.config.yaml` beside the JSONL, else from a run's config.yaml."""
    for candidate in (path.with_name(f"{path.stem}.config.yaml"),
                      path.parent / "config.yaml", path.parent.parent / "config.yaml"):
        if candidate.is_file():
            try:
                data = yaml.safe_load(candidate.read_text()) or {}
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and isinstance(data.get("model"), str):
                return data["model"]
    return None


def load_generated(paths: list[Path]) -> list[GeneratedFile]:
    """Read every file; label each by its rows' `method`, or by file stem when two files
    share a method (e.g. two DASD settings in one run)."""
    files = []
    for path in paths:
        rows = read_jsonl(path)
        if not rows:
            log.warning("%s is empty; skipped", path)
            continue
        keys = _check_rows(path, rows)
        files.append(GeneratedFile(path, str(rows[0].get("method") or path.stem), rows,
                                   model_spec_beside(path), keys))
    counts = Counter(f.label for f in files)
    for f in files:
        if counts[f.label] > 1:
            f.label = f.path.stem
    counts = Counter(f.label for f in files)
    for f in files:
        if counts[f.label] > 1:
            f.label = f"{f.path.parent.name}/{f.path.stem}"
    return files


def load_training_levels(root: Path) -> dict[str, tuple[str, list[int] | None]]:
    """(decoding method, training levels) of every model of a `dasd run` folder, from
    `generate/<name>.config.yaml` (the data each model was trained on)."""
    import yaml

    found = {}
    for path in sorted((root / "generate").glob("*.config.yaml")) if root.is_dir() else []:
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        found[path.name.removesuffix(".config.yaml")] = (config.get("method"),
                                                          config.get("levels"))
    return found


def load_training_logs(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Per-step training logs of every model of a `dasd run` folder, by name
    (`train/<name>/train_log.jsonl`)."""
    paths = sorted([*(root / "train").glob("*/train_log.jsonl"),
                    *(root / "train").glob("*/seed-*/train_log.jsonl")]) if root.is_dir() else []
    return {(f"{path.parent.parent.name} {path.parent.name}" if _seed_of(path)
             else path.parent.name): read_jsonl(path) for path in paths}


def load_checkpoint_choices(root: Path) -> dict[str, dict[str, Any]]:
    """The checkpoint choice of every trained model of a run with `validation:`, by name
    (`validation/[seed-<s>/]<name>/choice.json`; with seeds, "<name> seed-<s>")."""
    paths = sorted([*root.glob("validation/*/choice.json"),
                    *root.glob("validation/seed-*/*/choice.json")]) if root.is_dir() else []
    return {(f"{path.parent.name} {path.parent.parent.name}" if _seed_of(path)
             else path.parent.name): json.loads(path.read_text()) for path in paths}


def load_eval_summaries(root: Path, exclude: Path | None = None) -> dict[str, dict[str, Any]]:
    """Per-level accuracy of every evaluated model under a run folder, by name
    (`eval/<name>.summary.json` as written by `dasd eval` / `dasd run`)."""
    if not root.is_dir():
        return {}
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.summary.json")):
        if exclude and exclude.resolve() in path.resolve().parents:
            continue
        if _seed_of(path):  # one training seed's: the run's pooled summary stands for it
            continue
        if {"retention", "validation"} & set(path.relative_to(root).parts[:-1]):
            continue  # other problems than the test split's (retention tasks, checkpoints)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("per_level"), dict) and \
                "accuracy" in data:
            found[path.name.removesuffix(".summary.json")] = data
    return found


def _seed_of(path: Path) -> str | None:
    """"seed-3" when `path` lies in a training seed's folder of a run with `seeds`."""
    return next((p.name for p in path.parents if SEED_FOLDER.fullmatch(p.name)), None)


def load_eval_rows(root: Path, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The per-problem verdicts of the evaluated models `names`: the rows of every training
    seed together (`eval/seed-<s>/<name>.jsonl`, a run with `seeds`, whose pooled summary
    is `eval/<name>.summary.json`), else `eval/<name>.jsonl`."""
    found = {}
    for name in names:
        paths = sorted((root / "eval").glob(f"seed-*/{name}.jsonl")) or [
            p for p in [root / "eval" / f"{name}.jsonl"] if p.is_file()]
        if paths:
            found[name] = [row for path in paths for row in read_jsonl(path)]
    return found


def load_retention_rows(root: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{task key: {model: eval rows}} of `retention/<task>/[seed-<s>/]<model>.jsonl`
    (`dasd run` with `retention:`), every training seed's rows together."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    paths = sorted([*root.glob("retention/*/*.jsonl"), *root.glob("retention/*/seed-*/*.jsonl")]
                   ) if root.is_dir() else []
    for path in paths:
        task = path.parent.parent.name if _seed_of(path) else path.parent.name
        found.setdefault(task, {}).setdefault(path.stem, []).extend(read_jsonl(path))
    return found


def load_comparison_request(root: Path) -> tuple[CompareSettings, list[list[str]]]:
    """The run's `comparison` settings and `compare` pairs (its config.yaml), else the
    defaults."""
    path = root / "config.yaml"
    config = load_yaml(path) if path.is_file() else {}
    known = {f.name for f in dataclasses.fields(CompareSettings)}
    settings = {k: v for k, v in (config.get("comparison") or {}).items() if k in known}
    return CompareSettings(**settings), list(config.get("compare") or [])


_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer_offline(spec: str | None) -> Any | None:
    """The tokenizer of `spec` from local files only (never the network), or None."""
    if not spec or spec.lower() == "none":
        return None
    if spec not in _TOKENIZERS:
        try:
            from transformers import AutoTokenizer

            from dasd.models import resolve_model

            _TOKENIZERS[spec] = AutoTokenizer.from_pretrained(resolve_model(spec),
                                                              local_files_only=True)
        except Exception as err:  # any failure only means ids are shown instead of text
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log.warning("tokenizer of '%s' not available offline (%s); showing token ids",
                        spec, first)
            _TOKENIZERS[spec] = None
    return _TOKENIZERS[spec]


def token_texts(tokenizer: Any | None, ids: list[int], context: int = 4) -> list[str]:
    """The text each token adds to the response.

    Each token is decoded after up to `context` previous tokens and the previous tokens'
    text is cut off, so SentencePiece leading spaces survive; a token ending inside a
    multi-byte character shows as "" and the token completing it carries the character.
    Without a tokenizer each token shows as its id, e.g. "⟨504⟩".
    """
    if tokenizer is None:
        return [f"⟨{i}⟩" for i in ids]
    texts = []
    for i, token in enumerate(ids):
        before = ids[max(0, i - context):i]
        full = tokenizer.decode(before + [token], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        prefix = tokenizer.decode(before, skip_special_tokens=False,
                                  clean_up_tokenization_spaces=False).rstrip("\ufffd")
        text = full[len(prefix):] if full.startswith(prefix) else tokenizer.decode([token])
        texts.append("" if text and set(text) == {"\ufffd"} else text)
    return texts
