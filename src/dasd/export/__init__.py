"""`dasd export`: generated rows as a Hugging Face dataset in the formats TRL trains on,
or a trained adapter as a model folder, each with a card, ready to hand over or push.

Rows come from a generated JSONL or from every `generate/<method>.jsonl` of a run folder,
filtered by correctness, finish reason and method. Three styles, one per export, since
TRL decides what a dataset is by its columns:

- `standard`: `prompt` (the chat-formatted prompt text the model saw) and `completion`
  (the response text). TRL re-tokenises both and appends EOS, so the tokens can differ
  slightly from the generated ones.
- `conversational`: `prompt` as the messages that produced that prompt ([system?, user],
  from the one prompt builder) and `completion` as one assistant message; TRL applies the
  tokenizer's chat template (with the base context's chat-template arguments, kept per row).
- `ids`: `input_ids` (prompt ids + the completion ids generation produced, EOS included)
  and `completion_mask` (0 on the prompt; a row's `loss_mask` where it has one), which
  TRL trains on without tokenising: exactly what `dasd train` trains on.

Every style keeps the rows' `id`, `method`, `task`, `split`, `level`, `correct`,
`finish_reason`, `gold_answer` and `extracted_answer` (TRL drops columns it does not use).
Files: `parquet` (a Hub-shaped folder: `README.md` + `data/train-*.parquet`, read by
`load_dataset(DIR)`), `jsonl` (`data/train.jsonl`, likewise) or `disk` (`save_to_disk`,
read by `load_from_disk(DIR)`). The folder is written beside `out` and renamed into place,
so an interrupted export leaves nothing half-written. `push_to_hub` uploads the folder
afterwards (`dasd.export.hub`); nothing else touches the network.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dasd.errors import DasdError
from dasd.export.card import adapter_card, dataset_card, json_mapping, yaml_mapping
from dasd.records import check_writable, read_jsonl_lines, sidecar
from dasd.tasks import Example, PromptTemplate, get_task
from dasd.tasks.prompts import ChatSettings, fill, load_prompt_template, messages
from dasd.training.data import to_example

log = logging.getLogger(__name__)

STYLES = ("standard", "conversational", "ids")
FINISH_REASONS = ("eos", "length")
METADATA = ("id", "method", "task", "split", "level", "correct", "finish_reason",
            "gold_answer", "extracted_answer")
MARKER = ".dasd-export"  # what `overwrite` may replace
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ExportConfig:
    path: str | None = field(default=None, metadata={
        "help": "a run folder (its generate/*.jsonl), a generated JSONL file, or an adapter "
                "folder of `dasd train` (exported as a model folder with its card)"})
    out: str | None = field(default=None, metadata={"help": "output folder"})
    style: Literal["standard", "conversational", "ids"] = field(default="standard", metadata={
        "help": "standard: prompt/completion text; conversational: prompt/completion as "
                "chat messages; ids: input_ids + completion_mask, the exact generated tokens"})
    format: Literal["parquet", "jsonl", "disk"] = field(default="parquet", metadata={
        "help": "parquet or jsonl (a Hub-shaped folder, `load_dataset(out)`), or disk "
                "(`save_to_disk`, `load_from_disk(out)`)"})
    methods: list[str] | None = field(default=None, metadata={
        "help": "only rows of these methods (in a run folder: the names of its "
                "generate/<name>.jsonl files); default all"})
    only_correct: bool = field(default=True, metadata={
        "help": "only rows whose final answer is correct (what DASD trains on)"})
    finish_reason: list[str] | None = field(default=None, metadata={
        "help": "only rows that ended so: eos (the model stopped) and/or length (capped); "
                "default both"})
    push_to_hub: str | None = field(default=None, metadata={
        "help": "Hub repo id (user/name) to upload the folder to once written (dataset "
                "repo for rows, model repo for an adapter); needs the network and a token"})
    private: bool = field(default=False, metadata={
        "help": "with push_to_hub: create the repo private"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an earlier export in out (never a folder dasd did not write)"})

    def __post_init__(self) -> None:
        if not self.path or not self.out:
            raise DasdError("give what to export and where: `dasd export runs/demo --out "
                            "exports/demo` (a run folder, a generated JSONL or an adapter)")
        for reason in self.finish_reason or []:
            if reason not in FINISH_REASONS:
                raise DasdError(f"finish_reason must be among {', '.join(FINISH_REASONS)}; "
                                f"got {reason!r}")
        if self.methods is not None and not self.methods:
            raise DasdError("methods is empty: name methods or leave it unset (all)")
        if self.push_to_hub is not None and not _REPO_ID.match(self.push_to_hub):
            raise DasdError(f"push_to_hub takes a Hub repo id, user/name; got "
                            f"{self.push_to_hub!r}")


def export(config: ExportConfig) -> dict[str, Any]:
    """Write the export folder (and push it when asked); return what was written."""
    source = Path(config.path).expanduser()
    if source.is_dir() and (source / "adapter_config.json").is_file():
        return export_adapter(config, source)
    files = source_files(source, config.methods)
    settings = {name: yaml_mapping(sidecar(path, "config.yaml")) for name, path in files.items()}
    rows, counts = select_rows(files, config)
    columns = build_columns(rows, config.style, settings)
    summary = {"source": str(source), "out": config.out, "style": config.style,
               "format": config.format, "rows": len(rows), "filters": _filters(config),
               **counts}
    card = dataset_card(config, source, files, settings, summary)
    with _staging(config) as folder:
        _write_dataset(columns, config.format, folder)
        (folder / "README.md").write_text(card, encoding="utf-8")
    log.info("%d rows exported to %s (%s, %s)", len(rows), config.out, config.style,
             config.format)
    return _pushed(config, summary, "dataset")


def source_files(source: Path, methods: list[str] | None) -> dict[str, Path]:
    """{method name: JSONL} of a run folder (one per method), or {"": file} for a file."""
    if source.is_file():
        return {"": source}
    if not source.is_dir():
        raise DasdError(f"{source} not found: give a run folder, a generated JSONL or an "
                        "adapter folder")
    found = {p.stem: p for p in sorted((source / "generate").glob("*.jsonl"))}
    if not found:
        raise DasdError(f"{source} has no generate/*.jsonl: give a run folder of `dasd run`, "
                        "a JSONL of `dasd generate` or an adapter folder of `dasd train`")
    unknown = sorted(set(methods or []) - set(found))
    if unknown:
        raise DasdError(f"{source} has no rows of {', '.join(unknown)}: its methods are "
                        f"{', '.join(found)}")
    return {name: path for name, path in found.items() if methods is None or name in methods}


def select_rows(files: dict[str, Path], config: ExportConfig
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows that pass the filters (a run's method name as `method`), and counts of
    what was read, dropped and kept per method."""
    kept, read, dropped, per_method = [], 0, Counter(), Counter()
    for name, path in files.items():
        for number, row in read_jsonl_lines(path):
            read += 1
            row = {**row, "method": name or row.get("method"), "_file": name,
                   "_source": f"{path}:{number}"}
            reason = _rejected(row, config)
            if reason:
                dropped[reason] += 1
                continue
            kept.append(row)
            per_method[row["method"]] += 1
    counts = {"read": read, "dropped": dict(dropped), "per_method": dict(per_method)}
    if not kept:
        why = ", ".join(f"{n} {reason}" for reason, n in dropped.items()) or "no rows"
        raise DasdError(f"no rows left to export from {read} read ({why}): loosen "
                        "--only-correct / --finish-reason / --methods")
    return kept, counts


