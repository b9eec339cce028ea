# `make demo` and `make test` set everything up on a fresh machine, then run.
VENV ?= .venv
STAMP := $(VENV)/.dasd-setup
DASD := $(VENV)/bin/dasd

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	./scripts/setup.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded model (SmolLM2-135M-Instruct), CPU, no network.
demo: $(STAMP)
	$(DASD) run configs/demo.yaml

# Fast tests on tiny random models, then the integration tests on the embedded model.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
