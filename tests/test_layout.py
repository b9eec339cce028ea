"""The pipeline's layering: a stage imports only earlier stages and shared helpers.

Order: tasks -> decoding -> training -> evaluation -> analysis; `run`, `export` (it reads
a whole run: rows, adapters, summaries) and `cli` sit on top, the shared helpers
(`config`, `models`, `records`, `stats`, `distributed`, `errors`, `progress`) below every
stage. The one allowed exception: a task owns its answer checker, which lives with the
other checkers in `evaluation` (`answers`, `choice`, `sandbox*`).
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dasd"
STAGES = ["tasks", "decoding", "training", "evaluation", "analysis"]
SHARED = {"config", "models", "records", "stats", "distributed", "errors", "progress",
          "versions", "memory"}
CHECKERS = {"answers", "choice", "sandbox", "sandbox_child", "sandbox_kernel"}


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dasd"):
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("dasd")]
    return names


def layer(module: list[str]) -> int | None:
    """Rank of a module path (['dasd', 'decoding', 'engine']): shared -1, stages 0..4,
    `methods`/`run`/`export`/`cli` above them all."""
    if len(module) < 2:
        return None
    top = module[1]
    if top in SHARED:
        return -1
    if top in STAGES:
        return STAGES.index(top)
    return len(STAGES) if top in {"methods", "run", "export", "cli"} else None


def test_imports_run_downward():
    upward = []
    for path in SRC.rglob("*.py"):
        here = ["dasd", *path.relative_to(SRC).with_suffix("").parts]
        own = layer(here)
        if own is None:
            continue
        for name in imported_modules(path):
            target = name.split(".")
            rank = layer(target)
            if rank is None or rank <= own:
                continue
            if here[1] == "tasks" and target[1:3] and target[1] == "evaluation" and (
                    len(target) < 3 or target[2] in CHECKERS):
                continue  # a task's own checker
            upward.append(f"{'.'.join(here)} imports {name}")
    assert not upward, upward