def _rejected(row: dict[str, Any], config: ExportConfig) -> str | None:
    missing = [key for key in ("prompt", "completion", "prompt_ids", "completion_ids")
               if key not in row]
    if missing:
        raise DasdError(f"{row['_source']} lacks {', '.join(missing)}: export rows written "
                        "by `dasd generate` or `dasd run`")
    if config.methods is not None and row["method"] not in config.methods:
        return "of other methods"
    if config.only_correct and not row.get("correct"):
        return "not correct"
    if config.finish_reason and row.get("finish_reason") not in config.finish_reason:
        return f"not ending by {'/'.join(config.finish_reason)}"
    return None


def build_columns(rows: list[dict[str, Any]], style: str,
                  settings: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """The dataset's columns in `style`, metadata columns first."""
    columns: dict[str, list[Any]] = {key: [row.get(key) for row in rows] for key in METADATA}
    if style == "standard":
        columns["prompt"] = [row["prompt"] for row in rows]
        columns["completion"] = [row["completion"] for row in rows]
    elif style == "conversational":
        chats = [conversation(row, settings.get(row["_file"], {})) for row in rows]
        columns["prompt"] = [chat["prompt"] for chat in chats]
        columns["completion"] = [chat["completion"] for chat in chats]
        if any(chat["chat_template_kwargs"] for chat in chats):
            columns["chat_template_kwargs"] = [chat["chat_template_kwargs"] for chat in chats]
    else:
        examples = [to_example(row, row["_source"], len(row["prompt_ids"])
                               + len(row["completion_ids"])) for row in rows]
        columns["input_ids"] = [e["input_ids"] for e in examples]
        columns["completion_mask"] = [e["completion_mask"] for e in examples]
    return columns


def conversation(row: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The row's prompt as the messages that rendered it, its completion as one assistant
    message, and the chat-template arguments it was rendered with."""
    for key in ("task", "question", "reference", "gold_answer"):
        if key not in row:
            raise DasdError(f"{row['_source']} lacks {key}, which the conversational style "
                            "needs to rebuild the messages: use --style standard or ids")
    prompts = settings.get("prompts")
    if prompts and not Path(prompts).is_file():
        raise DasdError(f"{row['_source']} was prompted with {prompts}, which is gone: "
                        "restore it, or use --style standard or ids")
    template = load_prompt_template(prompts) if prompts else _task_prompts(row, settings)
    example = Example(id=row["id"], question=row["question"], reference=row["reference"],
                      answer=row["gold_answer"], level=row.get("level"))
    return {"prompt": messages(template.system, fill(template.base, example)),
            "completion": [{"role": "assistant", "content": row["completion"]}],
            "chat_template_kwargs": ChatSettings.of(settings).base}  # the base context's


def _task_prompts(row: dict[str, Any], settings: dict[str, Any]) -> PromptTemplate:
    """The default prompts of the row's task (task custom's follow the checker that its
    config.yaml records)."""
    try:
        return get_task(row["task"], settings.get("checker")).prompts
    except DasdError as err:
        raise DasdError(f"{row['_source']}: {err} (the rows' config.yaml records it: restore "
                        "it, or use --style standard or ids)") from None


def _write_dataset(columns: dict[str, list[Any]], file_format: str, folder: Path) -> None:
    from datasets import Dataset
    from datasets.utils import logging as datasets_logging

    shown = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()  # one small write: no bars on the terminal
    try:
        dataset = Dataset.from_dict(columns)
        if file_format == "disk":
            dataset.save_to_disk(str(folder))
            return
        (folder / "data").mkdir()
        if file_format == "parquet":
            dataset.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
        else:
            dataset.to_json(str(folder / "data" / "train.jsonl"), lines=True,
                            force_ascii=False)
    finally:
        if shown:
            datasets_logging.enable_progress_bar()


@contextmanager
def _staging(config: ExportConfig) -> Iterator[Path]:
    """A fresh folder beside `config.out`, renamed into place when the block ends well (an
    earlier export there is replaced only with `overwrite`, and never a folder of others)."""
    out = Path(config.out)
    check_writable(out, is_dir=True)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DasdError(f"--out {out} holds files dasd did not export: choose an empty or "
                            "new folder")
        if not config.overwrite:
            raise DasdError(f"--out {out} holds an earlier export: pass --overwrite to replace "
                            "it or choose another --out")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / MARKER).write_text("written by dasd export\n")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def export_adapter(config: ExportConfig, adapter: Path) -> dict[str, Any]:
    """An adapter folder of `dasd train` as a model folder: its files (no checkpoints) and
    a model card naming the base model's hub id."""
    settings = yaml_mapping(adapter / "config.yaml")
    train = json_mapping(adapter / "train_summary.json")
    evaluation = json_mapping(adapter.parent.parent / "eval" / f"{adapter.name}.summary.json")
    card = adapter_card(adapter, settings, train, evaluation)
    with _staging(config) as folder:
        for item in sorted(adapter.iterdir()):
            if item.is_file() and item.name != "README.md":
                shutil.copy2(item, folder / item.name)
        (folder / "README.md").write_text(card, encoding="utf-8")
    log.info("adapter %s exported to %s", adapter, config.out)
    return _pushed(config, {"source": str(adapter), "out": config.out, "adapter": True},
                   "model")


def _pushed(config: ExportConfig, summary: dict[str, Any], repo_type: str) -> dict[str, Any]:
    if config.push_to_hub:
        from dasd.export.hub import push_folder

        summary["hub_url"] = push_folder(config.out, config.push_to_hub, repo_type,
                                         private=config.private)
    return summary


def _filters(config: ExportConfig) -> dict[str, Any]:
    return {"only_correct": config.only_correct, "finish_reason": config.finish_reason,
            "methods": config.methods}


__all__ = ["ExportConfig", "STYLES", "build_columns", "conversation", "export",
           "select_rows", "source_files"]
