"""The pipeline's layering: imports run downward, and no module imports itself back.

Order, bottom to top: the shared helpers (`config`, `models`, `records`, `outputs`,
`registry`, ...), answer checking (`scoring`) and the sandbox, then the stages
tasks -> decoding -> training -> evaluation -> analysis, then what composes them
(`methods`, `run_config`, `stages`, `run`, `plan`, `results`, `export`, `cli`).
A module may import its own layer and any layer below it, never one above; lazy imports
inside functions count too.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dasd"
LAYERS = [
    {"errors", "registry", "versions", "progress", "memory", "stats", "distributed",
     "records", "config", "models", "outputs"},
    {"scoring", "sandbox"},
    {"tasks"}, {"decoding"}, {"training"}, {"evaluation"}, {"analysis"},
    {"methods", "run_config", "stages", "run", "plan", "plan_text", "results", "export",
     "cli"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(("dasd", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def import_graph() -> dict[str, set[str]]:
    """{module: the dasd modules it imports}, at module level or inside functions."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against the package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.startswith("dasd"):
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                                for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("dasd")}
        graph[name] = {t for t in map(lambda t: _known(t, modules), targets) if t and t != name}
    return graph


def _known(target: str, modules: dict) -> str | None:
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target if target in modules else None


def layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if m != "dasd" and layer(m) is None] == []


def test_imports_run_downward():
    upward = [f"{module} imports {target}" for module, targets in import_graph().items()
              for target in targets if "dasd" not in (module, target)
              and layer(target) > layer(module)]
    assert upward == []


def test_no_import_cycles():
    """No module reaches itself through the modules it imports."""
    graph = import_graph()
    cycles = []
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module == start:
                cycles.append(start)
                break
            if module not in seen:
                seen.add(module)
                todo += graph[module]
    assert cycles == []
