"""What a run records for reproducing it: library versions; the constraints file agrees with
the dependency bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from dasd.config import ProblemConfig, resolved_config


def test_versions_are_recorded(capsys):
    from dasd.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    out = capsys.readouterr().out
    assert out.startswith("dasd ") and "  transformers " in out and "  torch " in out
    versions = resolved_config(ProblemConfig())["versions"]
    assert {"torch", "transformers", "trl", "peft", "datasets"} <= set(versions)


def test_the_constraints_file_matches_the_upper_bounds():
    """Every pinned library is within the bounds pyproject.toml gives it."""
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    pins = dict(line.split("==") for line in (root / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    project = (root / "pyproject.toml").read_text()
    deps = [Requirement(line.strip().strip('",')) for line in project.splitlines()
            if line.strip().startswith('"') and any(op in line for op in (">=", "<"))]
    for dep in deps:
        if dep.name in pins:
            assert dep.specifier.contains(pins[dep.name]), (dep, pins[dep.name])
    assert {"transformers", "trl", "peft", "datasets", "accelerate"} <= set(pins)


# --- math-verify beside dasd's extraction ---------------------------------------------------
