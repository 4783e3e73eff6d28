# The two commands of README.md: `make demo` and `make test`.
# Both create a virtual environment in .venv and install the package into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test gui bench clean

$(BIN)/inspectd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/inspectd
	$(BIN)/inspectd demo --workdir demo-output

gui: $(BIN)/inspectd
	$(BIN)/inspectd gui --config demo-output/config.toml

test: $(BIN)/inspectd
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

bench: $(BIN)/inspectd
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) demo-output
